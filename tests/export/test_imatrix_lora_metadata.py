"""Importance matrix, LoRA GGUF and provenance keys, with llama.cpp's own tools on the tiny Llama."""

from __future__ import annotations

import json
import shutil

import pytest

from edgetune.constants import Quant
from edgetune.errors import ExportError
from edgetune.export.imatrix import compute_imatrix, quantize_with_imatrix
from edgetune.export.inspect import inspect_gguf
from edgetune.export.lora import check_loads, convert_lora
from edgetune.export.metadata import add_string_keys
from edgetune.export.quantize import quantize_gguf


def test_provenance_keys_survive_quantization(tmp_path, tiny_gguf):
    f16 = tmp_path / "f16.gguf"
    shutil.copy(tiny_gguf, f16)
    before = inspect_gguf(f16)
    add_string_keys(f16, {"edgetune.provenance": json.dumps({"adapter": "abc"})})
    after = inspect_gguf(f16)
    assert after["edgetune.provenance"] == '{"adapter": "abc"}'
    assert after["chat_template"] == before["chat_template"] and after["n_tensors"] == before["n_tensors"]
    q8 = quantize_gguf(f16, tmp_path / "q8.gguf", Quant.Q8_0)
    assert inspect_gguf(q8)["edgetune.provenance"] == '{"adapter": "abc"}'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_only_edgetune_keys_may_be_added(tmp_path, tiny_gguf):
    f16 = tmp_path / "f16.gguf"
    shutil.copy(tiny_gguf, f16)
    with pytest.raises(ExportError, match="outside edgetune"):
        add_string_keys(f16, {"general.name": "x"})


def test_imatrix_from_text_then_quantize(tmp_path, tiny_gguf, llama_tools):
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(f"The colour of item {i} is blue." for i in range(400)))
    imatrix = compute_imatrix(tiny_gguf, text, tmp_path / "imatrix.gguf", llama_tools, ctx_tokens=128, chunks=4,
                              threads=1)
    assert imatrix.stat().st_size > 0
    out = quantize_with_imatrix(tiny_gguf, tmp_path / "q4.gguf", Quant.Q4_0, imatrix, llama_tools, threads=1)
    assert inspect_gguf(out)["file_type"] == "Q4_0"
    from llama_cpp import Llama

    llm = Llama(str(out), n_ctx=128, verbose=False)
    assert llm.create_completion("The colour", max_tokens=3, temperature=0)["usage"]["completion_tokens"] > 0


def test_imatrix_refuses_empty_text(tmp_path, tiny_gguf, llama_tools):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ExportError, match="empty"):
        compute_imatrix(tiny_gguf, empty, tmp_path / "imatrix.gguf", llama_tools)
    assert not (tmp_path / "imatrix.gguf").exists()


def test_lora_gguf_loads_on_each_quantized_base(tmp_path, tiny_model_dir, tiny_gguf, llama_tools, colour_jsonl):
    from edgetune import basemodel, data, train
    from edgetune.artifacts import Store
    from edgetune.config import DataConfig, ModelConfig, TrainConfig

    store = Store(tmp_path / "store")
    d = data.run(DataConfig(source=str(colour_jsonl), heldout_size=10, train_size=16), store)
    b = basemodel.run(ModelConfig(source=str(tiny_model_dir)), store)
    t = train.run(TrainConfig(method="lora", r=4, alpha=8, max_steps=2, batch_size=8), b, d, store, threads=1)
    lora = convert_lora(t.path / "adapter", tiny_model_dir, tmp_path / "adapter.gguf", llama_tools)
    assert inspect_gguf(lora)["architecture"] == "llama"
    bases = [quantize_gguf(tiny_gguf, tmp_path / f"{q.value}.gguf", q) for q in (Quant.Q8_0, Quant.Q4_0)]
    made = check_loads(lora, [tiny_gguf, *bases], [1, 504, 3137])
    assert set(made) == {"tiny-f16.gguf", "Q8_0.gguf", "Q4_0.gguf"}


def test_lora_refuses_a_folder_without_adapter(tmp_path, tiny_model_dir, llama_tools):
    with pytest.raises(ExportError, match="not a peft adapter"):
        convert_lora(tmp_path, tiny_model_dir, tmp_path / "x.gguf", llama_tools)


def test_licence_may_be_added(tmp_path, tiny_gguf):
    f16 = tmp_path / "f16.gguf"
    shutil.copy(tiny_gguf, f16)
    add_string_keys(f16, {"general.license": "apache-2.0"})
    from edgetune.export.inspect import field_value, read_gguf

    assert field_value(read_gguf(f16), "general.license") == "apache-2.0"
