"""Saving an adapter trained under FSDP.

`model.save_pretrained` on an FSDP-wrapped peft model writes an empty adapter: each rank holds only its shard.
The gathered full state dict (`accelerator.get_state_dict`, a collective every rank must join) does hold the
adapter under clean keys, but peft selects and renames adapter weights by the model's *module* names, which
under FSDP carry wrapper segments wherever the wrap policy put them (`layers.0._fsdp_wrapped_module...`, and
inside the LoRA layers themselves on the GPU host: `lora_A.default._fsdp_wrapped_module.weight`). peft 0.21's
selection then comes back empty, or keeps the adapter name in the keys (`lora_A.default.weight`), which
`PeftModel.from_pretrained` would not load (found on 2 x H200). So the key mapping is read off an empty
(meta-device) copy of the same base with the same adapter, where peft sees unwrapped names.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from edgetune.errors import TrainError


def checkpoint_names(model: Any, adapter_name: str = "default") -> dict[str, str]:
    """{model state-dict key: adapter-file key} as PeftModel.save_pretrained maps them for `model`'s adapter,
    from an empty copy (meta device: no memory) of its base architecture carrying the same adapter config."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.get_base_model().config)
    if hasattr(config, "quantization_config"):  # the skeleton's module names do not depend on NF4
        del config.quantization_config
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
        skeleton = get_peft_model(skeleton, copy.deepcopy(model.peft_config[adapter_name]), adapter_name=adapter_name)
    state = skeleton.state_dict()
    by_id = {id(tensor): key for key, tensor in state.items()}
    selected = get_peft_model_state_dict(skeleton, state_dict=state, adapter_name=adapter_name)
    return {by_id[id(tensor)]: key for key, tensor in selected.items()}


def adapter_state_dict(model: Any, full: dict[str, Any], adapter_name: str = "default") -> dict[str, Any]:
    """The adapter's weights from the model's full (unsharded, wrapper-free) state dict `full`, keyed as
    `PeftModel.save_pretrained` keys them. Raises TrainError when `full` lacks one of them."""
    names = checkpoint_names(model, adapter_name)
    missing = sorted(set(names) - set(full))
    if missing:
        raise TrainError(f"the gathered FSDP state dict lacks {len(missing)} adapter weights (e.g. {missing[0]})",
                         "report this as a bug with the run's artifact.json; train with --no-fsdp (DDP) meanwhile")
    return {saved: full[key] for key, saved in names.items()}


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
