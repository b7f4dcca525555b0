"""The bundle stage: what goes to the device, with a manifest that proves what it is.

Reads the gguf artifacts and the provenance of the run; writes `bundle/` (models/*.gguf, manifest.json,
SHA256SUMS, README.md) and `<name>.tar.gz` of it. `verify_bundle` re-hashes every file against the manifest.
Raises BundleError.
"""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetune import __version__
from edgetune.artifacts import Artifact, Store, sha256_file, stage_key, write_json
from edgetune.constants import MANIFEST_FILE, MANIFEST_SCHEMA, Quant
from edgetune.errors import BundleError
from edgetune.export.stage import gguf_path
from edgetune.targets import Target

log = logging.getLogger(__name__)

KIND = "bundle"
SUMS_FILE = "SHA256SUMS"


def _place(src: Path, dst: Path) -> None:
    """Copy, never hard-link: a bundle edited in place must not corrupt the cached GGUF later builds reuse."""
    shutil.copy2(src, dst)


def run(target: Target, ggufs: Mapping[Quant, Artifact], provenance: Mapping[str, Any], llama_cpp: Mapping[str, str],
        store: Store, *, model_name: str) -> Artifact:
    params = {"target": target.model_dump(mode="json"), "model_name": model_name, "schema": MANIFEST_SCHEMA,
              "provenance": dict(provenance), "llama_cpp": dict(llama_cpp)}
    inputs = {q.value: a.key for q, a in ggufs.items()}
    key = stage_key(KIND, params, inputs)
    if hit := store.lookup(KIND, key):
        return hit
    name = f"{model_name}-{target.name}"
    with store.build(KIND, key, params, inputs) as b:
        root = b.path / name
        (root / "models").mkdir(parents=True)
        files: dict[str, dict[str, Any]] = {}
        models = []
        for quant, art in ggufs.items():
            rel = f"models/{model_name}-{quant.value}.gguf"
            _place(gguf_path(art), root / rel)
            models.append({"quant": quant.value, "file": rel, "size_bytes": (root / rel).stat().st_size})
        (root / "README.md").write_text(_device_readme(name, target, models, llama_cpp))
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            files[rel] = {"sha256": sha256_file(path), "size_bytes": path.stat().st_size}
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "name": name,
            "edgetune": __version__,
            "target": {"name": target.name, "arch": target.arch, "mcpu": target.cpu.mcpu,
                       "features": target.cpu.features, "ram_gb": target.ram_gb},
            "models": models,
            "default_model": models[0]["file"],
            "llama_cpp": dict(llama_cpp),
            "provenance": dict(provenance),
            "files": files,
        }
        write_json(root / MANIFEST_FILE, manifest)
        (root / SUMS_FILE).write_text("".join(f"{v['sha256']}  {k}\n" for k, v in sorted(files.items())))
        tarball = b.path / f"{name}.tar.gz"
        with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:  # GGUFs barely compress; favour speed
            tar.add(root, arcname=name)
        b.outputs.update(bundle=name, tarball=tarball.name)
        b.metrics.update(files=len(files), size_bytes=sum(v["size_bytes"] for v in files.values()))
    return b.artifact


def verify_bundle(root: Path) -> dict[str, Any]:
    """Re-hash every file listed in manifest.json; raise BundleError naming the first mismatch or gap."""
    manifest_path = Path(root) / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{root} has no {MANIFEST_FILE}", "point at a bundle folder made by `edgetune build`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BundleError(f"{manifest_path} is not readable JSON: {exc}", "re-copy or rebuild the bundle") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        schema = manifest.get("schema") if isinstance(manifest, dict) else None
        raise BundleError(f"{manifest_path}: unsupported schema {schema}", "rebuild the bundle")
    if not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{manifest_path} has no file list", "re-copy or rebuild the bundle")
    for rel, meta in manifest["files"].items():
        path = Path(root) / rel
        if not path.is_file():
            raise BundleError(f"bundle file missing: {rel}", "re-copy or rebuild the bundle")
        if sha256_file(path) != meta["sha256"]:
            raise BundleError(f"bundle file changed: {rel} (sha256 does not match the manifest)",
                              "the file was modified or corrupted in transit; re-copy it")
    sums = Path(root) / SUMS_FILE
    expected_sums = "".join(f"{v['sha256']}  {k}\n" for k, v in sorted(manifest["files"].items()))
    if not sums.is_file() or sums.read_text() != expected_sums:
        raise BundleError(f"{SUMS_FILE} does not match {MANIFEST_FILE}", "re-copy or rebuild the bundle")
    listed = set(manifest["files"]) | {MANIFEST_FILE, SUMS_FILE}
    extra = sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file()
                   and p.relative_to(root).as_posix() not in listed)
    if extra:
        raise BundleError(f"bundle has files the manifest does not list: {', '.join(extra[:3])}", "remove them or rebuild")
    return manifest


def _device_readme(name: str, target: Target, models: list[dict[str, Any]], llama_cpp: Mapping[str, str]) -> str:
    rows = "\n".join(f"| {m['quant']} | `{m['file']}` | {m['size_bytes'] / 1e6:.1f} MB |" for m in models)
    first = models[0]["file"]
    return f"""# {name}

Built by edgetune {__version__} for **{target.description}** ({target.arch}, {target.cpu.core}).
llama.cpp revision `{llama_cpp.get('llama.cpp', '?')}` (llama-cpp-python {llama_cpp.get('llama-cpp-python', '?')}).

| quant | file | size |
|---|---|---|
{rows}

The first row is the pick for this board. Check the files before use:

    sha256sum -c SHA256SUMS

Run with llama.cpp (any build at or after the revision above):

    llama-cli -m {first} -cnv -t {target.cpu.cores}
    llama-server -m {first} -t {target.cpu.cores} --host 127.0.0.1 --port 8080

or from Python with llama-cpp-python:

    python3 -c "from llama_cpp import Llama; llm = Llama('{first}', n_ctx={target.context_length}); \\
      print(llm.create_chat_completion([{{'role': 'user', 'content': 'Hello'}}])['choices'][0]['message']['content'])"

`manifest.json` lists every file's sha256, the target profile, the llama.cpp revision and the provenance
(base model, data and adapter hashes, training config) of this build.
"""
