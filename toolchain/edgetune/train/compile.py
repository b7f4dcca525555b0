"""train.compile_layers: torch.compile of each decoder layer's parts (attention, MLP, norms), not the whole model.

Regional compilation: every decoder layer has the same code, so torch.compile traces one layer once and the others
reuse that graph (their weights are graph inputs); compiling the whole model would trace all of it and break at
the loss. What it buys is fewer, fused kernels (the NF4 matmuls, the LoRA branch, RoPE, the norms), which matters
where a step is many small kernels rather than a few big matmuls.

The parts are compiled, not the layer itself: transformers checkpoints a layer's `__call__` in some 5.x releases
and its `forward` in others, and the compiled code must run *inside* the checkpoint (so the recompute replays it
and only the layer's input is kept) and outside the checkpoint function that train/offload.py swaps in. A layer's
direct children are inside both.

The compile happens in a TrainerCallback at train begin, after the Trainer has applied Liger (whose kernels it
would otherwise try to trace) and enabled checkpointing, as offload.py's swap does.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger("edgetune.train")

# Liger's layer kernels (RMSNorm, SwiGLU, RoPE) are replaced by compiled stock code; its fused linear cross-entropy
# stays: it is outside the layers and keeps the [tokens x vocab] logits from ever existing
LIGER_WITH_COMPILE = {"rope": False, "rms_norm": False, "swiglu": False, "fused_linear_cross_entropy": True,
                      "cross_entropy": False}


def compile_layer_parts(model: Any, **compile_kwargs: Any) -> int:
    """torch.compile every direct child of every decoder layer (transformers' GradientCheckpointingLayer), in
    place; returns how many layers. A part already compiled is left as it is (a resumed or retried run)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = 0
    for module in model.modules():
        if not isinstance(module, GradientCheckpointingLayer):
            continue
        for part in module.children():
            if getattr(part, "_compiled_call_impl", None) is None:
                part.compile(**compile_kwargs)
        layers += 1
    return layers


def uncompile_layer_parts(model: Any) -> None:
    """Back to eager code: what compile_layer_parts did, undone (nn.Module.compile keeps the compiled call in
    `_compiled_call_impl`, which `__call__` prefers while it is set)."""
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


class CompileCallback(TrainerCallback):
    """Compiles the decoder layers' parts when training begins and undoes it when training ends, so what runs the
    trained model later in this process (the merge, the evals: new shapes, no gradients) runs stock code and
    pays no recompiles. `layers` says how many layers were compiled."""

    def __init__(self, **compile_kwargs: Any):
        self.compile_kwargs = compile_kwargs
        self.layers = 0

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.layers = compile_layer_parts(model, **self.compile_kwargs)
        log.info("torch.compile: %d decoder layers compiled (train.compile_layers)", self.layers)

    def on_train_end(self, args, state, control, model=None, **kw):
        uncompile_layer_parts(model)


def resolve(setting: bool | None, *, cuda: bool) -> bool:
    """Whether a training run compiles its layers: the config's choice, or for None, off (see TrainConfig)."""
    if setting is not None:
        return setting
    return False


def callbacks(compile_layers: bool) -> list[TrainerCallback]:
    """The callbacks train.compile_layers needs."""
    return [CompileCallback()] if compile_layers else []
