"""Where edgetune keeps its caches (tools, wheels). Resolved once, by the CLI, and passed down."""

from __future__ import annotations

import os
from pathlib import Path


def edgetune_home() -> Path:
    return Path(os.environ.get("EDGETUNE_HOME") or Path.home() / ".cache" / "edgetune")
