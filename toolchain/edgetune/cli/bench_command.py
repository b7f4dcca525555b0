"""`edgetune bench`: lm-evaluation-harness tasks on every build of a run (harness/bench.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from edgetune.cli.commands import _quiet_hf_libraries
from edgetune.cli.group import State, cli, pass_state


@cli.command("bench")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tasks", required=True, help="Comma-separated harness tasks: mmlu, arc_challenge, arc_easy, "
              "hellaswag, piqa, winogrande (all offline); TASK:N gives one its own few-shot "
              "count, e.g. mmlu,mmlu:5.")
@click.option("--num-fewshot", type=click.IntRange(min=0), help="Few-shot examples (default: each task's own).")
@click.option("--limit", type=click.IntRange(min=1), help="Items per task (per MMLU subject); default all.")
@click.option("--device", metavar="USER@HOST[:PORT]", help="Run the GGUFs on this device over SSH (the run's "
              "bundle); base and GPU build stay on this host.")
@click.option("--accept-new-host-key", is_flag=True, help="Record an unknown host key (a changed one is refused).")
@click.option("--threads", type=click.IntRange(min=1), help="llama.cpp threads (default: llama.cpp's choice).")
@pass_state
def bench_cmd(state: State, run: Path, tasks: str, num_fewshot: int | None, limit: int | None,
              device: str | None, accept_new_host_key: bool, threads: int | None) -> None:
    """Score every build of RUN (base, GPU build, each GGUF) on standard benchmarks, the same requests each.

    \b
    Examples:
      edgetune bench edgetune-out/runs/rpi5 --tasks mmlu,mmlu:5,arc_challenge,hellaswag,piqa,winogrande \
          --limit 50
      edgetune bench edgetune-out/runs/rpi5 --tasks mmlu --num-fewshot 5 --device pi@raspberrypi.local
      edgetune --json bench edgetune-out/runs/rpi5 --tasks piqa --limit 20
    """
    from edgetune.cli.progress import RichProgress
    from edgetune.harness import require_lm_eval

    require_lm_eval()
    _quiet_hf_libraries()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-task notices; our bar shows progress
    os.environ.setdefault("TQDM_DISABLE", "1")  # the harness's own tqdm bars on stderr
    from edgetune.harness.bench import bench

    from edgetune.device import parse_device

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    done = bench(run, names, num_fewshot=num_fewshot, limit=limit, device=parse_device(device) if device else None,
                 n_threads=threads,
                 accept_new_host_key=accept_new_host_key, progress=RichProgress(enabled=not state.as_json))
    lines = [f"{t} {b}: {s.metric} {s.score:.3f} (n={s.n})" + (f" {s.verdict.verdict} vs {s.reference}"
                                                                  if s.verdict else "")
             for t, per in done.scores.items() for b, s in per.items()]
    # per-item correctness stays in RUN/bench.json; stdout gets the scores and verdicts
    payload = done.model_dump(mode="json", exclude_none=True, exclude={"scores": {"__all__": {"__all__": {"items"}}}})
    state.emit(payload, "\n".join(lines))
