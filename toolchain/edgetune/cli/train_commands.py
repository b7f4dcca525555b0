"""`edgetune train` and `edgetune sweep`: the adapter alone (registered), and the tutorial's rank sweep."""

from __future__ import annotations

from pathlib import Path

import click

from edgetune.cli.commands import _quiet_hf_libraries, build_config
from edgetune.cli.group import State, cli, pass_state
from edgetune.constants import CONFIG_FILE

_config_opts = [
    click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                 help=f"Config file (default: ./{CONFIG_FILE} if present, else the embedded default)."),
    click.option("--model", help="Base model: HF folder, .gguf file or hub id."),
    click.option("--data", help="Dataset: .jsonl/.csv file, HF dataset folder or hub id."),
    click.option("--lr", type=float, help="Learning rate."),
    click.option("--epochs", type=float, help="Training epochs."),
    click.option("--max-steps", type=int, help="Stop training after this many steps."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder."),
    click.option("--threads", type=int, help="CPU threads (default: all cores)."),
]


def _with_config_opts(fn):
    for opt in reversed(_config_opts):
        fn = opt(fn)
    return fn


@cli.command("train")
@_with_config_opts
@click.option("--rank", type=int, help="LoRA rank.")
@click.option("--adapter", type=click.Choice(["lora", "dora", "rslora", "ia3"]), help="Adapter kind.")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="GPUs to train on (over 1: DDP through accelerate; FSDP for bases over 13B parameters).")
@click.option("--fsdp/--no-fsdp", default=None, help="Force FSDP on or off when --gpus is over 1.")
@click.option("--packing/--no-packing", default=None,
              help="Pack several examples into each max_length row (padding-free; examples never see each other).")
@click.option("--chat-template-fallback", metavar="chatml|FILE.jinja",
              help="Chat template for a base model that has none (ignored when it has its own).")
@click.option("--micro-batch-tokens", type=click.IntRange(min=1),
              help="Run each batch in micro-batches of at most N tokens (less memory, slower; same gradients).")
@pass_state
def train_cmd(state: State, config_path: Path | None, adapter: str | None, gpus: int, fsdp: bool | None,
              packing: bool | None, chat_template_fallback: str | None, micro_batch_tokens: int | None,
              **flags) -> None:
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

    cfg = build_config(config_path, **flags).with_overrides({
        "train.adapter": adapter, "train.packing": packing, "train.chat_template_fallback": chat_template_fallback,
        "train.micro_batch_tokens": micro_batch_tokens})
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
@_with_config_opts
@click.option("--ranks", default="4,8,16,32", show_default=True, callback=_ranks, help="LoRA ranks to try.")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
              help="Share of the training split each rank trains on.")
@click.option("--metric", type=click.Choice(["accuracy", "heldout_nll"]), default="accuracy", show_default=True,
              help="What picks the rank (ties: the smaller rank).")
@pass_state
def sweep_cmd(state: State, config_path: Path | None, ranks: tuple[int, ...], fraction: float, metric: str,
              **flags) -> None:
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
