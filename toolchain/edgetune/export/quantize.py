"""Quantize a GGUF file with llama.cpp's own `llama-quantize` (the native tool set-up builds from the same source
as llama-cpp-python, also used for imatrix quants).

Reads the source GGUF's header first (so a truncated file fails with a clear message rather than deep inside
llama.cpp) and writes the quantized GGUF through a temp file in the destination folder, renamed into place only
when llama-quantize exits 0. Progress: one INFO line before and after; llama-quantize's own per-tensor lines go to
the DEBUG log (`-vv`), and the end of its output is quoted when it fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from edgetune.constants import Quant
from edgetune.errors import ExportError
from edgetune.export.gguf_header import read_keys
from edgetune.export.inspect import field_value, file_type_name, read_gguf
from edgetune.llamacpp import LlamaCppTools
from edgetune.proc import run_tool

log = logging.getLogger(__name__)

# unquantized types, by the names of both tensor types and file types (file_type_name: ALL_F32 is "F32")
_FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})


def quantize_gguf(src: Path, dst: Path, quant: Quant, tools: LlamaCppTools, *, nthread: int = 0,
                  quality_matters: bool = True) -> Path:
    """Quantize `src` to `quant` with `tools`' llama-quantize and write it to `dst` (replacing an existing file);
    return `dst`.

    `nthread` 0 lets llama.cpp use every core. Requantizing an already quantized source is allowed but
    logged as a WARNING, since it loses more quality than quantizing from F16/BF16 (at INFO when
    `quality_matters` is False: files made only to exercise kernels, as the set-up probe's).
    Raises ExportError for a missing or corrupt source, an unknown quant, or a failed quantization (ToolError
    when llama-quantize is not built); no partial file is ever left at `dst` or beside it.
    """
    src, dst = Path(src), Path(dst)
    try:
        quant = Quant(quant)
    except ValueError as exc:
        known = ", ".join(q.value for q in Quant)
        raise ExportError(f"unknown quantization {quant!r}", f"use one of: {known}") from exc
    if nthread < 0:
        raise ExportError(f"nthread must be 0 (all cores) or more, got {nthread}")
    if dst.resolve() == src.resolve():
        raise ExportError(f"refusing to quantize {src} onto itself", "give a different destination path")
    if dst.is_dir():
        raise ExportError(f"destination {dst} is a folder", "give the path of the .gguf file to write")

    check_free_space(dst.parent, src.stat().st_size if src.is_file() else 0, what=f"{quant.value} GGUF")
    src_ftype = _source_file_type(src)
    requantize = src_ftype.quantized
    if requantize:
        log.log(
            logging.WARNING if quality_matters else logging.INFO,
            "requantizing %s (%s) to %s loses more quality than quantizing from F16/BF16; "
            "pass the unquantized GGUF to avoid this",
            src, src_ftype.name, quant.value,
        )
    quantizer = tools.tool("llama-quantize")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".gguf.tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # llama.cpp refuses a quantized source unless asked, and we only ask when the source is quantized
    argv = [quantizer, *(["--allow-requantize"] if requantize else []), src, tmp, quant.value]
    if nthread:
        argv.append(str(nthread))
    try:
        log.info("quantizing %s (%s) to %s as %s", src, src_ftype.name, dst, quant.value)
        # llama-quantize can fail half-way and leave a partial file behind: the finally below removes it
        done = run_tool(argv, error=ExportError,
                        hint=f"llama-quantize could not make {quant.value}; run with -vv for its full log")
        for line in (done.stdout + done.stderr).splitlines():
            if line.strip():
                log.debug("llama-quantize: %s", line.rstrip())
        # No read-back of the result: GGUFReader needs seconds for a 50k-token vocabulary, longer than the
        # quantization itself on small models; tests check the written file types against Quant.file_type.
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%s, %d bytes)", dst, quant.value, dst.stat().st_size)
    return dst


class _SourceType(NamedTuple):
    name: str
    quantized: bool


def _source_file_type(src: Path) -> _SourceType:
    """The source's file type name and whether it is already quantized. Reads only the header when it can:
    a full GGUFReader parse took 3x longer than llama-quantize itself on SmolLM2 (benchmarks/export.py)."""
    from gguf import Keys

    if not src.is_file():
        raise ExportError(f"GGUF file {src} does not exist", "check the path, or run the export stage first")
    ftype = read_keys(src, [Keys.General.FILE_TYPE]).get(Keys.General.FILE_TYPE)
    if ftype is not None:
        return _source_type(ftype)
    reader = read_gguf(src)  # raises ExportError for a truncated or corrupt source
    ftype = field_value(reader, Keys.General.FILE_TYPE)
    if ftype is not None:
        return _source_type(ftype)
    # Files written without general.file_type: judge by the tensors themselves.
    quantized = any(t.tensor_type.name not in _FLOAT_TYPES for t in reader.tensors)
    return _SourceType("unknown type", quantized)


def _source_type(ftype: int) -> _SourceType:
    name = file_type_name(ftype) or str(ftype)
    return _SourceType(name, name not in _FLOAT_TYPES)


def check_free_space(folder: Path, need_bytes: int, *, what: str) -> None:
    """Refuse before writing when the disk cannot hold the result (llama.cpp's own failure is a bare code)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise ExportError(f"not enough disk space for the {what}: about {need_bytes / 1e6:.0f} MB needed, "
                          f"{free / 1e6:.0f} MB free in {folder}", "free some space or set out_dir on a larger disk")
