"""A bundle's manifest.json, read and checked for content before anything trusts it.

Every reader (bundle verify and extract, deploy, device eval, the device runtime) goes through `read_manifest`, so
a manifest with a field missing, of the wrong type, or pointing outside the bundle fails in one line (BundleError,
exit 7) before a file is hashed or a device contacted. The name and the file paths become paths on the device,
so they must stay inside the bundle. Extra keys pass (newer bundles add sections).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgetune.constants import MANIFEST_FILE, MANIFEST_SCHEMA
from edgetune.errors import BundleError

_REBUILD = "re-copy or rebuild the bundle"


def _inside(rel: str) -> str:
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or "\\" in rel or ".." in parts or "." in parts:
        raise ValueError(f"{rel!r} is not a path inside the bundle")
    return rel


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class FileEntry(_Open):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class ModelEntry(_Open):
    quant: str
    file: str
    size_bytes: int = Field(ge=0)


class TargetEntry(_Open):
    name: str
    arch: str


class FileRef(_Open):
    file: str


class Manifest(_Open):
    schema_: int = Field(alias="schema")
    name: str = Field(min_length=1)
    target: TargetEntry
    models: list[ModelEntry] = Field(min_length=1)
    default_model: str
    files: dict[str, FileEntry] = Field(min_length=1)
    runner: FileRef | None = None
    suite: FileRef | None = None

    @field_validator("schema_")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != MANIFEST_SCHEMA:
            raise ValueError(f"unsupported schema {value} (this edgetune reads {MANIFEST_SCHEMA})")
        return value

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:  # the bundle's folder name on every device
        if "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"{value!r} is not a folder name")
        return value

    @field_validator("files")
    @classmethod
    def _paths_inside(cls, value: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for rel in value:
            _inside(rel)
        return value

    @model_validator(mode="after")
    def _listed(self) -> Manifest:
        named = [("default_model", self.default_model)] + [(f"models.{i}.file", m.file) for i, m in
                                                           enumerate(self.models)]
        named += [(k, ref.file) for k, ref in (("runner.file", self.runner), ("suite.file", self.suite)) if ref]
        for where, rel in named:
            if rel not in self.files:
                raise ValueError(f"{where}: {rel!r} is not in the file list")
        return self


def check_manifest(data: Any, where: str) -> dict[str, Any]:
    """`data` (parsed JSON) when it is a valid manifest; BundleError naming the first bad field otherwise."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: not a JSON object", _REBUILD)
    try:
        Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise BundleError(f"{where}: {field}: {err['msg'].removeprefix('Value error, ')}", _REBUILD) from None
    return data


def read_manifest(root: Path) -> dict[str, Any]:
    """The checked manifest.json of bundle folder `root`. Raises BundleError."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{root} has no {MANIFEST_FILE}", "point at a bundle folder made by `edgetune build`")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BundleError(f"{path} is not readable JSON: {exc}", _REBUILD) from exc
    return check_manifest(data, str(path))
