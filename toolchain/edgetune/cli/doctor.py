"""`edgetune doctor`: check this machine and the llama.cpp build edgetune made for it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from edgetune.cli.group import State, cli, pass_state
from edgetune.constants import Quant
from edgetune.errors import EdgetuneError, ToolError


@cli.command()
@click.option("--probe", is_flag=True,
              help="Run every quant type through llama-cpp-python and llama-bench here (about a minute) and record "
                   "the result; exit 9 if llama.cpp crashes.")
@click.option("--quant", "quants", multiple=True, type=click.Choice([q.value for q in Quant]),
              help="With --probe: only these quant types (repeatable; default: every type edgetune writes).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("edgetune-out"),
              show_default=True, help="Output folder whose free space to check.")
@click.option("--judge-url", help="OpenAI-compatible judge endpoint to try (up to /v1).")
@pass_state
def doctor(state: State, probe: bool, quants: tuple[str, ...], out_dir: Path, judge_url: str | None) -> None:
    """Check the CPU, how llama.cpp was built for it, GPU, training's fast paths, disk and judge: one
    OK / WARN / FAIL line each (OFF: a fast path this machine cannot take, with the reason).

    Exit codes: 0 nothing failed; 1 a check failed; 9 the probe saw llama.cpp crash.

    \b
    Examples:
      edgetune doctor
      edgetune doctor --probe          # what scripts/setup.sh runs after building llama.cpp
      edgetune --json doctor --judge-url http://127.0.0.1:8080/v1
    """
    from edgetune import doctor as checks

    if probe:
        record = _probe(state, [Quant(q) for q in quants] or list(Quant))
        found = [checks.probe_check(record)]
    else:
        found = checks.run_checks(state.home, out_dir, judge_url)
    payload: dict = {"checks": [c.to_dict() for c in found]}
    if not probe:
        from edgetune.fastpaths import fast_paths

        payload["fast_paths"] = [p.to_dict() for p in fast_paths()]
    state.emit(payload,
               "\n".join(f"{c.status:<4} {c.name}: {c.detail}" + (f" -> {c.fix}" if c.fix else "") for c in found))
    if probe and record["crashed"]:
        crashed = [f"{r['quant']} via {r['path']}" for r in record["rows"] if r["status"] == "crash"]
        raise ToolError(f"llama.cpp crashed on this machine computing with {', '.join(crashed)}",
                        "scripts/setup.sh rebuilds it for the portable baseline; `edgetune doctor` shows the build")
    failed = [c.name for c in found if c.status == checks.FAIL]
    if failed:
        raise EdgetuneError(f"{len(failed)} check(s) failed: {', '.join(failed)}", "see the fixes above")


def _probe(state: State, quants: list[Quant]) -> dict:
    from edgetune.assets import smollm2_gguf
    from edgetune.llama_probe import run_probe
    from edgetune.llamacpp import load_tools

    tools = load_tools(state.home)
    with tempfile.TemporaryDirectory(prefix="edgetune-probe-") as work:
        def show(row) -> None:
            if not state.as_json:
                click.echo(f"  {row.quant:<7} {row.path:<17} {row.status} ({row.detail})", err=True)

        return run_probe(tools, smollm2_gguf(), Path(work), quants=quants, on_row=show)
