"""inspect_gguf on real GGUF files: the converted tiny Llama, a hand-written one, broken copies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgetune.errors import ExportError
from edgetune.export.inspect import inspect_gguf


def test_summary_of_the_tiny_model(tiny_gguf, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    info = inspect_gguf(tiny_gguf)
    assert info["path"] == str(tiny_gguf)
    assert info["size_bytes"] == tiny_gguf.stat().st_size
    assert info["architecture"] == "llama"
    assert info["file_type"] == "F16"
    assert info["n_tensors"] == 2 * 9 + 2  # 9 per block, token_embd, output_norm (embeddings tied)
    assert sum(info["tensor_types"].values()) == info["n_tensors"]
    assert set(info["tensor_types"]) == {"F16", "F32"}  # norms stay F32
    assert info["context_length"] == 512
    assert info["chat_template"] == tok.chat_template
    assert (info["bos_token_id"], info["eos_token_id"]) == (tok.bos_token_id, tok.eos_token_id)
    json.dumps(info)  # the CLI prints it as --json


def test_edgetune_keys_are_reported(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "provenance.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_string("edgetune.provenance", '{"run": "abc"}')
    writer.add_uint32("edgetune.schema", 1)
    writer.add_tensor("weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    info = inspect_gguf(path)
    assert info["edgetune.provenance"] == '{"run": "abc"}'
    assert info["edgetune.schema"] == 1
    assert info["tensor_types"] == {"F32": 1}
    assert info["name"] is None and info["file_type"] is None


@pytest.mark.parametrize("keep", [0, 24, 100_000, -1], ids=lambda k: f"keep-{k}")
def test_truncated_file_gives_one_line(tmp_path, tiny_gguf, keep):
    data = tiny_gguf.read_bytes()
    n = keep if keep >= 0 else len(data) + keep
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:n])
    with pytest.raises(ExportError) as err:
        inspect_gguf(cut)
    assert str(cut) in err.value.message
    assert "\n" not in str(err.value)
    assert "truncated or corrupt" in err.value.hint


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("hello world\n" * 100)
    with pytest.raises(ExportError, match="not a readable GGUF file"):
        inspect_gguf(path)


def test_missing_file(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        inspect_gguf(tmp_path / "absent.gguf")
