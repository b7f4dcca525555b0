"""The export stage: merged HF folder → F16 GGUF → one quantized GGUF per requested type.

Each file is its own cached artifact (`gguf` kind), keyed by the merged model, the quant type and the llama.cpp
revision, so adding a quant to the list builds only that one. Reads the merge artifact; writes `model.gguf` in
each artifact folder. Raises ExportError / ToolError.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from edgetune.artifacts import Builder, Store, sha256_file, write_json
from edgetune.constants import GGUF_KEY_PROVENANCE, AutoQuant, Quant
from edgetune.export.budget import SIZE, Budget, Cap
from edgetune.export.convert import convert_to_gguf
from edgetune.export.imatrix import LOW_BIT, compute_imatrix, quantize_with_imatrix
from edgetune.export.metadata import add_string_keys
from edgetune.export.quantize import quantize_gguf
from edgetune.llamacpp import LlamaCppTools
from edgetune.outputs import Adapter, GGUFFile, ImportanceMatrix, LoraGGUF, ModelFolder, RecoveryGGUF

log = logging.getLogger(__name__)

KIND = GGUFFile.KIND
KIND_IMATRIX = ImportanceMatrix.KIND
FILE = GGUFFile.FILE
SEARCH_FILE = "search.json"  # a searched mix's types and measured sensitivities, beside its model.gguf


def _tools_record(tools: LlamaCppTools) -> dict[str, str]:
    return {"llama-cpp-python": tools.version, "llama.cpp": tools.revision}


def convert(merged: ModelFolder, tools: LlamaCppTools, store: Store, *, name: str,
            metadata: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None,
            license_name: str | None = None,
            full_precision: Callable[[], AbstractContextManager[Path]] | None = None) -> GGUFFile:
    """The F16 GGUF of the merged model (or of the base model, for the LoRA GGUF's base), made by llama.cpp's
    own converter, with `edgetune.provenance` (JSON) added; quantized files inherit every key of their F16
    source. `full_precision` opens the folder to convert instead of `merged.model_dir` (merge.full_precision:
    the fp32 merge of a model saved in bf16), called only when the file is not cached."""
    params = {"quant": Quant.F16.value, "name": name, "metadata": dict(metadata or {}),
              "provenance": dict(provenance or {}), "license": license_name}
    inputs = {"merged": merged.key, "llama.cpp": tools.revision}

    def build(b: Builder) -> None:
        from gguf import Keys

        meta = {Keys.General.NAME: name, **(metadata or {})}
        with (full_precision() if full_precision is not None else nullcontext(merged.model_dir)) as source:
            convert_to_gguf(source, b.path / FILE, tools, outtype="f16", metadata=meta)
        extra = {GGUF_KEY_PROVENANCE: json.dumps(provenance, sort_keys=True)} if provenance else {}
        if license_name:
            extra[Keys.General.LICENSE] = license_name
        if extra:
            add_string_keys(b.path / FILE, extra)
        _describe(b, Quant.F16)

    return GGUFFile.of(store.stage(KIND, params, inputs, build, tools=_tools_record(tools)))


def importance_matrix(f16: GGUFFile, calibration: str, tools: LlamaCppTools, store: Store, *,
                      threads: int | None = None) -> ImportanceMatrix:
    """llama-imatrix over the fine-tune's own text (see export.imatrix); the text's hash keys the cache."""
    text_sha = hashlib.sha256(calibration.encode()).hexdigest()
    params = {"ctx_tokens": 256, "chunks": 64}
    inputs = {"f16": f16.key, "calibration_sha256": text_sha, "llama.cpp": tools.revision}

    def build(b: Builder) -> None:
        (b.path / "calibration.txt").write_text(calibration)
        compute_imatrix(f16.gguf_path, b.path / "calibration.txt", b.path / "imatrix.gguf", tools,
                        ctx_tokens=params["ctx_tokens"], chunks=params["chunks"], threads=threads)
        ImportanceMatrix.write(b, imatrix="imatrix.gguf", calibration="calibration.txt",
                               calibration_sha256=text_sha, calibration_chars=len(calibration))

    return ImportanceMatrix.of(store.stage(KIND_IMATRIX, params, inputs, build, tools=_tools_record(tools)))


def quantize(f16: GGUFFile, quants: Sequence[Quant], tools: LlamaCppTools, store: Store, *,
             threads: int | None = None, imatrix: ImportanceMatrix | None = None) -> dict[Quant, GGUFFile]:
    """One artifact per quant type, each quantized from the F16 file (never re-quantized from a lower one).
    With `imatrix`, the low-bit types (export.imatrix.LOW_BIT) use it through llama-quantize."""
    built: dict[Quant, GGUFFile] = {}
    for quant in quants:
        if quant == Quant.F16:
            built[quant] = f16
            continue
        quant_imatrix = imatrix if quant in LOW_BIT else None
        params = {"quant": quant.value, "imatrix": quant_imatrix is not None}
        inputs = {"f16": f16.key, "llama.cpp": tools.revision}
        if quant_imatrix is not None:
            inputs["imatrix"] = quant_imatrix.key
        build = partial(_quantize, f16, quant, tools, threads, quant_imatrix)
        built[quant] = art = GGUFFile.of(store.stage(KIND, params, inputs, build, tools=_tools_record(tools)))
        if not art.cached:
            log.info("quantized %s: %.1f MB", quant.value, art.size_bytes / 1e6)
    return built


def _quantize(f16: GGUFFile, quant: Quant, tools: LlamaCppTools, threads: int | None,
              imatrix: ImportanceMatrix | None, b: Builder) -> None:
    if imatrix is not None:
        quantize_with_imatrix(f16.gguf_path, b.path / FILE, quant, imatrix.imatrix_path, tools,
                              threads=threads)
        _describe(b, quant, imatrix_calibration_sha256=imatrix.calibration_sha256)
    else:
        quantize_gguf(f16.gguf_path, b.path / FILE, quant, tools, nthread=threads or 0)
        _describe(b, quant)


def _describe(b: Builder, quant: Quant, imatrix_calibration_sha256: str | None = None) -> None:
    path = b.path / FILE
    GGUFFile.write(b, quant=quant.value, size_bytes=path.stat().st_size, sha256=sha256_file(path),
                   imatrix_calibration_sha256=imatrix_calibration_sha256)


KIND_LORA = LoraGGUF.KIND


def lora_adapter(trained: Adapter, base_dir: Path, base_ggufs: Mapping[Quant, GGUFFile], tools: LlamaCppTools,
                 store: Store, *, probe_ids: Sequence[int]) -> LoraGGUF:
    """The adapter as a LoRA GGUF (llama.cpp's convert_lora_to_gguf.py), proven to load and evaluate on every
    quantized GGUF of the *base* model: ship the base once, small adapters after."""
    from edgetune.export.lora import check_loads, convert_lora

    params = {"outtype": "f16"}
    inputs = {"train": trained.key, "llama.cpp": tools.revision, **{f"base-{q.value}": a.key for q, a in base_ggufs.items()}}

    def build(b: Builder) -> None:
        out = convert_lora(trained.adapter_dir, base_dir, b.path / LoraGGUF.FILE, tools)
        loaded = check_loads(out, [a.gguf_path for a in base_ggufs.values()], list(probe_ids))
        LoraGGUF.write(b, size_bytes=out.stat().st_size, sha256=sha256_file(out),
                       loads_on={q.value: a.gguf_path.name in loaded for q, a in base_ggufs.items()},
                       base_sha256={q.value: a.sha256 for q, a in base_ggufs.items()})

    return LoraGGUF.of(store.stage(KIND_LORA, params, inputs, build, tools=_tools_record(tools)))


def searched_mix(f16: GGUFFile, auto: AutoQuant, budget: GGUFFile, calibration_sha256: str,
                 scorer: Callable[[], Callable[[Path], float]], tools: LlamaCppTools, store: Store, *,
                 threads: int | None = None, imatrix: ImportanceMatrix | None = None,
                 limits: Sequence[Cap] = ()) -> GGUFFile:
    """`auto:<QUANT>-size`: the per-tensor precision mix (export.mix.search_mix) no larger than `budget` (the plain
    <QUANT> file of the same F16) nor any of `limits` (export.budget.target_caps: the target's RAM, a speed floor),
    scored by `scorer()` (called only when the mix is not cached: it loads the reference) on the calibration
    sequences whose hash is `calibration_sha256`. The artifact holds model.gguf and search.json (every group's
    type, the measured sensitivities, the caps and which one bound, predicted and real size)."""
    from edgetune.export.mix import quantize_mix, search_mix

    caps = Budget((Cap(SIZE, budget.size_bytes, f"the plain {budget.quant} file",
                       f"raise the size: auto:<a larger quant>-size instead of {auto}"), *limits))
    params: dict[str, Any] = {"quant": auto.value, "search": {"bands": 3, "high": "Q8_0",
                                                              "low": "Q4_0 (token_embd: +Q5_0)"},
                              "imatrix": imatrix is not None}
    if limits:  # the size cap is keyed by the budget file; these by their bytes
        params["limits"] = {c.name: int(c.bytes) for c in limits}
    inputs = {"f16": f16.key, "budget": budget.key, "calibration_sha256": calibration_sha256,
              "llama.cpp": tools.revision}
    if imatrix is not None:
        inputs["imatrix"] = imatrix.key

    def build(b: Builder) -> None:
        im = imatrix.imatrix_path if imatrix is not None else None
        groups, found = search_mix(f16.gguf_path, b.path, caps, tools, scorer(),
                                   base=auto.budget.value, imatrix=im, threads=threads,
                                   on_step=lambda name, d: log.info("%s: sensitivity %s %+.5f", auto, name, d))
        path = quantize_mix(f16.gguf_path, b.path / FILE, groups, found.mix, tools, imatrix=im, threads=threads)
        size = path.stat().st_size
        if size > caps.bytes:  # the knapsack's sizes are bits-per-weight estimates: say so if they miss
            log.warning("%s: the searched file is %.2f MB, over its budget %.2f MB (%s cap: %s)", auto, size / 1e6,
                        caps.bytes / 1e6, caps.binding.name, caps.binding.why)
        b.outputs["search"] = SEARCH_FILE
        write_json(b.path / SEARCH_FILE, {**found.to_dict(), "size_bytes": size, "budget_quant": budget.quant})
        log.info("%s: %s, %.1f MB (budget %.1f MB, bound by the %s cap: %s)", auto, found.mix.describe(),
                 size / 1e6, caps.bytes / 1e6, caps.binding.name, caps.binding.why)
        GGUFFile.write(b, quant=auto.value, size_bytes=size, sha256=sha256_file(path),
                       imatrix_calibration_sha256=imatrix.calibration_sha256 if imatrix is not None else None)

    return GGUFFile.of(store.stage(KIND, params, inputs, build, tools=_tools_record(tools)))


def recovery_adapter(merged: ModelFolder, quantized: GGUFFile, sequences: Sequence[Sequence[int]],
                     tools: LlamaCppTools, store: Store, *, steps: int, probe_ids: Sequence[int]) -> RecoveryGGUF:
    """The recovery LoRA of `quantized` (export.recovery): trained on `sequences` against the merged model,
    converted by llama.cpp's convert_lora_to_gguf.py, and loaded on `quantized` by llama.cpp before it counts."""
    from edgetune.export.lora import check_loads, convert_lora
    from edgetune.export.recovery import RecoveryConfig, train_recovery

    cfg = RecoveryConfig(steps=steps, learning_rate=2e-3)  # 2e-3: benchmarks/quant_recovery.py's setting
    params = {"rank": cfg.rank, "alpha": cfg.alpha, "steps": cfg.steps, "batch_size": cfg.batch_size,
              "learning_rate": cfg.learning_rate, "seed": cfg.seed, "outtype": "f16"}
    inputs = {"merged": merged.key, "gguf": quantized.key, "llama.cpp": tools.revision,
              "sequences_sha256": hashlib.sha256(json.dumps([list(s) for s in sequences]).encode()).hexdigest()}

    def build(b: Builder) -> None:
        res = train_recovery(merged.model_dir, quantized.gguf_path, sequences, b.path / "peft", cfg,
                             on_step=lambda s, v: log.info("recovery %s: step %d KL %.4f", quantized.quant, s, v)
                             if s % 10 == 0 else None)
        out = convert_lora(res.adapter_dir, merged.model_dir, b.path / RecoveryGGUF.FILE, tools)
        check_loads(out, [quantized.gguf_path], list(probe_ids))
        log.info("recovery %s: KL %.4f -> %.4f in %d steps, adapter %.1f MB", quantized.quant, res.first_kld,
                 res.last_kld, res.steps, out.stat().st_size / 1e6)
        RecoveryGGUF.write(b, quant=quantized.quant, base_sha256=quantized.sha256, size_bytes=out.stat().st_size,
                           sha256=sha256_file(out), first_kld=res.first_kld, last_kld=res.last_kld, steps=res.steps)

    return RecoveryGGUF.of(store.stage(RecoveryGGUF.KIND, params, inputs, build, tools=_tools_record(tools)))
