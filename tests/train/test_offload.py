"""train.offload_activations (train/offload.py): the checkpointed layers' saved inputs in pinned host memory,
copied on a side stream. On a CPU there is nothing to offload and the option is a no-op past its config check; the
CUDA tests (opt-in, `-m gpu`, run through the device tool) check that offloading changes no gradient, that the
layer inputs really leave the device, and that the peak memory falls."""

from __future__ import annotations

import pytest
import torch
from edgetune.train import offload
from edgetune.train.args import sft_config

from .conftest import FAST

def tiny_llama(layers: int = 4, hidden: int = 64, device: str = "cpu"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    model = LlamaForCausalLM(cfg).to(device)
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def grads(model, ids) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_trainer_is_given_the_offload_callback_only_on_cuda(tmp_path):
    assert offload.callbacks(False, cuda=True) == [] and offload.callbacks(True, cuda=False) == []
    (cb,) = offload.callbacks(True, cuda=True)
    assert isinstance(cb, offload.OffloadCallback)
    # the Trainer's own checkpointing gets no `offload` key (transformers' save_on_cpu would copy a second time)
    cfg = FAST.model_copy(update={"max_length": 64, "gradient_checkpointing": True, "offload_activations": True})
    assert sft_config(cfg, tmp_path, cuda=False, liger=False).gradient_checkpointing_kwargs == {"use_reentrant": False}


@pytest.mark.parametrize("setting, cuda, recompute, hidden, world, expected", [
    (None, True, True, 4096, 1, True),      # auto: a 7B-class width on one GPU
    (None, True, True, 2048, 1, False),     # auto: too narrow for the copies to hide (0.88x the tok/s on an H100)
    (None, True, True, 4096, 2, False),     # auto: sharded runs keep the Trainer's own checkpointing
    (None, True, False, 4096, 1, False),    # nothing checkpointed, nothing to offload
    (None, False, True, 4096, 1, False),    # CPU: activations already live in host memory
    (None, True, True, None, 1, False),     # a model that names no hidden size
    (True, True, True, 2048, 1, True),      # asked for: always
    (False, True, True, 8192, 1, False),    # refused: never
])
def test_offload_resolves_none_by_the_layer_width(setting, cuda, recompute, hidden, world, expected):
    assert offload.resolve(setting, cuda=cuda, recompute=recompute, hidden_size=hidden, world_size=world) is expected


def test_the_callback_swaps_every_checkpointed_layer_and_changes_no_gradient():
    model = tiny_llama()
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    before = grads(model, ids)
    cb = offload.OffloadCallback()
    cb.on_train_begin(None, None, None, model=model)
    assert cb.layers == 4
    assert all(layer._gradient_checkpointing_func is cb.func for layer in model.model.layers)
    after = grads(model, ids)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_offload_keeps_gradients_and_frees_the_layer_inputs():
    """The gradients of checkpointing on the device, within its own run-to-run noise, and the layer inputs off the
    device between the forward and the backward (the peak on a real QLoRA step: benchmarks/train_throughput.py)."""
    model = tiny_llama(layers=8, hidden=1024, device="cuda")
    ids = torch.randint(0, 256, (4, 2048), generator=torch.Generator().manual_seed(1)).cuda()

    def step() -> tuple[dict[str, torch.Tensor], int]:
        """Gradients, and the device memory the forward leaves held for the backward."""
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        loss = model(input_ids=ids, labels=ids).loss
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # frees blocks whose side-stream copies have finished (record_stream)
        held = torch.cuda.memory_allocated() - before
        loss.backward()
        return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}, held

    with torch.autocast("cuda", dtype=torch.bfloat16):
        again, _ = step()  # also the warm-up: kernels chosen, allocator primed
        plain, plain_held = step()
        offload.swap_checkpoint_function(model, offload.streamed_checkpoint(offload.StreamedOffload(),
                                                                            {"use_reentrant": False}))
        step()
        streamed, streamed_held = step()

    def worst(a, b):  # largest difference relative to the gradient's own scale, over all parameters
        return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)

    # the backward kernels are not bit-reproducible on CUDA (atomic adds), so two plain runs set the noise floor
    noise, diff = worst(again, plain), worst(streamed, plain)
    layer_input = 4 * 2048 * 1024 * 4  # the layers' fp32 residual stream here: batch x seq x hidden x 4 bytes
    print(f"gradient difference: plain vs plain {noise:.2e}, offloaded vs plain {diff:.2e}; held for the backward: "
          f"{plain_held / 2**20:.0f} MiB -> {streamed_held / 2**20:.0f} MiB")
    assert plain.keys() == streamed.keys() and diff <= max(4 * noise, 1e-6)
    assert plain_held - streamed_held >= 7 * layer_input  # 8 layer inputs held on the host (the first's copy is too)
