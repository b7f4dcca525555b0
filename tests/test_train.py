"""The train stage for real (peft + trl on CPU) on the tiny Llama and a 32-row toy task: loss, adapter files,
determinism, the cache, target checks, presets, the trainable-share warning and the QLoRA (NF4) path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from edgetune import train
from edgetune.artifacts import Store
from edgetune.config import TrainConfig
from edgetune.errors import ModelError
from edgetune.train import base, liger

ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}
MLP = {"gate_proj", "up_proj", "down_proj"}
# lr 1e-2 and no warm-up move the random tiny model's loss visibly within 8 steps (3e-2 overshoots)
CFG = TrainConfig(method="lora", r=8, alpha=16, max_steps=8, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0,
                  seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, inputs):
    base_art, data_art = inputs
    return train.run(CFG, base_art, data_art, Store(tmp_path_factory.mktemp("train-store")), threads=1)


def train_once(cfg: TrainConfig, inputs, store_dir: Path):
    base_art, data_art = inputs
    return train.run(cfg, base_art, data_art, Store(store_dir), threads=1)


def adapter_tensors(artifact):
    from safetensors.torch import load_file

    return load_file(artifact.file("adapter") / "adapter_model.safetensors")


def adapter_config(artifact) -> dict:
    return json.loads((artifact.file("adapter") / "adapter_config.json").read_text())


def adapted_modules(tensors) -> set[str]:
    """Leaf module names that carry LoRA weights, e.g. {"q_proj", "v_proj"}."""
    return {key.split(".lora_")[0].rsplit(".", 1)[-1] for key in tensors}


# --- a plain fp32 LoRA run --------------------------------------------------------------------------------------


def test_loss_falls(trained):
    rows = [json.loads(line) for line in trained.file("log").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    losses = [r["loss"] for r in rows]
    assert losses[-1] < losses[0] - 0.2, losses
    assert trained.metrics["loss_last"] < trained.metrics["loss_first"]
    assert trained.metrics["steps"] == 8


def test_adapter_files_carry_the_config(trained):
    adapter = trained.file("adapter")
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in adapter.iterdir()}
    config = adapter_config(trained)
    assert (config["r"], config["lora_alpha"]) == (CFG.r, CFG.alpha)
    assert set(config["target_modules"]) == ATTENTION
    tensors = adapter_tensors(trained)
    assert adapted_modules(tensors) == ATTENTION
    assert {t.shape[0] for k, t in tensors.items() if "lora_A" in k} == {CFG.r}
    # every B starts at zero; after training none is
    assert all(t.abs().max() > 0 for k, t in tensors.items() if "lora_B" in k)


def test_record_describes_the_run(trained):
    assert trained.record["params"]["method"] == "lora"
    assert trained.record["params"]["r"] == CFG.r
    assert {"torch", "transformers", "peft", "trl"} <= set(trained.record["tools"])
    metrics = trained.metrics
    assert metrics["n_examples"] == 32
    assert metrics["device"] == "cpu"
    # 2 layers x r x (in + out) of q (64→64), k (64→32), v (64→32), o (64→64)
    assert metrics["trainable_params"] == 2 * CFG.r * (128 + 96 + 96 + 128)
    assert 0 < metrics["trainable_share"] < train.TRAINABLE_WARN_SHARE
    assert metrics["adapter"] == "lora" and metrics["oom_fallback"] == [] and metrics["resumed_from_step"] is None
    assert metrics["gradient_checkpointing"] is False  # None means off on CPU
    # real (non-padding) tokens: at least one per example per epoch, fewer than batch x max_length per step
    assert metrics["max_length"] % 64 == 0 and "99th percentile" in metrics["max_length_why"]  # sized from the data
    assert 2 * 32 < metrics["tokens"] < 8 * CFG.batch_size * metrics["max_length"]
    assert metrics["tokens_per_s"] > 0


def test_each_epoch_is_evaluated_on_the_heldout_split(trained):
    """32 examples, batch 8: 4 steps an epoch, so 8 steps are 2 epochs, each followed by the held-out loss (all
    10 held-out rows) and the greedy exact match on min(eval_items, 10) of them."""
    rows = [json.loads(line) for line in trained.file("eval_log").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(1.0, 4), (2.0, 8)]
    for row in rows:
        assert row["n"] == 10 and 0.0 <= row["accuracy"] <= 1.0
        assert 0 < row["eval_loss"] < 20
    assert rows[1]["eval_loss"] < rows[0]["eval_loss"]  # lr 1e-2 moves the held-out loss too
    assert trained.metrics["epochs"] == rows
    assert trained.metrics["n_heldout_loss"] == 10
    check = trained.metrics["loss_check"]
    assert check["judged"] and check["falling"] and check["steps"] == 4



def test_second_call_returns_the_cached_artifact(trained, inputs):
    base_art, data_art = inputs
    weights = trained.file("adapter") / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = train.run(CFG, base_art, data_art, Store(trained.path.parents[1]), threads=1)
    assert again.cached
    assert (again.key, again.path) == (trained.key, trained.path)
    assert weights.stat().st_mtime_ns == stamp


def test_same_seed_gives_bit_identical_adapters(trained, inputs, tmp_path):
    import torch

    rerun = train_once(CFG, inputs, tmp_path / "store")
    assert not rerun.cached and rerun.path != trained.path
    first, second = adapter_tensors(trained), adapter_tensors(rerun)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert rerun.file("log").read_text() == trained.file("log").read_text()


def test_auto_method_is_lora_on_a_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("auto picks qlora where CUDA is present")
    assert train.resolve_method(TrainConfig()) == "lora"


# --- target modules ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("targets, missing, suggestion", [
    (["q_prj", "v_proj"], "q_prj", "q_proj"),
    (["query", "key"], "query", "?"),
    (["attention", "gate_prj"], "gate_prj", "gate_proj"),
])
def test_absent_targets_fail_before_any_artifact(inputs, tmp_path, targets, missing, suggestion):
    store_dir = tmp_path / "store"
    with pytest.raises(ModelError) as info:
        train_once(CFG.model_copy(update={"target_modules": targets}), inputs, store_dir)
    err = info.value
    assert missing in err.message
    assert f"{missing} -> {suggestion}" in err.message
    assert "q_proj" in err.hint and "attention+mlp" in err.hint  # the real names and the presets
    assert not store_dir.exists() or not any(store_dir.rglob("*")), list(store_dir.rglob("*"))


@pytest.mark.parametrize("targets, kind", [(["input_layernorm"], "LlamaRMSNorm"), (["q_proj", "act_fn"], "SiLUActivation")])
def test_a_target_that_is_not_a_linear_layer_is_named_with_its_type(inputs, tmp_path, targets, kind):
    with pytest.raises(ModelError) as info:
        train_once(CFG.model_copy(update={"target_modules": targets}), inputs, tmp_path / "store")
    assert f"{targets[-1]} is a {kind}, not a linear layer" in info.value.message and "q_proj" in info.value.hint
    assert not (tmp_path / "store" / "train").exists()


def test_gpt2_conv1d_projections_are_adaptable(tokenizer_dir):
    """GPT-2's attention and MLP projections are transformers' Conv1D, not nn.Linear: still LoRA targets."""
    from edgetune.modules import resolve_targets
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    assert resolve_targets(model, ["c_attn", "c_proj"]) == ["c_attn", "c_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    assert peft_model.get_nb_trainable_parameters()[0] == 2 * (32 + 96)


def test_a_model_without_linear_layers_is_refused():
    import torch
    from edgetune.modules import resolve_targets

    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(10, 4)

    with pytest.raises(ModelError, match="Bag has no linear layers LoRA can adapt .*EmbeddingBag"):
        resolve_targets(Bag(), ["all-linear"])


@pytest.mark.parametrize("preset, expected", [
    ("attention", ATTENTION),
    ("attention+mlp", ATTENTION | MLP),
    ("all-linear", ATTENTION | MLP),
])
def test_presets_expand_to_the_model_modules(inputs, tmp_path, caplog, preset, expected):
    cfg = CFG.model_copy(update={"target_modules": [preset], "max_steps": 1})
    with caplog.at_level(logging.WARNING, logger="edgetune"):
        art = train_once(cfg, inputs, tmp_path / "store")
    # peft writes all-linear out as full module paths; compare leaf names
    assert {name.rsplit(".", 1)[-1] for name in adapter_config(art)["target_modules"]} == expected
    assert adapted_modules(adapter_tensors(art)) == expected
    assert "trainable" not in caplog.text  # r=8 stays far below 5% of the model


def test_large_trainable_share_warns(inputs, tmp_path, caplog):
    cfg = CFG.model_copy(update={"r": 128, "alpha": 128, "target_modules": ["attention+mlp"], "max_steps": 1})
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        art = train_once(cfg, inputs, tmp_path / "store")
    assert art.metrics["trainable_share"] > train.TRAINABLE_WARN_SHARE
    warnings = [r for r in caplog.records if r.name == "edgetune.train" and "trainable (over 5%)" in r.getMessage()]
    assert len(warnings) == 1
    assert "train.r=128" in warnings[0].getMessage()


# --- QLoRA (NF4) on CPU -----------------------------------------------------------------------------------------


def test_qlora_trains_on_cpu(inputs, tmp_path, caplog):
    cfg = CFG.model_copy(update={"method": "qlora", "max_steps": 3})
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        art = train_once(cfg, inputs, tmp_path / "store")
    assert art.metrics["method"] == "qlora"
    assert art.record["params"]["method"] == "qlora"
    assert "method=qlora on CPU" in caplog.text
    tensors = adapter_tensors(art)
    # the trap (NOTES.md) leaves these exactly zero on this model: no gradient reaches them
    layer0_b = {k: t for k, t in tensors.items() if ".layers.0." in k and "lora_B" in k}
    assert len(layer0_b) == len(ATTENTION)
    for name, t in layer0_b.items():
        assert t.abs().max() > 1e-4, name


def _layer0_lora_grad_norms(model_dir: Path, method: str, ids) -> dict[str, float]:
    """Load as train does, run an inference pass first (a baseline eval would), then one backward pass."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = base.load_model(model_dir, method, cuda=False)
    model.eval()
    with torch.inference_mode():
        model(ids)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=sorted(ATTENTION),
                                             task_type="CAUSAL_LM"))
    model.train()
    model(ids, labels=ids).loss.backward()
    return {name: p.grad.norm().item() for name, p in model.named_parameters()
            if ".layers.0." in name and "lora_B" in name}


def test_nf4_gradients_survive_an_inference_pass(tiny_model_dir):
    """bitsandbytes on CPU repacks NF4 weights for inference on the first no-grad forward, after which no
    gradient flows back through them (NOTES.md). train.base.load_model turns that off; compare with fp32 LoRA."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok(["Colour of grass? green", "Colour of snow? white"], return_tensors="pt", padding=True).input_ids
    nf4 = _layer0_lora_grad_norms(tiny_model_dir, "qlora", ids)
    fp32 = _layer0_lora_grad_norms(tiny_model_dir, "lora", ids)
    assert nf4.keys() == fp32.keys() and len(nf4) == len(ATTENTION)
    for name in nf4:
        assert fp32[name] > 0
        assert 0.5 < nf4[name] / fp32[name] < 2.0, (name, nf4[name], fp32[name])


def test_liger_style_global_patches_are_undone_after_training():
    """Liger replaces classes and forwards in transformers' modeling module for the whole process (found on an
    H200: the CPU merge then ran a Triton kernel). The train stage restores the module afterwards."""
    import transformers.models.llama.modeling_llama as modeling

    norm, forward, rope = modeling.LlamaRMSNorm, modeling.LlamaForCausalLM.forward, modeling.apply_rotary_pos_emb
    with liger.restored_modeling_module("llama"):
        modeling.LlamaRMSNorm = object
        modeling.LlamaForCausalLM.forward = lambda self, *a, **k: None
        modeling.apply_rotary_pos_emb = None
    assert modeling.LlamaRMSNorm is norm
    assert modeling.LlamaForCausalLM.forward is forward
    assert modeling.apply_rotary_pos_emb is rope
