"""The peft adapter config for `train.adapter`: LoRA, DoRA, rsLoRA or IA3, each of which folds into the base
weights (the merge stage's `merge_and_unload`) so llama.cpp runs the result as a plain model.

Prefix and prompt tuning are refused earlier, by TrainConfig: they learn virtual tokens, not weight changes.
"""

from __future__ import annotations

from typing import Any

from edgetune.config import TrainConfig
from edgetune.modules import resolve_targets


def peft_config(cfg: TrainConfig, model) -> Any:
    """The peft config for this adapter on this model. Raises ModelError when a target module is missing."""
    from peft import IA3Config, LoraConfig

    if cfg.adapter == "ia3":
        targets = resolve_targets(model, cfg.ia3_target_modules)
        feedforward = resolve_targets(model, cfg.ia3_feedforward_modules)
        return IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM")
    targets = resolve_targets(model, cfg.target_modules)
    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none", task_type="CAUSAL_LM",
        target_modules="all-linear" if targets == ["all-linear"] else targets,  # peft takes the preset as a str
        use_dora=cfg.adapter == "dora",
        use_rslora=cfg.adapter == "rslora",
    )


def describe(cfg: TrainConfig) -> str:
    """One line for logs, e.g. 'dora r=16 alpha=32 on q_proj,k_proj,v_proj,o_proj'."""
    if cfg.adapter == "ia3":
        return f"ia3 on {','.join(cfg.ia3_target_modules)} (feed-forward: {','.join(cfg.ia3_feedforward_modules)})"
    return f"{cfg.adapter} r={cfg.r} alpha={cfg.alpha} on {','.join(cfg.target_modules)}"
