"""Importance matrix from the fine-tune's own text, and quantization that uses it.

llama.cpp weighs each weight column's rounding error by how strongly the calibration text activates it. The
calibration text here is the training set rendered with the model's chat template: the distribution the edge
build will actually see. Runs llama.cpp's own `llama-imatrix` and `llama-quantize --imatrix` (built from the
same source as llama-cpp-python by scripts/build-llama-tools.sh). Writes through temp files; raises
ExportError / ToolError.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from edgetune.constants import Quant
from edgetune.errors import ExportError
from edgetune.llamacpp import LlamaCppTools
from edgetune.proc import run_tool

log = logging.getLogger(__name__)

# The types that use an imatrix. Measured on the fine-tuned SmolLM2 (benchmarks/export.py): mean KLD to the GPU
# build falls 88% at Q5_K_M, 54% at Q4_K_M, 39% at IQ4_NL, 31% at Q6_K, 26% at Q4_0, 24% at Q3_K_M; Q8_0 ignores it.
LOW_BIT = frozenset({Quant.Q6_K, Quant.Q5_K_M, Quant.Q4_0, Quant.Q4_K_M, Quant.IQ4_NL, Quant.Q3_K_M,
                     Quant.Q2_K})


def _tmp_beside(path: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def compute_imatrix(f16_gguf: Path, calibration_txt: Path, out_path: Path, tools: LlamaCppTools, *,
                    ctx_tokens: int = 256, chunks: int = 64, threads: int | None = None) -> Path:
    """Run llama-imatrix over `calibration_txt` (at most `chunks` chunks of `ctx_tokens`) into `out_path`."""
    if calibration_txt.stat().st_size == 0:
        raise ExportError("imatrix calibration text is empty", "the training set must not be empty")
    tmp = _tmp_beside(out_path, ".gguf.tmp")
    try:
        argv = [tools.tool("llama-imatrix"), "-m", f16_gguf, "-f", calibration_txt, "-o", tmp, "-c", str(ctx_tokens),
                "--chunks", str(chunks), "--no-ppl", "--parse-special", "--output-frequency", "1000000"]
        if threads:
            argv += ["-t", str(threads)]
        run_tool(argv, error=ExportError, hint="llama-imatrix failed; is the calibration text long enough "
                                                f"for one {ctx_tokens}-token chunk?")
        if tmp.stat().st_size == 0:
            raise ExportError("llama-imatrix wrote an empty importance matrix", "give more calibration text")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def quantize_with_imatrix(src: Path, dst: Path, quant: Quant, imatrix: Path, tools: LlamaCppTools, *,
                          threads: int | None = None) -> Path:
    """llama-quantize --imatrix from the F16 source (never requantizing)."""
    tmp = _tmp_beside(dst, ".gguf.tmp")
    try:
        argv = [tools.tool("llama-quantize"), "--imatrix", imatrix, src, tmp, quant.value]
        if threads:
            argv.append(str(threads))
        run_tool(argv, error=ExportError, hint=f"llama-quantize could not make {quant.value} with the imatrix")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def calibration_text(examples: list[dict], tokenizer) -> str:
    """The training examples as the model sees them: full chat-template renderings, one after another."""
    return "\n".join(tokenizer.apply_chat_template(ex["messages"], tokenize=False) for ex in examples)
