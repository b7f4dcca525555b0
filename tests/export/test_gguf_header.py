"""The streaming header reader agrees with gguf's GGUFReader and fails cleanly on damaged files."""

from __future__ import annotations

import pytest

from edgetune.errors import ExportError
from edgetune.export.gguf_header import read_keys
from edgetune.export.inspect import field_value, read_gguf

KEYS = ["general.architecture", "general.file_type", "tokenizer.chat_template", "tokenizer.ggml.eos_token_id",
        "llama.block_count", "tokenizer.ggml.bos_token_id"]


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_agrees_with_ggufreader(which, tiny_gguf, smollm2_gguf):
    path = tiny_gguf if which == "tiny" else smollm2_gguf
    reader = read_gguf(path)
    got = read_keys(path, KEYS)
    for key in KEYS:
        assert got.get(key) == field_value(reader, key), key


def test_arrays_are_returned_when_asked(tiny_gguf):
    tokens = read_keys(tiny_gguf, ["tokenizer.ggml.tokens"])["tokenizer.ggml.tokens"]
    assert tokens == field_value(read_gguf(tiny_gguf), "tokenizer.ggml.tokens")


def test_absent_keys_are_left_out(tiny_gguf):
    assert read_keys(tiny_gguf, ["no.such.key"]) == {}


@pytest.mark.parametrize("size", [0, 6, 30, 2000])
def test_truncated_header(tmp_path, tiny_gguf, size):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:size])
    with pytest.raises(ExportError):
        read_keys(cut, ["no.such.key"])


def test_not_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ExportError, match="not a little-endian GGUF"):
        read_keys(bad, ["x"])
