"""Liger kernels on CUDA (fused RMSNorm/SwiGLU/RoPE/linear-cross-entropy), and undoing their global patches."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util


def available(cuda: bool) -> bool:
    """Liger is used where it can run: CUDA with liger_kernel installed."""
    return cuda and importlib.util.find_spec("liger_kernel") is not None


@contextlib.contextmanager
def restored_modeling_module(model_type: str | None):
    """Liger patches transformers' modeling module globally (classes, functions, forward methods); restore
    them after training so later stages in this process (the CPU fp32 merge, evals) run stock code.
    Found on an H200: without this the merge's CPU RMSNorm ran Liger's Triton kernel and failed."""
    if model_type is None:
        yield
        return
    module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    saved = dict(vars(module))
    forwards = {obj: vars(obj)["forward"] for obj in saved.values() if isinstance(obj, type) and "forward" in vars(obj)}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
        for cls, forward in forwards.items():
            cls.forward = forward
