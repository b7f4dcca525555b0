"""Run `edgetune ARGV...` in-process through `main()`, as the console script does (main alone maps errors to
exit codes), under CliRunner's stream isolation; shared by the CLI tests of every package."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

from click.testing import CliRunner

import edgetune.cli.commands  # noqa: F401  (attaches the commands to `cli`)
from edgetune.cli.main import main


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run_edgetune(monkeypatch, *argv) -> Result:
    monkeypatch.setattr(sys, "argv", ["edgetune", *map(str, argv)])
    # as under the console script, whose __main__ has no spec: click then names the program after argv[0]
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    with CliRunner().isolation() as (out, err, _):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    return Result(code, out.getvalue().decode(), err.getvalue().decode())
