"""Artifact folders and the stage cache.

Every stage writes one folder holding its outputs and an `artifact.json` record (kind, key, parameters,
inputs' keys, tool versions, created-at). The key is a hash of the stage kind, its parameters and its inputs'
keys, so a stage whose inputs and parameters are unchanged finds its artifact and is skipped, and a changed
parameter changes the key of that stage and of everything downstream of it. Folders are built under a temp
name and renamed into place only when complete, so a crash never leaves an artifact that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune import __version__
from edgetune.constants import ARTIFACT_FILE
from edgetune.errors import NativeCrash

log = logging.getLogger(__name__)

# Bump when a stage's output format changes so old cache entries stop matching.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Artifact:
    """A finished stage output: a folder and its record."""

    kind: str
    key: str
    path: Path
    record: dict[str, Any] = field(default_factory=dict, compare=False)
    cached: bool = field(default=False, compare=False)

    @property
    def outputs(self) -> dict[str, Any]:
        outputs: dict[str, Any] = self.record.get("outputs", {})
        return outputs

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.record.get("metrics", {})
        return metrics

    def file(self, name: str) -> Path:
        """Path of an output file named in the record (never guessed); an absolute one stays itself."""
        return self.path.joinpath(self.outputs[name])


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(kind: str, params: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """Cache key of a stage run: kind + parameters + the keys (or content hashes) of its inputs."""
    blob = canonical_json({"kind": kind, "params": params, "inputs": inputs, "format": CACHE_FORMAT})
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(root: Path, file_hash: Callable[[Path], str] = sha256_file) -> str:
    """Content hash of a folder: relative paths and file hashes, order-independent. `file_hash` hashes one
    file (hash_memo passes its memoised one)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(file_hash(path).encode())
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temp name in the same folder, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class Store:
    """Content-addressed folders of stage artifacts under `root/<kind>/<key[:16]>/`."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _final(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:16]

    def lookup(self, kind: str, key: str) -> Artifact | None:
        """The finished artifact for this key, or None. A folder whose record does not match is ignored."""
        path = self._final(kind, key)
        record_path = path / ARTIFACT_FILE
        if not record_path.is_file():
            return None
        try:
            record = json.loads(record_path.read_text())
        except ValueError:  # JSONDecodeError, or UnicodeDecodeError for a record of garbage bytes
            log.warning("ignoring unreadable artifact record %s", record_path)
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        return Artifact(kind, key, path, record, cached=True)

    def stage(
        self,
        kind: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
        build: Callable[[Builder], None],
        *,
        tools: Mapping[str, str] | None = None,
        key: str | None = None,
        record_params: Mapping[str, Any] | None = None,
        record_inputs: Mapping[str, str] | None = None,
    ) -> Artifact:
        """The cached artifact of this stage run, or a new one made by `build(builder)`.

        The key is `stage_key(kind, params, inputs)` unless `key` is given (a stage whose key leaves out
        settings that do not change its output). The record holds `params` and `inputs` unless
        `record_params` / `record_inputs` say otherwise (a label such as the build name that must not enter
        the key, or a readable source name where the key holds its content hash). `build` runs only on a
        miss, inside `build()`'s temp folder, so nothing it raises publishes anything."""
        key = key if key is not None else stage_key(kind, params, inputs)
        if hit := self.lookup(kind, key):
            return hit
        with self.build(kind, key, params if record_params is None else record_params,
                        inputs if record_inputs is None else record_inputs, tools) as b:
            build(b)
        assert b.artifact is not None  # set by build() on a clean exit
        return b.artifact

    @contextlib.contextmanager
    def build(
        self,
        kind: str,
        key: str,
        params: Mapping[str, Any],
        inputs: Mapping[str, str],
        tools: Mapping[str, str] | None = None,
    ) -> Iterator[Builder]:
        """Yield a builder whose `path` is a temp folder; on success the record is written and the folder
        renamed into place. On any exception the temp folder is removed and nothing is published. The folder
        is made when `path` is first used, so a stage that fails its input checks first leaves no trace."""
        final = self._final(kind, key)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")

        def make_tmp() -> None:
            final.parent.mkdir(parents=True, exist_ok=True)
            _remove_orphans(final)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()

        builder = Builder(tmp, make_tmp)
        started = time.time()
        try:
            yield builder
            record = {
                "kind": kind,
                "key": key,
                "params": dict(params),
                "inputs": dict(inputs),
                "outputs": builder.outputs,
                "metrics": builder.metrics,
                "tools": {"edgetune": __version__, **(tools or {}), **builder.tools},
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "duration_s": round(time.time() - started, 3),
            }
            write_json(builder.path / ARTIFACT_FILE, record)
            if final.exists():  # a stale, unmatched folder (checked by lookup) is replaced
                shutil.rmtree(final)
            os.replace(tmp, final)
        except NativeCrash as exc:
            if exc.stage is not None:
                raise
            raise exc.in_stage(kind) from exc  # name the stage: the crash itself knows only the file
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        builder.artifact = Artifact(kind, key, final, record)


def _remove_orphans(final: Path) -> None:
    """Temp folders of this key left by a killed run (SIGKILL skips cleanup) whose process is gone."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(tmp, ignore_errors=True)


class Builder:
    """The folder a stage writes into (`path`, a temp folder until published) and what its record will say:
    `outputs` (file names relative to the artifact folder), `metrics`, and `tools`: versions of libraries the
    build imported (known only once it runs: a cache hit never imports them)."""

    def __init__(self, path: Path, make: Callable[[], None]):
        self._path = path
        self._make: Callable[[], None] | None = make
        self.outputs: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.tools: dict[str, str] = {}
        self.artifact: Artifact | None = None

    @property
    def path(self) -> Path:
        if self._make is not None:
            self._make()
            self._make = None
        return self._path
