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
from tests.helpers import generated_tokens


def test_provenance_keys_survive_quantization(tmp_path, tiny_gguf, llama_tools):
    f16 = tmp_path / "f16.gguf"
    shutil.copy(tiny_gguf, f16)
    before = inspect_gguf(f16)
    add_string_keys(f16, {"edgetune.provenance": json.dumps({"adapter": "abc"})})
    after = inspect_gguf(f16)
    assert after["edgetune.provenance"] == '{"adapter": "abc"}'
    assert after["chat_template"] == before["chat_template"] and after["n_tensors"] == before["n_tensors"]
    q8 = quantize_gguf(f16, tmp_path / "q8.gguf", Quant.Q8_0, llama_tools)
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
    assert generated_tokens(out, 3) > 0


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
    bases = [quantize_gguf(tiny_gguf, tmp_path / f"{q.value}.gguf", q, llama_tools) for q in (Quant.Q8_0, Quant.Q4_0)]
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


def _adapter(tmp_path, tiny_model_dir, **lora_kwargs):
    """A peft adapter with random (non-zero) B, so it changes the logits, and the model it came from."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, **lora_kwargs))
    peft_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter", peft_model


def test_rslora_gguf_keeps_peft_scale(tmp_path, tiny_model_dir, tiny_gguf, llama_tools):
    """llama.cpp scales by alpha/r, peft's rsLoRA by alpha/sqrt(r): the GGUF must reproduce peft's logits."""
    import numpy as np
    import torch

    from edgetune.runtimes import LlamaCppRuntime

    adapter, peft_model = _adapter(tmp_path, tiny_model_dir, use_rslora=True)
    ids = [1, 504, 3137, 288, 1145, 30]
    with torch.no_grad():
        want = peft_model(torch.tensor([ids])).logits[0].numpy()
        with peft_model.disable_adapter():
            base = peft_model(torch.tensor([ids])).logits[0].numpy()
    lora = convert_lora(adapter, tiny_model_dir, tmp_path / "rslora.gguf", llama_tools)
    with LlamaCppRuntime(tiny_gguf, lora_path=lora, n_ctx=64, n_threads=1) as runtime:
        got = runtime.logits(ids)
    moved = np.abs(want - base).max()
    assert np.abs(got - want).max() < 0.1 * moved  # F16 rounding only, far below the adapter's own effect
    assert json.loads((adapter / "adapter_config.json").read_text())["use_rslora"] is True  # user's file untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kind", ["dora", "ia3"])
def test_lora_gguf_refuses_dora_and_ia3_with_the_reason(tmp_path, tiny_model_dir, llama_tools, kind):
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    if kind == "dora":
        adapter, _ = _adapter(tmp_path, tiny_model_dir, use_dora=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        get_peft_model(model, IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])
                       ).save_pretrained(tmp_path / "adapter")
        adapter = tmp_path / "adapter"
    with pytest.raises(ExportError, match="no llama.cpp LoRA form") as err:
        convert_lora(adapter, tiny_model_dir, tmp_path / "x.gguf", llama_tools)
    assert "merged GGUF" in err.value.hint and not (tmp_path / "x.gguf").exists()
