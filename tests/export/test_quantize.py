"""quantize_gguf through llama.cpp's own `llama-quantize`, on the tiny F16 GGUF."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgetune.constants import Quant
from edgetune.errors import ExportError
from edgetune.export.inspect import inspect_gguf
from edgetune.export.quantize import quantize_gguf
from tests.helpers import generated_tokens

QUANTS = (Quant.Q8_0, Quant.Q4_0)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_gguf, llama_tools) -> dict[Quant, Path]:
    out_dir = tmp_path_factory.mktemp("quantize")
    return {q: quantize_gguf(tiny_gguf, out_dir / f"tiny-{q.value}.gguf", q, llama_tools, nthread=1) for q in QUANTS}


@pytest.mark.parametrize("quant", QUANTS, ids=lambda q: q.value)
def test_quantized_file_has_the_type_and_generates(quantized, quant):
    info = inspect_gguf(quantized[quant])
    assert info["file_type"] == quant.value
    assert quant.value in info["tensor_types"]
    assert generated_tokens(quantized[quant]) > 0


def test_quantized_files_shrink(quantized, tiny_gguf):
    f16 = tiny_gguf.stat().st_size
    q8, q4 = (quantized[q].stat().st_size for q in QUANTS)
    assert q4 < q8 < f16


def test_quantize_leaves_only_the_results(quantized):
    folder = quantized[Quant.Q8_0].parent
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-Q4_0.gguf", "tiny-Q8_0.gguf"]


def test_requantizes_a_quantized_source_with_a_warning(quantized, tmp_path, caplog, llama_tools):
    with caplog.at_level(logging.WARNING, logger="edgetune.export.quantize"):
        out = quantize_gguf(quantized[Quant.Q8_0], tmp_path / "re.gguf", Quant.Q4_0, llama_tools, nthread=1)
    assert inspect_gguf(out)["file_type"] == "Q4_0"
    assert "requantizing" in caplog.text


def test_missing_source_leaves_nothing(tmp_path, llama_tools):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ExportError, match="does not exist"):
        quantize_gguf(tmp_path / "no-such.gguf", out_dir / "x.gguf", Quant.Q4_0, llama_tools)
    assert list(out_dir.iterdir()) == []


def test_truncated_source_leaves_nothing(tmp_path, tiny_gguf, llama_tools):
    src = tmp_path / "truncated.gguf"
    src.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ExportError, match="truncated.gguf"):
        quantize_gguf(src, out_dir / "x.gguf", Quant.Q4_0, llama_tools)
    assert list(out_dir.iterdir()) == []


def test_refuses_to_overwrite_its_source(tiny_gguf, llama_tools):
    with pytest.raises(ExportError, match="onto itself"):
        quantize_gguf(tiny_gguf, tiny_gguf, Quant.Q4_0, llama_tools)


def test_unknown_quant(tmp_path, tiny_gguf, llama_tools):
    with pytest.raises(ExportError, match="unknown quantization"):
        quantize_gguf(tiny_gguf, tmp_path / "x.gguf", "Q9_9", llama_tools)


@pytest.mark.parametrize("quant", list(Quant), ids=lambda q: q.value)
def test_file_types_are_llama_cpp_own(quant):
    """Quant.file_type (from gguf.LlamaFileType) is the llama_ftype number the llama.cpp library defines, and
    reads back as the quant's name."""
    import llama_cpp

    from edgetune.export.inspect import file_type_name

    assert quant.file_type == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.value}")
    assert file_type_name(quant.file_type) == quant.value
