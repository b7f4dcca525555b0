"""The bundle stage: what goes to the device, with a manifest that proves what it is.

Reads the gguf artifacts and the provenance of the run; writes `bundle/` (models/*.gguf, manifest.json,
SHA256SUMS, README.md) and `<name>.tar.gz` of it. With `runtime=True` the bundle also carries what the board
needs to run and evaluate the models with only Python 3's standard library: `bin/llama-server`, `bin/llama-cli`,
`bin/llama-bench` cross-built for the target's -mcpu (scripts/cross-build-llama.sh; read through
`runtime_build.find_runtime`) and `runner/edgetune_runner.py`; with `suite_rows`, `suite/heldout.jsonl` for the
runner. Every bundle (ARM or x86) has an Ollama `models/<file>.Modelfile` beside each GGUF (TEMPLATE, stops,
context: `modelfile`) and, with a LoRA GGUF, an `ADAPTER` Modelfile beside it. GGUF file names follow llama.cpp's
convention when the caller gives them (`file_stems`). `verify_bundle` re-hashes every file against the
manifest. Raises BundleError, and ToolError when runtime binaries are asked for but not built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgetune import __version__
from edgetune.artifacts import Builder, Store, sha256_file, write_json
from edgetune.constants import MANIFEST_FILE, MANIFEST_SCHEMA, AutoQuant, Quant
from edgetune.errors import BundleError
from edgetune.modelfile import SUFFIX as MODELFILE_SUFFIX
from edgetune.modelfile import modelfile
from edgetune.outputs import Bundle, GGUFFile, LoraGGUF, RecoveryGGUF
from edgetune.runtime_build import RuntimeBinaries, find_runtime, runner_source
from edgetune.targets import Target

log = logging.getLogger(__name__)

KIND = Bundle.KIND
SUMS_FILE = "SHA256SUMS"
RUNNER_FILE = "runner/edgetune_runner.py"
SUITE_FILE = "suite/heldout.jsonl"


def _place(src: Path, dst: Path) -> None:
    """Copy, never hard-link: a bundle edited in place must not corrupt the cached GGUF later builds reuse."""
    shutil.copy2(src, dst)


def run(target: Target, ggufs: Mapping[Quant | AutoQuant, GGUFFile], provenance: Mapping[str, Any],
        llama_cpp: Mapping[str, str],
        store: Store, *, model_name: str, runtime: bool = False, suite_rows: Sequence[Mapping[str, Any]] | None = None,
        home: Path | None = None, lora: LoraGGUF | None = None,
        file_stems: Mapping[Quant | AutoQuant, str] | None = None, lora_stem: str | None = None,
        lora_base_stem: str | None = None, recovery: RecoveryGGUF | None = None) -> Bundle:
    """Bundle `ggufs` for `target`. `runtime=True` adds the cross-built llama.cpp binaries (found under `home`,
    the edgetune cache folder), the runner and Ollama Modelfiles; `suite_rows` (each {"id", "prompt_ids" or "prompt",
    "max_tokens", "reference"?}) become suite/heldout.jsonl. Both default off, which keeps the bundle (and its
    cache key) what it was before they existed. `file_stems` names each GGUF (llama.cpp's
    `BaseName-SizeLabel-FineTune-Type`, export.naming), `lora_stem` the LoRA GGUF; by default
    `<model_name>-<quant>` and `<model_name>-lora-f16`; `lora_base_stem` is the base model's GGUF the ADAPTER
    Modelfile names in FROM (default `<model_name>-base-<first quant>`)."""
    stems = {q: (file_stems or {}).get(q) or f"{model_name}-{q.value.replace(':', '-')}" for q in ggufs}
    lora_stem = lora_stem or f"{model_name}-lora-f16"
    params = {"target": target.model_dump(mode="json"), "model_name": model_name, "schema": MANIFEST_SCHEMA,
              "provenance": dict(provenance), "llama_cpp": dict(llama_cpp),
              "files": {"models": {q.value: s for q, s in stems.items()}, "lora": lora_stem, "modelfiles": 2}}
    rt = None
    if runtime:
        if home is None:
            raise BundleError("bundle.run(runtime=True) needs `home`, the edgetune cache folder holding cross/",
                              "pass the home the pipeline was given")
        rt = find_runtime(home, target.arch, target.cpu.mcpu, llama_cpp.get("llama-cpp-python"))
        params["runtime"] = {"build": rt.manifest_entry(), "runner_sha256": sha256_file(runner_source()),
                             "binaries_sha256": {n: sha256_file(p) for n, p in rt.binaries.items()}}
    suite_text, suite_items = None, 0
    if suite_rows is not None:
        suite_text, suite_items = _suite_jsonl(suite_rows), len(suite_rows)
        params["suite_sha256"] = hashlib.sha256(suite_text.encode()).hexdigest()
    inputs = {q.value: a.key for q, a in ggufs.items()}
    if lora is not None:
        inputs["lora"] = lora.key
    if recovery is not None:
        inputs["recovery"] = recovery.key
    name = f"{model_name}-{target.name}"

    def build(b: Builder) -> None:
        root = b.path / name
        (root / "models").mkdir(parents=True)
        files: dict[str, dict[str, Any]] = {}
        models: list[dict[str, Any]] = []
        for quant, art in ggufs.items():
            rel = f"models/{stems[quant]}.gguf"
            _place(art.gguf_path, root / rel)
            models.append({"quant": quant.value, "file": rel, "size_bytes": (root / rel).stat().st_size})
            models[-1].update(_write_modelfile(root, rel, target.context_length))
        extra: dict[str, Any] = {}
        if lora is not None:  # the adapter alone, for devices that already hold the base model's GGUF
            rel = f"adapters/{lora_stem}.gguf"
            (root / "adapters").mkdir()
            _place(lora.gguf_path, root / rel)
            first = next(iter(ggufs))
            extra["adapters"] = [{"file": rel, "applies_to_base_gguf_sha256": lora.base_sha256,
                                  "usage": "llama-server -m BASE.gguf --lora " + rel,
                                  **_write_modelfile(root, models[0]["file"], target.context_length, adapter=rel,
                                                     from_ref=f"./{lora_base_stem or f'{model_name}-base-{first.value}'}.gguf")}]
        if recovery is not None:  # the recovery LoRA of one shipped quant, beside it (export/recovery.py)
            base = next(m for m in models if m["quant"] == recovery.quant)
            rel = f"adapters/{model_name}-{recovery.quant}-recovery-f16.gguf"
            (root / "adapters").mkdir(exist_ok=True)
            _place(recovery.gguf_path, root / rel)
            extra["recovery_adapters"] = [{"file": rel, "applies_to": base["file"], "base_sha256": recovery.base_sha256,
                                           "usage": f"llama-server -m {base['file']} --lora {rel}"}]
        if rt is not None:
            extra["runtime"] = _place_runtime(rt, root)
            extra["runner"] = {"file": RUNNER_FILE, "usage": f"python3 {RUNNER_FILE} --job-dir DIR --model FILE.gguf"}
        if suite_text is not None:
            (root / SUITE_FILE).parent.mkdir(parents=True, exist_ok=True)
            (root / SUITE_FILE).write_text(suite_text)
            extra["suite"] = {"file": SUITE_FILE, "items": suite_items}
        (root / "README.md").write_text(_device_readme(name, target, models, llama_cpp, extra))
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
            **extra,
            "files": files,
        }
        if rt is not None:  # the runner reads its defaults (threads, context) from here
            manifest["target"].update(cores=target.cpu.cores, context_length=target.context_length)
        write_json(root / MANIFEST_FILE, manifest)
        (root / SUMS_FILE).write_text("".join(f"{v['sha256']}  {k}\n" for k, v in sorted(files.items())))
        tarball = b.path / f"{name}.tar.gz"
        with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:  # GGUFs barely compress; favour speed
            tar.add(root, arcname=name)
        Bundle.write(b, bundle_dir=name, tarball=tarball.name, n_files=len(files),
                     size_bytes=sum(v["size_bytes"] for v in files.values()))

    return Bundle.of(store.stage(KIND, params, inputs, build))


def _write_modelfile(root: Path, gguf_rel: str, num_ctx: int, *, adapter: str | None = None,
                     from_ref: str | None = None) -> dict[str, str]:
    """The Modelfile beside `gguf_rel` (or beside `adapter`, an ADAPTER variant whose FROM is the base model's
    GGUF); returns its manifest entry: the file and what became of the chat template (a refusal's reason)."""
    beside = adapter or gguf_rel
    rel = beside[: -len(".gguf")] + MODELFILE_SUFFIX
    made = modelfile(root / gguf_rel, num_ctx=num_ctx, adapter=None if adapter is None else root / adapter,
                     from_ref=from_ref)
    (root / rel).write_text(made.text)
    return {"modelfile": rel, "modelfile_template": "translated" if made.template_refused is None
            else f"refused: {made.template_refused}"}


def _place_runtime(rt: RuntimeBinaries, root: Path) -> dict[str, Any]:
    """Copy the cross-built binaries and the runner into the bundle (executable); return the manifest entry."""
    (root / "bin").mkdir()
    binaries = {}
    for name, src in rt.binaries.items():
        shutil.copyfile(src, root / "bin" / name)
        (root / "bin" / name).chmod(0o755)
        binaries[name] = f"bin/{name}"
    (root / RUNNER_FILE).parent.mkdir()
    shutil.copyfile(runner_source(), root / RUNNER_FILE)
    (root / RUNNER_FILE).chmod(0o755)
    entry = rt.manifest_entry()
    return {"binaries": binaries, "build_flags": entry.pop("build_flags"),
            "llama_cpp": {"llama-cpp-python": entry.pop("llama-cpp-python"), "llama.cpp": entry.pop("llama.cpp")},
            **entry}


def _suite_jsonl(rows: Sequence[Mapping[str, Any]]) -> str:
    """The runner's suite file; rows it would refuse are refused here, naming the row."""
    out, seen = [], set()
    for n, row in enumerate(rows):
        item_id = row.get("id")
        ids, text, max_tokens = row.get("prompt_ids"), row.get("prompt"), row.get("max_tokens")
        problem = None
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or item_id == "" or str(item_id) in seen:
            problem = "'id' must be a unique non-empty string or integer"
        elif (ids is None) == (text is None):
            problem = "give exactly one of 'prompt_ids' and 'prompt'"
        elif ids is not None and (not ids or not all(isinstance(t, int) and t >= 0 for t in ids)):
            problem = "'prompt_ids' must be a non-empty list of non-negative integers"
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            problem = "'max_tokens' must be an integer >= 1"
        if problem:
            raise BundleError(f"suite row {n} ({item_id!r}): {problem}", "fix the held-out rows given to the bundle")
        seen.add(str(item_id))
        out.append(json.dumps({k: (list(v) if k == "prompt_ids" else v) for k, v in row.items()}))
    return "".join(line + "\n" for line in out)


def verify_bundle(root: Path) -> dict[str, Any]:
    """Re-hash every file listed in manifest.json; raise BundleError naming the first mismatch or gap."""
    from edgetune.bundle_manifest import read_manifest

    manifest = read_manifest(root)
    for rel, meta in manifest["files"].items():
        path = Path(root) / rel
        if not path.is_file():
            raise BundleError(f"bundle file missing: {rel}", "re-copy or rebuild the bundle")
        if path.stat().st_size != meta["size_bytes"]:  # a cut copy: no need to hash it to know
            raise BundleError(f"bundle file changed: {rel} ({path.stat().st_size} bytes, the manifest says "
                              f"{meta['size_bytes']})", "the file was cut or modified in transit; re-copy it")
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


def _device_readme(name: str, target: Target, models: list[dict[str, Any]], llama_cpp: Mapping[str, str],
                   extra: Mapping[str, Any] | None = None) -> str:
    rows = "\n".join(f"| {m['quant']} | `{m['file']}` | {m['size_bytes'] / 1e6:.1f} MB |" for m in models)
    first = models[0]["file"]
    runtime = _runtime_readme(first, target, extra or {})
    return f"""# {name}

Built by edgetune {__version__} for **{target.description}** ({target.arch}, {target.cpu.core}).
llama.cpp revision `{llama_cpp.get('llama.cpp', '?')}` (llama-cpp-python {llama_cpp.get('llama-cpp-python', '?')}).

| quant | file | size |
|---|---|---|
{rows}

The first row is the pick for this board. Check the files before use:

    sha256sum -c SHA256SUMS
{runtime}
Run with llama.cpp (any build at or after the revision above):

    llama-cli -m {first} -cnv -t {target.cpu.cores}
    llama-server -m {first} -t {target.cpu.cores} --host 127.0.0.1 --port 8080

With Ollama (the Modelfile carries the chat template as a TEMPLATE, the stop tokens and the context):

    ollama create NAME -f {first[: -len(".gguf")]}{MODELFILE_SUFFIX}

or from Python with llama-cpp-python:

    python3 -c "from llama_cpp import Llama; llm = Llama('{first}', n_ctx={target.context_length}); \\
      print(llm.create_chat_completion([{{'role': 'user', 'content': 'Hello'}}])['choices'][0]['message']['content'])"

`manifest.json` lists every file's sha256, the target profile, the llama.cpp revision and the provenance
(base model, data and adapter hashes, training config) of this build.
"""


def _runtime_readme(first: str, target: Target, extra: Mapping[str, Any]) -> str:
    if "runtime" not in extra:
        return ""
    rt = extra["runtime"]
    flags = f"-mcpu={rt['mcpu']}, llama.cpp {rt['llama_cpp']['llama.cpp']}"
    suite = ""
    if "suite" in extra:
        suite = f"""
Evaluate on this board (Python 3 standard library only; results land in jobs/q/results.jsonl and summary.json):

    python3 {RUNNER_FILE} --job-dir jobs/q --model {first} --suite {SUITE_FILE}
"""
    return f"""
This bundle carries its own llama.cpp: `bin/llama-server`, `bin/llama-cli`, `bin/llama-bench`, statically
linked for {target.arch} ({flags}; build flags in manifest.json); nothing to install:

    bin/llama-server -m {first} -t {target.cpu.cores} -c {target.context_length} --host 127.0.0.1 --port 8080
{suite}"""
