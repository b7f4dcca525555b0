"""Where edgetune keeps its caches (tools, wheels) and where a user keeps their own profiles. Resolved from the
environment here, and only here."""

from __future__ import annotations

import os
from pathlib import Path


def edgetune_home() -> Path:
    return Path(os.environ.get("EDGETUNE_HOME") or Path.home() / ".cache" / "edgetune")


def user_config_dir() -> Path:
    """The user's own target profiles (`targets/`), suites (`suites/`) and judge rubrics (`judge/`), which add to
    or override the ones shipped in the package: $XDG_CONFIG_HOME/edgetune, else ~/.config/edgetune."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "edgetune"
