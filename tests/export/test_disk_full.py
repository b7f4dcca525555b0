"""A conversion or quantization that runs out of disk fails with a clear error and leaves nothing behind.
Uses a real 2 MB tmpfs (root only; skipped with the reason elsewhere)."""

from __future__ import annotations

import os
import subprocess

import pytest

from edgetune.constants import Quant
from edgetune.errors import ExportError
from edgetune.export.convert import convert_to_gguf
from edgetune.export.quantize import quantize_gguf


def _mount(mnt, size_bytes: int):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt.mkdir()
    size_kb = max(4, size_bytes // 1024)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    return mnt


@pytest.fixture
def tiny_disk(tmp_path):
    yield _mount(tmp_path / "full", 2 << 20)
    subprocess.run(["umount", str(tmp_path / "full")], check=False)


def test_convert_fills_the_disk_mid_write(tmp_path, tiny_model_dir, llama_tools):
    """Room for the estimated tensor bytes passes the up-front check; the vocabulary then does not fit."""
    weights = sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    mnt = _mount(tmp_path / "almost", weights // 2 + (64 << 10))
    try:
        with pytest.raises(ExportError, match="failed|space"):
            convert_to_gguf(tiny_model_dir, mnt / "model.gguf", llama_tools)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_convert_onto_a_full_disk(tiny_disk, tiny_model_dir, llama_tools):
    with pytest.raises(ExportError, match="not enough disk space"):
        convert_to_gguf(tiny_model_dir, tiny_disk / "model.gguf", llama_tools)
    assert list(tiny_disk.iterdir()) == []


def test_quantize_onto_a_full_disk(tiny_disk, tiny_gguf, llama_tools):
    with pytest.raises(ExportError, match="not enough disk space"):
        quantize_gguf(tiny_gguf, tiny_disk / "q8.gguf", Quant.Q8_0, llama_tools)
    assert list(tiny_disk.iterdir()) == []
