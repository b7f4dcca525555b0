"""Run by tests/train/test_sharded.py under torchrun: a tiny peft model wrapped in real FSDP on 2 CPU processes
(gloo), one optimiser step, the full state dict gathered as accelerate gathers it, and the adapter selected from
it by edgetune.train.sharded. Rank 0 writes what it found to OUT (safetensors + a JSON summary)."""

from __future__ import annotations

import functools
import json
import sys

import torch
import torch.distributed as dist
from edgetune.config import TrainConfig
from edgetune.train.adapters import peft_config
from edgetune.train.sharded import adapter_state_dict
from peft import get_peft_model, get_peft_model_state_dict
from peft.utils.other import fsdp_auto_wrap_policy
from safetensors.torch import save_file
from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer


def main(model_dir: str, adapter: str, policy: str, out: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, peft_config(TrainConfig(method="lora", adapter=adapter, r=4, alpha=8), model))
    # "layers": decoder layers only (accelerate's TRANSFORMER_BASED_WRAP); "peft": peft's policy, which also wraps
    # every trainable leaf (the LoRA Linears), as the adapter was wrapped on the GPU host
    layers = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer})
    wrapped = FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True,
                                       auto_wrap_policy=layers if policy == "layers" else fsdp_auto_wrap_policy(model))
    opt = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.5)
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(dist.get_rank()))
    wrapped(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    policy = FullStateDictConfig(rank0_only=True, offload_to_cpu=False)
    with FullyShardedDataParallel.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, policy):
        full = wrapped.state_dict()
    if dist.get_rank() == 0:
        ours = adapter_state_dict(model, full)
        save_file({k: v.contiguous() for k, v in ours.items()}, f"{out}/adapter.safetensors")
        summary = {"full_keys": len(full), "peft_own": len(get_peft_model_state_dict(model, state_dict=full)),
                   "wrapped_names": sum("_fsdp_wrapped_module" in n for n, _ in model.named_parameters())}
        with open(f"{out}/summary.json", "w") as fh:
            json.dump(summary, fh)
        torch.save(full, f"{out}/full.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])
