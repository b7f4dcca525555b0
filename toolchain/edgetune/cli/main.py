"""The `edgetune` command line: a thin layer over the library. Only this module turns errors into exit codes.

Exit codes: 0 success; 1 unexpected error; 2 bad config or usage; 3 data; 4 model; 5 training; 6 export;
7 bundle; 8 evaluation; 9 external tool missing, failed or crashed (llama.cpp died on a signal: the message
names the file, its type and the stage; `edgetune doctor` explains the build); 10 a quality gate failed; 11 a device needs a fix
(auth, host key, no space, no python3, remote failure); 12 device unreachable; 13 connection to a device lost or
its job timed out (re-run to resume or collect); 14 `build --strict` found nothing to ship (the fine-tune did not
beat the base, or no GGUF is shown "not worse" than the GPU build).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from edgetune.errors import EdgetuneError
from edgetune.home import edgetune_home


class State:
    def __init__(self, as_json: bool, verbose: int):
        self.as_json = as_json
        self.verbose = verbose
        self.home = edgetune_home()

    def emit(self, payload: dict, human: str) -> None:
        """Results go to stdout: JSON for scripts, or one human line."""
        click.echo(json.dumps(payload, indent=2, default=str) if self.as_json else human)


pass_state = click.make_pass_decorator(State)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(package_name="edgetune")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, verbose: int) -> None:
    """Fine-tune, ship to an edge device, and prove what survived.

    \b
    Examples:
      edgetune build --target rpi5          # the embedded default, end to end
      edgetune init                         # write a commented edgetune.yaml
      edgetune build -c edgetune.yaml --quant Q4_0
    """
    from edgetune.cli.logs import configure_logging

    configure_logging(verbose)
    ctx.obj = State(as_json, verbose)


@cli.command()
@click.option("--sdist", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this llama-cpp-python sdist instead of downloading it.")
@pass_state
def setup(state: State, sdist: Path | None) -> None:
    """Unpack llama.cpp's converter for the installed llama-cpp-python into the cache."""
    from edgetune.llamacpp import setup_tools

    tools = setup_tools(state.home, sdist)
    state.emit({"root": tools.root, "version": tools.version, "revision": tools.revision},
               f"llama.cpp {tools.revision[:7]} tools ready in {tools.root}")


def _register() -> None:
    from edgetune.cli import commands, doctor, train_commands  # noqa: F401  (commands attach themselves to `cli`)


def main() -> None:
    _register()
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
