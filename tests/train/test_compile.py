"""train.compile_layers (train/compile.py): torch.compile of each decoder layer's parts, inside the gradient
checkpoint. On a CPU for real (torch.compile runs there too): the compiled layers must give the uncompiled
gradients, on the NF4 (QLoRA) path as well, trace without graph breaks, share one graph per part across the layers,
and replay the same LoRA dropout masks in the checkpoint's recompute. What it buys on a GPU:
benchmarks/results-train-throughput-compile-2026-12-07.log."""

from __future__ import annotations

import pytest
import torch
from edgetune.train import compile as layer_compile
from edgetune.train.args import sft_config

from .conftest import FAST

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_the_trainer_is_given_the_compile_callback_only_when_asked():
    assert layer_compile.callbacks(False) == []
    (cb,) = layer_compile.callbacks(True)
    assert isinstance(cb, layer_compile.CompileCallback)


@pytest.mark.parametrize("setting, cuda, hidden, world, offloaded, expected", [
    (None, True, 2048, 1, False, True),    # auto: the Llama-3.2-1B width, where it won on an H100
    (None, True, 4096, 1, False, False),   # auto: the Mistral-7B width, where it won nothing
    (None, True, 576, 1, False, False),    # auto: narrower (SmolLM2-135M) was not measured; short runs
    (None, True, 3072, 1, False, True),    # auto: between the two measured widths (Llama-3.2-3B)
    (None, True, None, 1, False, False),   # a model that names no hidden size
    (None, True, 2048, 2, False, False),   # sharded or data-parallel runs: not measured
    (None, True, 2048, 1, True, False),    # with the streamed offload: not measured
    (None, False, 2048, 1, False, False),  # a CPU pays the compile for little
    (True, False, 8192, 4, True, True),    # asked for: always (the tests below run it on a CPU)
    (False, True, 2048, 1, False, False),
])
def test_compile_resolves(setting, cuda, hidden, world, offloaded, expected):
    assert layer_compile.resolve(setting, cuda=cuda, hidden_size=hidden, world_size=world,
                                 offloaded=offloaded) is expected


def test_liger_patches_no_layer_when_the_layers_are_compiled(tmp_path):
    cfg = FAST.model_copy(update={"max_length": 64})
    args = sft_config(cfg, tmp_path, cuda=False, liger=True)
    assert args.use_liger_kernel and args.liger_kernel_config is None  # all of Liger
    layer_compile.keep_liger_off_the_layers(args)
    # Liger still on (TRL's fused loss on the LM head), but transformers patches nothing with it; TRL 1.16 refuses
    # fused_linear_cross_entropy here (it fuses the head itself), as found on the H100
    assert args.use_liger_kernel and not any(args.liger_kernel_config.values())
    off = sft_config(cfg, tmp_path, cuda=False, liger=False)
    layer_compile.keep_liger_off_the_layers(off)
    assert off.liger_kernel_config is None


def _peft_model(tmp_path, method: str, dropout: float, cuda: bool = False):
    """A 3-layer Llama (hidden 64) saved and loaded through the train stage's own loader, LoRA on q/k/v/o with
    non-zero B (at init B is zero and no gradient would reach A or the inputs), checkpointing as the Trainer sets it."""
    from edgetune.train.base import load_model
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    src = tmp_path / "tiny"
    if not src.is_dir():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        LlamaForCausalLM(cfg).save_pretrained(src)
    torch.manual_seed(0)
    model = get_peft_model(load_model(src, method, cuda=cuda),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    return model


def _grads(model, ids, seed: int = 0) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.is_cuda):  # as the Trainer's bf16 does
        model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max()) for k in a)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_compiled_layers_give_the_uncompiled_gradients(tmp_path, method):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _peft_model(tmp_path, method, dropout=0.0)
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    eager = _grads(model, ids)
    cb = layer_compile.CompileCallback()
    cb.on_train_begin(None, None, None, model=model)
    assert cb.layers == 3
    layers = model.base_model.model.model.layers
    assert all(part._compiled_call_impl is not None for layer in layers for part in layer.children())
    compiled = _grads(model, ids)
    assert counters["stats"]["calls_captured"] > 0  # torch.compile really ran the layers
    assert _max_rel_diff(eager, compiled) < 1e-4
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    # one graph per kind of part (attention, MLP, norm), shared by the three layers; none per layer or per step
    assert counters["stats"]["unique_graphs"] <= 3
    again = _grads(model, ids)
    assert counters["stats"]["unique_graphs"] <= 3 and _max_rel_diff(compiled, again) < 1e-6
    # passes without gradients (held-out loss, generation) run eager: other shapes, no new graphs
    captured = counters["stats"]["calls_captured"]
    with torch.no_grad():
        model(input_ids=ids[:, :9], labels=ids[:, :9])
    assert counters["stats"]["calls_captured"] == captured
    cb.on_train_end(None, None, None, model=model)  # eager again for the merge and evals after training
    assert not any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def test_a_part_torch_compile_fails_on_runs_eager_with_a_warning(tmp_path, caplog):
    """An architecture torch.compile cannot handle must not end the run (auto turns compiling on): the part falls
    back to its eager code, once, with a warning naming the way out."""

    def failing_backend(gm, example_inputs):
        raise RuntimeError("no kernel for this op")

    torch._dynamo.reset()
    model = _peft_model(tmp_path, "lora", dropout=0.0)
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    eager = _grads(model, ids)
    layer_compile.compile_layer_parts(model, backend=failing_backend)
    with caplog.at_level("WARNING", logger="edgetune.train"):
        fallen_back = _grads(model, ids)
    assert _max_rel_diff(eager, fallen_back) < 1e-6
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert warnings and all("train.compile_layers: false" in w for w in warnings)
    assert len(warnings) <= 3 * 4  # at most once per part, not once per call
    caplog.clear()
    _grads(model, ids)
    assert not [r for r in caplog.records if "torch.compile failed" in r.getMessage()]


def test_the_recompute_replays_the_compiled_dropout_masks(tmp_path):
    """Checkpointing recomputes each layer in the backward; with LoRA dropout in the compiled code, the recompute
    must draw the forward's masks again, or the gradients belong to no forward at all. Same seed, same masks: the
    checkpointed run must give the gradients of the run that keeps its activations."""
    torch._dynamo.reset()
    model = _peft_model(tmp_path, "lora", dropout=0.5)
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    layer_compile.compile_layer_parts(model)
    checkpointed = _grads(model, ids, seed=7)
    model.gradient_checkpointing_disable()
    kept = _grads(model, ids, seed=7)
    other_masks = _grads(model, ids, seed=8)
    assert _max_rel_diff(checkpointed, kept) < 1e-4
    assert _max_rel_diff(kept, other_masks) > 1e-2  # the dropout really acts: other masks, other gradients


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_nf4_layers_compile_without_graph_breaks_and_keep_the_gradients():
    """bitsandbytes' CUDA NF4 matmul (its torch custom ops) and peft's LoRA traced in one graph per part, bf16
    autocast as in training; the gradients those of the eager layers within bf16's rounding."""
    import tempfile
    from pathlib import Path

    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _peft_model(Path(tempfile.mkdtemp()), "qlora", dropout=0.0, cuda=True)
    ids = torch.randint(0, 256, (2, 128), generator=torch.Generator().manual_seed(1)).cuda()
    eager = _grads(model, ids)
    layer_compile.compile_layer_parts(model)
    compiled = _grads(model, ids)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert 0 < counters["stats"]["unique_graphs"] <= 3
    assert _max_rel_diff(eager, compiled) < 5e-2


def test_the_train_stage_compiles_records_it_and_learns_what_it_learns_uncompiled(inputs, tmp_path):
    """Through the real stage (SFTTrainer, the callback at train begin): the same losses as without compiling
    (fp32, no dropout), the resolved setting in the metrics, and the same cache key (it changes no adapter)."""
    import json

    from edgetune import train
    from edgetune.artifacts import Store

    torch._dynamo.reset()
    base_art, data_art = inputs
    cfg = FAST.model_copy(update={"batch_size": 4, "max_length": 64, "dropout": 0.0, "max_steps": 3,
                                  "eval_items": 0, "save_steps": 0})
    runs = [train.run(cfg.model_copy(update={"compile_layers": on}), base_art, data_art, Store(tmp_path / str(on)),
                      threads=1) for on in (False, True)]
    assert [a.metrics["compile_layers"] for a in runs] == [False, True]
    losses = [[json.loads(line)["loss"] for line in a.file("log").read_text().splitlines()] for a in runs]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], abs=1e-4)
    assert train.stage._key_params(cfg.model_copy(update={"compile_layers": True}), "lora") == \
        train.stage._key_params(cfg, "lora")
