"""The profiles edgetune ships as package data, and the user's folder that adds to or overrides them.

`targets/` (board profiles), `suites/` (eval suites) and `judge/` (judge rubrics) live inside the package, so a
wheel, an editable install and a checkout on PYTHONPATH all find them the same way, through
`importlib.resources`. The user's own profiles live in `user_config_dir()/<kind>/` (`~/.config/edgetune/targets/`,
honouring XDG_CONFIG_HOME); a user file overrides the packaged one of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from edgetune.home import user_config_dir

Kind = Literal["targets", "suites", "judge"]
PACKAGE = "package"
# the package's own folder of profiles, one subfolder per kind
ROOT = files(__name__)


@dataclass(frozen=True)
class Folder:
    """One place profiles of a kind come from: `origin` is "package" or the user folder's path."""

    origin: str
    path: Traversable

    def yaml_files(self) -> list[Traversable]:
        """The folder's *.yaml files by name; none when the folder does not exist."""
        if not self.path.is_dir():
            return []
        return sorted((p for p in self.path.iterdir() if p.name.endswith(".yaml") and p.is_file()),
                      key=lambda p: p.name)


def packaged(kind: Kind) -> Traversable:
    """The package's own folder of `kind`."""
    return ROOT / kind


def user(kind: Kind) -> Path:
    return user_config_dir() / kind


def folders(kind: Kind) -> list[Folder]:
    """Where profiles of `kind` come from, lowest precedence first: the package, then the user's folder."""
    found = [Folder(PACKAGE, packaged(kind))]
    if (mine := user(kind)).is_dir():
        found.append(Folder(str(mine), mine))
    return found
