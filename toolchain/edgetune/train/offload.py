"""train.offload_activations: each checkpointed layer's saved input held in pinned host memory, copied on a side
stream so the copies overlap the GPU's work.

transformers' own offload (torch's save_on_cpu around every checkpoint) copies on the compute stream and waits for
each device-to-host copy in the forward: 0.92x the default's tok/s on an H100, Mistral-7B shape at 4x2048
(benchmarks/results-train-throughput-unsloth-2026-12-07.log). Here a layer's input goes to the host beside that
layer's forward, and when the backward reaches layer i the copy back of layer i-1's input starts, so it runs beside
layer i's recompute. At most two layers' inputs are on the device at once.

The layers' checkpoint function is swapped in by a TrainerCallback at train begin, after the Trainer has enabled
checkpointing (transformers' Trainer.train does that, so the swap cannot happen earlier).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint
from transformers import TrainerCallback

# saved inputs smaller than this stay on the device: the rotary tables and masks every layer shares would be
# copied once per layer and freed nowhere (the model still holds them), and tiny copies cost more than they free
MIN_BYTES = 1 << 20


class _Held:
    """One offloaded tensor: its pinned host copy, and its device copy once the copy back has been started."""

    __slots__ = ("host", "device", "on_device", "ready", "prev")

    def __init__(self, host: torch.Tensor, device: torch.device, prev: _Held | None):
        self.host: torch.Tensor | None = host
        self.device = device
        self.on_device: torch.Tensor | None = None
        self.ready: torch.cuda.Event | None = None
        self.prev = prev  # the tensor offloaded just before this one: the backward needs it next

    def fetch(self, side: torch.cuda.Stream) -> None:
        """Start the copy back on `side` (once). The device block is allocated on the compute stream, and the side
        stream first waits for the compute stream's queued work, which may still be using that block."""
        if self.on_device is not None or self.host is None:
            return
        compute = torch.cuda.current_stream(self.device)
        dst = torch.empty_strided(self.host.size(), self.host.stride(), dtype=self.host.dtype, device=self.device)
        side.wait_stream(compute)
        with torch.cuda.stream(side):
            dst.copy_(self.host, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record(side)
        self.on_device = dst


class StreamedOffload:
    """saved_tensors_hooks pack/unpack pair for the inputs a checkpointed layer saves."""

    def __init__(self) -> None:
        self.side: torch.cuda.Stream | None = None
        self.last: _Held | None = None
        # tensors already seen in a pack, by identity: a tensor handed to several layers (rotary tables, masks) is
        # shared, so it stays where it is
        self.seen: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()

    def pack(self, t: torch.Tensor) -> Any:
        shared = self.seen.get(id(t)) is t
        self.seen[id(t)] = t
        if shared or t.device.type != "cuda" or not t.is_contiguous() or t.numel() * t.element_size() < MIN_BYTES:
            return t
        if self.side is None:
            self.side = torch.cuda.Stream(t.device)
        host = torch.empty(t.size(), dtype=t.dtype, pin_memory=True)
        self.side.wait_stream(torch.cuda.current_stream(t.device))  # t must be computed before it is copied
        with torch.cuda.stream(self.side):
            host.copy_(t, non_blocking=True)
        t.record_stream(self.side)  # t's block must not be reused before the side stream has read it
        held = _Held(host, t.device, self.last if self.last is not None and self.last.host is not None else None)
        self.last = held
        return held

    def unpack(self, held: Any) -> torch.Tensor:
        if not isinstance(held, _Held):
            return held
        assert self.side is not None
        held.fetch(self.side)
        if held.prev is not None:
            held.prev.fetch(self.side)  # the layer before this one: copied back while this one recomputes
        assert held.on_device is not None and held.ready is not None
        torch.cuda.current_stream(held.device).wait_event(held.ready)
        out, held.on_device, held.host, held.prev = held.on_device, None, None, None
        return out


def streamed_checkpoint(offload: StreamedOffload, checkpoint_kwargs: dict[str, Any]):
    """A layer checkpoint function (transformers' `_gradient_checkpointing_func` signature) whose saved inputs go
    through `offload`."""

    def run(function, *args, **kwargs):
        with torch.autograd.graph.saved_tensors_hooks(offload.pack, offload.unpack):
            return checkpoint(function, *args, **{**checkpoint_kwargs, **kwargs})

    return run


class OffloadCallback(TrainerCallback):
    """Swaps every checkpointed layer's checkpoint function for `streamed_checkpoint` when training begins."""

    def __init__(self, checkpoint_kwargs: dict[str, Any] | None = None):
        self.func = streamed_checkpoint(StreamedOffload(), checkpoint_kwargs or {"use_reentrant": False})
        self.layers = 0

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.layers = swap_checkpoint_function(model, self.func)


def swap_checkpoint_function(model: Any, func: Any) -> int:
    """Set `func` on every module transformers checkpoints; returns how many layers are checkpointed."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = 0
    for module in model.modules():
        if hasattr(module, "_gradient_checkpointing_func"):
            module._gradient_checkpointing_func = func
            # the model itself carries the flag too; only the repeated layers are checkpointed units
            layers += isinstance(module, GradientCheckpointingLayer) and bool(module.gradient_checkpointing)
    return layers


# train.offload_activations None turns offloading on from this hidden size: a layer's input is batch x seq x hidden
# bytes and its compute grows with hidden squared, so the copies hide behind the compute only for wide layers
# (H100: free at 4096, the Mistral-7B shape; 0.88x the tok/s at 2048, Llama-3.2-1B's;
# benchmarks/results-train-throughput-offload-2026-12-07.log)
AUTO_MIN_HIDDEN = 4096


def resolve(setting: bool | None, *, cuda: bool, recompute: bool, hidden_size: int | None, world_size: int) -> bool:
    """Whether a training run offloads: the config's choice, or for None, on for one CUDA process checkpointing a
    model at least AUTO_MIN_HIDDEN wide (sharded runs keep the Trainer's own checkpointing untouched)."""
    if setting is not None:
        return setting
    return cuda and recompute and world_size == 1 and (hidden_size or 0) >= AUTO_MIN_HIDDEN


def callbacks(offload_activations: bool, cuda: bool) -> list[TrainerCallback]:
    """The callbacks train.offload_activations needs: the streamed offload on CUDA, nothing otherwise (on a CPU the
    activations already live in host memory)."""
    return [OffloadCallback()] if offload_activations and cuda else []
