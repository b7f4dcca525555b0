"""train.compile_layers: torch.compile of each decoder layer's parts (attention, MLP, norms), not the whole model.

Regional compilation: every decoder layer has the same code, so torch.compile traces one layer once and the others
reuse that graph (their weights are graph inputs); compiling the whole model would trace all of it and break at
the loss. What it buys is fewer, fused kernels (the NF4 matmuls, the LoRA branch, RoPE, the norms), which matters
where a step is many small kernels rather than a few big matmuls.

The parts are compiled, not the layer itself: transformers checkpoints a layer's `__call__` in some 5.x releases
and its `forward` in others, and the compiled code must run *inside* the checkpoint (so the recompute replays it
and only the layer's input is kept) and outside the checkpoint function that train/offload.py swaps in. A layer's
direct children are inside both.

Only passes with gradients run compiled: the held-out loss and the per-epoch generations (no gradients, other
shapes, a KV cache) run the eager code, so they cost no recompiles.

The compile happens in a TrainerCallback at train begin, after the Trainer has applied Liger (whose kernels it
would otherwise try to trace) and enabled checkpointing, as offload.py's swap does.

Measured on one H100 (benchmarks/results-train-throughput-compile-2026-12-07.log), TRL SFTTrainer, NF4, 4 x 2048,
accumulation 4: Llama-3.2-1B shape 1.23x the tok/s with lora_dropout 0 (47,451 vs 38,697; Unsloth 41,251 in the
same run) and 1.07x at dropout 0.05; Mistral-7B shape 0.99x (a wash). The compile takes ~10 s, once.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger("edgetune.train")

# Liger's layer kernels (RMSNorm, SwiGLU, RoPE) are replaced by compiled stock code. The loss stays fused: TRL's
# SFTTrainer puts Liger's fused linear cross-entropy on the LM head itself (the [tokens x vocab] logits never exist)
# and refuses transformers' own (ValueError at SFTTrainer(...) if fused_linear_cross_entropy is True, TRL 1.16)
LIGER_WITH_COMPILE = {"rope": False, "rms_norm": False, "swiglu": False, "fused_linear_cross_entropy": False,
                      "cross_entropy": False}

# None turns compiling on for hidden sizes in [AUTO_MIN_HIDDEN, AUTO_MAX_HIDDEN): at 2048 (Llama-3.2-1B) the step is
# many small kernels and compiling won 1.07-1.23x; at 4096 (Mistral-7B) the matmuls dominate and it won nothing
# (0.99x), so the ~10 s compile and the risk are not worth it there. Narrower models were not measured: their
# runs are short, so the compile (and a recompile when padded batch lengths change) may cost more than it saves
AUTO_MIN_HIDDEN = 2048
AUTO_MAX_HIDDEN = 4096


class _WithGradients:
    """A module's call: the compiled code while autograd records (training, the checkpoint's recompute), the eager
    code otherwise (evaluation, generation). A part torch.compile fails on (an architecture or op it cannot
    compile: its errors come before the part runs) falls back to eager for good, with a warning, rather than end
    the training run."""

    def __init__(self, compiled: Any, eager: Any, name: str):
        self.compiled, self.eager, self.name = compiled, eager, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch
        from torch._dynamo.exc import TorchDynamoException

        if self.compiled is None or not torch.is_grad_enabled():
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except TorchDynamoException as exc:
            log.warning("torch.compile failed on %s (%s): it runs uncompiled; set train.compile_layers: false to "
                        "skip compiling", self.name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self.compiled = None
            return self.eager(*args, **kwargs)


def keep_liger_off_the_layers(args: Any) -> None:
    """Trainer arguments for compiled layers: Liger patches none of them (torch.compile fuses them; Liger's own
    kernels there would be traced or break the graph), the fused loss stays (TRL's)."""
    if args.use_liger_kernel:
        args.liger_kernel_config = dict(LIGER_WITH_COMPILE)


def compile_layer_parts(model: Any, **compile_kwargs: Any) -> int:
    """torch.compile every direct child of every decoder layer (transformers' GradientCheckpointingLayer), in
    place, for the passes with gradients; returns how many layers. A part already compiled is left as it is.

    nn.Module.__call__ runs `_compiled_call_impl` when it is set (what nn.Module.compile sets)."""
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = 0
    for module in model.modules():
        if not isinstance(module, GradientCheckpointingLayer):
            continue
        for part in module.children():
            if getattr(part, "_compiled_call_impl", None) is None:
                part._compiled_call_impl = _WithGradients(torch.compile(part._call_impl, **compile_kwargs),
                                                          part._call_impl, type(part).__name__)
        layers += 1
    return layers


def uncompile_layer_parts(model: Any) -> None:
    """Back to eager code: what compile_layer_parts did, undone."""
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


def resolve(setting: bool | None, *, cuda: bool, hidden_size: int | None, world_size: int = 1,
            offloaded: bool = False) -> bool:
    """Whether a training run compiles its layers: the config's choice, or for None, on for one CUDA process
    training a model of hidden size in [AUTO_MIN_HIDDEN, AUTO_MAX_HIDDEN) without activation offload (what was
    measured to win; a CPU pays the compile for little, and sharded runs and the offload's checkpoint function were
    not measured with it)."""
    if setting is not None:
        return setting
    return cuda and world_size == 1 and not offloaded and AUTO_MIN_HIDDEN <= (hidden_size or 0) < AUTO_MAX_HIDDEN


def callbacks(compile_layers: bool) -> list[TrainerCallback]:
    """The callbacks train.compile_layers needs."""
    return [CompileCallback()] if compile_layers else []
