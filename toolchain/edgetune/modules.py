"""Checking LoRA target modules against the real model, the tutorial's "wrong modules" error made impossible."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from edgetune.errors import ModelError

PRESETS = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "attention+mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "all-linear": ["all-linear"],
}


def _adaptable(module) -> bool:
    """Layers LoRA adapts: nn.Linear (bitsandbytes' Linear4bit is one) and transformers' Conv1D (GPT-2's
    projections, a transposed linear layer that peft handles with fan_in_fan_out)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


def linear_leaf_names(model) -> set[str]:
    """Leaf names of every adaptable linear layer (see _adaptable) except the output head."""
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
            if _adaptable(module) and not name.endswith("lm_head")}


def resolve_targets(model, targets: Sequence[str]) -> list[str]:
    """Expand presets and check every target is a linear layer of this model; raise ModelError naming the
    missing ones with suggestions, or the layer type of those that exist but cannot be adapted."""
    expanded: list[str] = []
    for t in targets:
        expanded.extend(PRESETS.get(t, [t]))
    available = linear_leaf_names(model)
    if not available:
        kinds = sorted({type(m).__name__ for _, m in model.named_modules() if not list(m.children())})[:6]
        raise ModelError(f"{type(model).__name__} has no linear layers LoRA can adapt (its layers: {', '.join(kinds)})",
                         "pick a transformer decoder model (Llama, Mistral, Qwen, Phi, GPT-2 ...)")
    if expanded == ["all-linear"]:
        return expanded
    missing = [t for t in expanded if t not in available]
    if missing:
        kinds = {name.rsplit(".", 1)[-1]: type(module).__name__ for name, module in model.named_modules()}
        wrong_kind = {m: kinds[m] for m in missing if m in kinds}
        if wrong_kind:
            listed = "; ".join(f"{m} is a {k}" for m, k in wrong_kind.items())
            raise ModelError(f"target_modules: {listed}, not a linear layer, and LoRA adapts only linear layers",
                             f"use some of {sorted(available)} or a preset ({', '.join(PRESETS)})")
        hints = {m: difflib.get_close_matches(m, sorted(available), n=2) for m in missing}
        near = "; ".join(f"{m} -> {', '.join(h) or '?'}" for m, h in hints.items())
        raise ModelError(
            f"target_modules {missing} are not in this model (closest: {near})",
            f"use some of {sorted(available)} or a preset ({', '.join(PRESETS)})",
        )
    return expanded
