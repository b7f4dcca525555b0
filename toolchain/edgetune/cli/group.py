"""The `edgetune` click group and the state its commands share. A leaf of the CLI: command modules import it
and register their commands onto `cli`; `edgetune.cli.main` imports them all and runs the group.
"""

from __future__ import annotations

import json
from typing import Any

import click

from edgetune.home import edgetune_home


class State:
    def __init__(self, as_json: bool, verbose: int):
        self.as_json = as_json
        self.verbose = verbose
        self.home = edgetune_home()

    def emit(self, payload: dict[str, Any], human: str) -> None:
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
