"""Logging to stderr through rich: quiet by default (warnings), -v info, -vv debug."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

stderr = Console(stderr=True)


def configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=stderr, show_path=False, show_time=False, markup=False)
    root = logging.getLogger("edgetune")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
