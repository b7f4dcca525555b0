"""The `edgetune` command line: a thin layer over the library. Only this module turns errors into exit codes.

Exit codes: 0 success; 1 unexpected error; 2 bad config or usage; 3 data; 4 model; 5 training; 6 export;
7 bundle; 8 evaluation; 9 external tool missing, failed or crashed (llama.cpp died on a signal: the message
names the file, its type and the stage; `edgetune doctor` explains the build); 10 a quality gate failed; 11 a device needs a fix
(auth, host key, no space, no python3, remote failure); 12 device unreachable; 13 connection to a device lost or
its job timed out (re-run to resume or collect); 14 `build --strict` found nothing to ship (the fine-tune did not
beat the base, or no GGUF is shown "not worse" than the GPU build).
"""

from __future__ import annotations

import logging
import sys

import click

from edgetune.cli import bench_command, commands, doctor, train_commands  # noqa: F401  (they register commands on `cli`)
from edgetune.cli.group import cli
from edgetune.errors import EdgetuneError


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgetuneError as exc:
        click.echo(f"error: {exc}", err=True)
        logging.getLogger("edgetune").debug("traceback", exc_info=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
