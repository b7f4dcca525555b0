"""The base model for training: which precision (resolve_method) and loading it in that precision."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgetune.config import TrainConfig
from edgetune.errors import ConfigError


CUDA_EXTRA = "pip install 'edgetune[cuda]'"


def resolve_method(cfg: TrainConfig) -> str:
    """auto → qlora only where NF4 pays off (CUDA with bitsandbytes); a CPU gets fp32 LoRA.

    bitsandbytes is optional (the `[cuda]` extra): raises ConfigError when `qlora` is asked for without it."""
    import importlib.util

    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if cfg.method == "qlora" and not has_bnb:
        raise ConfigError("train.method qlora needs bitsandbytes, which is not installed",
                          f"{CUDA_EXTRA}, or set train.method: lora")
    if cfg.method != "auto":
        return cfg.method
    import torch

    return "qlora" if torch.cuda.is_available() and has_bnb else "lora"


def load_model(path: Path, method: str, cuda: bool):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if cuda else torch.float32
        sharded = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")  # set by accelerate launch
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            # FSDP flattens each wrapped layer into one tensor of one dtype: pack NF4 bytes in the bf16 of the
            # rest, and let FSDP place the shards (no device_map)
            **({"bnb_4bit_quant_storage": compute} if sharded else {}),
        )
        kwargs["dtype"] = compute
        if sharded and cuda and "LOCAL_RANK" in os.environ:
            # without a device_map, transformers puts the NF4 weights on the *current* CUDA device, which is
            # cuda:0 in every rank until the Trainer sets it; FSDP then refuses rank 1's cuda:0 weights (2 x H200)
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        if not sharded:  # each DDP process holds its NF4 copy on its own GPU (accelerate sets LOCAL_RANK)
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))} if cuda else {"": "cpu"}
    else:
        kwargs["dtype"] = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if method == "qlora" and not cuda:
        # bitsandbytes on CPU repacks NF4 weights into an inference-only format on first use, after which
        # layer gradients silently vanish (NOTES.md); keep the trainable format.
        import bitsandbytes as bnb

        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False
    return model
