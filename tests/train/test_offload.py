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
    model.activation_checkpointing_enable({"use_reentrant": False})
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
    """Same gradients as checkpointing on the device, bit for bit (the same kernels on the same values); the
    peak memory falls by about the layer inputs the forward no longer keeps."""
    model = tiny_llama(layers=8, hidden=1024, device="cuda")
    ids = torch.randint(0, 256, (4, 2048), generator=torch.Generator().manual_seed(1)).cuda()

    def peak(fn):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated()

    with torch.autocast("cuda", dtype=torch.bfloat16):
        grads(model, ids)  # warm-up: kernels chosen, allocator primed
        plain, plain_peak = peak(lambda: grads(model, ids))
        hooks = offload.StreamedOffload()
        offload.swap_checkpoint_function(model, offload.streamed_checkpoint(hooks, {"use_reentrant": False}))
        grads(model, ids)
        streamed, streamed_peak = peak(lambda: grads(model, ids))
    assert plain.keys() == streamed.keys() and all(torch.equal(plain[k], streamed[k]) for k in plain)
    layer_input = 4 * 2048 * 1024 * 4  # fp32 embeddings feed the layers here: batch x seq x hidden x 4 bytes
    print(f"peak {plain_peak / 2**20:.0f} MiB -> {streamed_peak / 2**20:.0f} MiB")
    assert plain_peak - streamed_peak > 4 * layer_input  # 8 layer inputs held on the host, at most 2 back at once
