"""Each adapter kind trains for real on the tiny Llama, saves, and folds into the base through the merge stage;
the merged model's logits are checked against the adapter model's here as well. Prefix and prompt tuning are
refused at config time with the reason."""

from __future__ import annotations

import json
import math

import pytest
from edgetune import merge, train
from edgetune.artifacts import Store
from edgetune.config import TrainConfig, load_config
from edgetune.errors import ConfigError

from .conftest import FAST

PROBE = "Colour of snow? (#3) white. Colour of coal? black"


def _logits(model, tok):
    import torch

    with torch.inference_mode():
        return model(tok(PROBE, return_tensors="pt").input_ids).logits


@pytest.mark.parametrize("method, adapter", [("lora", "dora"), ("lora", "rslora"), ("lora", "ia3"),
                                             ("qlora", "dora")])
def test_adapter_trains_saves_and_merges(inputs, tmp_path, method, adapter):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_art, data_art = inputs
    store = Store(tmp_path / "store")
    cfg = FAST.model_copy(update={"method": method, "adapter": adapter, "max_steps": 2, "eval_items": 0})
    trained = train.run(cfg, base_art, data_art, store, threads=1)
    assert trained.metrics["adapter"] == adapter and trained.metrics["steps"] == 2
    assert math.isfinite(trained.metrics["loss_last"])

    adapter_dir = trained.file("adapter")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    if adapter == "ia3":
        assert config["peft_type"] == "IA3"
        assert set(config["target_modules"]) == {"k_proj", "v_proj", "down_proj"}
        assert set(config["feedforward_modules"]) == {"down_proj"}
        assert tensors and all("ia3_l" in k for k in tensors)
        assert any((t - 1).abs().max() > 1e-4 for t in tensors.values())  # trained away from the identity
    else:
        assert config["peft_type"] == "LORA"
        assert config["use_dora"] is (adapter == "dora")
        assert config["use_rslora"] is (adapter == "rslora")
        assert any("lora_magnitude_vector" in k for k in tensors) is (adapter == "dora")

    merged = merge.run(base_art, trained, store)  # the stage's own check: logits within merge.MAX_LOGIT_DIFF

    src = base_art.model_dir
    tok = AutoTokenizer.from_pretrained(src)
    base_model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    base_logits = _logits(base_model, tok)
    peft_model = PeftModel.from_pretrained(base_model, adapter_dir).eval()
    if adapter == "rslora":  # the rank-stabilised scale, alpha / sqrt(r), not alpha / r
        from peft.tuners.lora import LoraLayer

        scales = [m.scaling["default"] for m in peft_model.modules() if isinstance(m, LoraLayer)]
        assert scales and scales == pytest.approx([cfg.alpha / math.sqrt(cfg.r)] * len(scales))
    adapted = _logits(peft_model, tok)
    folded = _logits(AutoModelForCausalLM.from_pretrained(merged.file("model_dir"), dtype=torch.float32), tok)
    moved = (adapted - base_logits).abs().max().item()
    diff = (adapted - folded).abs().max().item()
    assert diff < merge.MAX_LOGIT_DIFF and diff < moved / 10, (diff, moved)  # the check is not vacuous


@pytest.mark.parametrize("name, kind", [("prefix", "prefix tuning"), ("prefix_tuning", "prefix tuning"),
                                        ("prompt", "prompt tuning"), ("Prompt-Tuning", "prompt tuning"),
                                        ("p_tuning", "p-tuning")])
def test_unmergeable_adapters_are_refused_with_the_reason(name, kind):
    with pytest.raises(ConfigError) as info:
        TrainConfig(adapter=name)
    assert info.value.message.startswith(f"train.adapter: {kind} is not supported")
    assert "cannot be merged" in info.value.message and "llama.cpp cannot run it" in info.value.message
    assert "adapter: lora" in info.value.hint
    assert info.value.exit_code == 2


def test_refusal_reaches_a_config_file(tmp_path):
    path = tmp_path / "edgetune.yaml"
    path.write_text("train:\n  adapter: prefix\n")
    with pytest.raises(ConfigError, match="prefix tuning is not supported"):
        load_config(path)


def test_ia3_feedforward_modules_must_be_targeted():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must also be in ia3_target_modules"):
        TrainConfig(adapter="ia3", ia3_target_modules=["k_proj", "v_proj"], ia3_feedforward_modules=["down_proj"])


def test_unknown_adapter_is_a_validation_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'lora', 'dora', 'rslora' or 'ia3'"):
        TrainConfig(adapter="loha")
