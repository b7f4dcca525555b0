"""Saving an adapter trained under FSDP.

`model.save_pretrained` on an FSDP-wrapped peft model writes an empty adapter: each rank holds only its shard.
The gathered full state dict (`accelerator.get_state_dict`, a collective every rank must join) does hold the
adapter, but peft 0.21 selects adapter weights by the *module* names of the tuner layers, and under FSDP those
carry wrapper segments (`layers.0._fsdp_wrapped_module.self_attn...`) that the gathered keys do not: its
selection comes back empty (found on 2 x H200). `adapter_state_dict` hands peft the gathered tensors under the
wrapped names, so peft's own per-method selection and renaming apply, then drops the wrapper segments.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def unwrapped(name: str) -> str:
    """A parameter name as the gathered state dict spells it: without FSDP / checkpoint / compile wrappers."""
    for segment in WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def adapter_state_dict(model: Any, full: dict[str, Any], adapter_name: str = "default") -> dict[str, Any]:
    """The adapter's weights, keyed as `PeftModel.save_pretrained` keys them, from the model's full (unsharded,
    wrapper-free) state dict `full`. `model` is the peft model whose modules may be FSDP-wrapped."""
    from peft import get_peft_model_state_dict

    wrapped = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]
    renamed = {name: full[unwrapped(name)] for name in wrapped if unwrapped(name) in full}
    selected = get_peft_model_state_dict(model, state_dict=renamed, adapter_name=adapter_name)
    return {unwrapped(k): v for k, v in selected.items()}


def gather_adapter(trainer: Any, model: Any) -> dict[str, Any] | None:
    """Under FSDP: the adapter's weights on the main process, {} on the others (every rank must call this:
    gathering is a collective). None when the trainer is not sharded (save_pretrained works as it is)."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    full = trainer.accelerator.get_state_dict(trainer.model)  # FULL_STATE_DICT: whole tensors on rank 0 only
    if not trainer.accelerator.is_main_process:
        return {}
    return {k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(model, full).items()}


def save_adapter(model: Any, state: dict[str, Any], path: Path, adapter_name: str = "default") -> None:
    """Write `state` (from adapter_state_dict) as peft writes an adapter: adapter_model.safetensors plus
    adapter_config.json, loadable by PeftModel.from_pretrained."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.peft_config[adapter_name])
    config.inference_mode = True  # as save_pretrained writes it: a saved adapter loads frozen
    config.save_pretrained(str(path))
