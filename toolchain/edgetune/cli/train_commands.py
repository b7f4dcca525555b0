"""`edgetune train` and `edgetune sweep`: the adapter alone (registered), and the tutorial's rank sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import click

from edgetune.cli.commands import _quiet_hf_libraries, build_config
from edgetune.cli.group import State, cli, pass_state
from edgetune.cli.options import config_file_option, config_options, gpu_options

# The settings both commands take as flags (cli/options.py names and types them from the config models)
SHARED_FLAGS = ("model.source", "data.source", "train.learning_rate", "train.epochs", "train.max_steps",
                "train.max_length", "out_dir", "threads")
TRAIN_FLAGS = (*SHARED_FLAGS, "train.r", "train.adapter", "train.packing", "train.chat_template_fallback",
               "train.micro_batch_tokens")


@cli.command("train")
@config_file_option
@config_options(*TRAIN_FLAGS)
@gpu_options
@pass_state
def train_cmd(state: State, config_path: Path | None, gpus: int, fsdp: bool | None, **flags: Any) -> None:
    """Train an adapter only (data, base, train: no merge or export) and register it by content hash.

    \b
    Examples:
      edgetune train --data qa.jsonl --rank 8 --max-steps 200
      edgetune train -c edgetune.yaml --gpus 2
      edgetune --json train --adapter dora
      edgetune train --model ./base-without-template --chat-template-fallback chatml --packing
    """
    from edgetune.cli.progress import RichProgress
    from edgetune.train.workflow import train_only

    cfg = build_config(config_path, **flags)
    _quiet_hf_libraries()
    run = train_only(cfg, gpus=gpus, fsdp=fsdp, progress=RichProgress(enabled=not state.as_json))
    m = run.trained.artifact.training
    state.emit(run.to_dict(), f"adapter: {run.adapter_dir}\nregistry id: {run.entry.id} ({run.entry.path})\n"
                              f"loss {m.loss_first:.3f} → {m.loss_last:.3f} in {m.steps} steps")


def _ranks(ctx, param, value: str) -> tuple[int, ...]:
    try:
        ranks = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 4,8,16,32") from None
    if any(r < 1 for r in ranks) or len(set(ranks)) != len(ranks):
        raise click.BadParameter(f"{value!r}: ranks must be distinct and at least 1")
    return ranks


@cli.command("sweep")
@config_file_option
@config_options(*SHARED_FLAGS)
@click.option("--ranks", default="4,8,16,32", show_default=True, callback=_ranks, help="LoRA ranks to try.")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
              help="Share of the training split each rank trains on.")
@click.option("--metric", type=click.Choice(["accuracy", "heldout_nll"]), default="accuracy", show_default=True,
              help="What picks the rank (ties: the smaller rank).")
@pass_state
def sweep_cmd(state: State, config_path: Path | None, ranks: tuple[int, ...], fraction: float,
              metric: Literal["accuracy", "heldout_nll"], **flags: Any) -> None:
    """Train each rank on a slice of the data, score it on the held-out split, and pick one.

    \b
    Examples:
      edgetune sweep --data qa.jsonl
      edgetune sweep --ranks 4,16 --fraction 0.25 --max-steps 50
      edgetune --json sweep --metric heldout_nll
    """
    from edgetune.cli.progress import RichProgress
    from edgetune.pipeline import model_name
    from edgetune.train.workflow import sweep_only

    cfg = build_config(config_path, **flags)
    _quiet_hf_libraries()
    result = sweep_only(cfg, cfg.out_dir / "runs" / f"sweep-{model_name(cfg)}", ranks=ranks, fraction=fraction,
                        metric=metric, progress=RichProgress(enabled=not state.as_json))
    state.emit(result.to_dict(), f"{result.table()}\nchosen rank: {result.chosen_rank} (by {metric})\n"
                                 f"sweep: {result.md_path}")
