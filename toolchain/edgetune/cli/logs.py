"""Logging to stderr: quiet by default (warnings), -v info, -vv debug. Rich formatting on a terminal; one
plain line per record otherwise, so scripts and CI logs can grep them."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

stderr = Console(stderr=True)


def configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if stderr.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr, show_path=False, show_time=False, markup=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("edgetune")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
