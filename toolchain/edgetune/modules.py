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


def linear_leaf_names(model) -> set[str]:
    """Leaf names of every Linear-like module (nn.Linear, bnb Linear4bit, ...) except the output head."""
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            names.add(name.rsplit(".", 1)[-1])
    return names


def resolve_targets(model, targets: Sequence[str]) -> list[str]:
    """Expand presets and check every target exists; raise ModelError naming the missing ones and suggestions."""
    expanded: list[str] = []
    for t in targets:
        expanded.extend(PRESETS.get(t, [t]))
    if expanded == ["all-linear"]:
        return expanded
    available = linear_leaf_names(model)
    missing = [t for t in expanded if t not in available]
    if missing:
        hints = {m: difflib.get_close_matches(m, sorted(available), n=2) for m in missing}
        near = "; ".join(f"{m} -> {', '.join(h) or '?'}" for m, h in hints.items())
        raise ModelError(
            f"target_modules {missing} are not in this model (closest: {near})",
            f"use some of {sorted(available)} or a preset ({', '.join(PRESETS)})",
        )
    return expanded
