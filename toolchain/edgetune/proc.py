"""The one door for external tools: argument lists only, output captured, failures raise with the tail."""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgetune.errors import NativeCrash, ToolError

log = logging.getLogger(__name__)


def run_tool(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float | None = None,
    error: type[ToolError] | type = ToolError,
    hint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on a non-zero exit raise `error` naming the command and the end of its stderr."""
    args = [str(a) for a in argv]
    log.debug("running %s", " ".join(args))
    try:
        done = subprocess.run(
            args, env=dict(env) if env else None, cwd=cwd, capture_output=True, text=True, timeout=timeout_s
        )
    except FileNotFoundError as exc:
        raise error(f"tool not found: {args[0]}", hint or "run scripts/setup.sh") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{Path(args[0]).name} timed out after {timeout_s}s", hint) from exc
    if done.returncode < 0:  # killed by a signal: a crash in native code, not a refusal
        raise NativeCrash(f"running {Path(args[0]).name} on", signal_name(done.returncode),
                          " ".join(str(a) for a in args[1:4]))
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        label = " ".join(Path(a).name for a in args[:2])
        raise error(f"`{label}` failed (exit {done.returncode}): {tail}", hint)
    return done


def signal_name(exitcode: int | None) -> str:
    """How a process ended, in words: 'SIGSEGV' for -11 (killed by a signal), 'exit 3' for 3."""
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit {exitcode}"
