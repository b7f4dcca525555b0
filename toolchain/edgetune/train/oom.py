"""CUDA out-of-memory fallback: the tutorial's fix sequence, applied automatically and recorded.

`run_with_fallback(attempt, cfg)` calls `attempt(cfg)`; on a CUDA OOM it retries with, in order:
1. per-device batch 1, gradient accumulation multiplied so the effective batch (batch x accum) is kept;
2. gradient checkpointing on, where it was turned off (None already means on for CUDA);
3. max_length halved, step by step, down to a floor (128 tokens by default).
Each step is logged as a WARNING on "edgetune.train" and returned, so callers record it in the manifest. When
nothing is left to try it raises TrainError naming the last setting and what else can help. Any other error
propagates untouched. The tutorial's step 4 (check NF4 is really used) is the train stage's method resolution.

CPU has no CUDA OOM: tests drive this with an attempt that raises torch.cuda.OutOfMemoryError above a memory
budget; benchmarks/train_oom_gpu.py exercises a real OOM on a GPU under a memory-fraction limit.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

from edgetune.config import TrainConfig
from edgetune.errors import TrainError

log = logging.getLogger("edgetune.train")

T = TypeVar("T")
MIN_MAX_LENGTH = 128


def is_oom(exc: BaseException) -> bool:
    """A CUDA OOM: torch.cuda.OutOfMemoryError, or a RuntimeError saying "out of memory" (cuBLAS, older torch)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def fallback_steps(cfg: TrainConfig, min_length: int = MIN_MAX_LENGTH) -> Iterator[tuple[TrainConfig, str]]:
    """The configs to try after an OOM, each with the WARNING line that explains it (lazily, in order)."""
    if cfg.batch_size > 1:
        accum = cfg.grad_accum * cfg.batch_size
        cfg = cfg.model_copy(update={"batch_size": 1, "grad_accum": accum})
        yield cfg, (f"CUDA out of memory: train.batch_size -> 1 and train.grad_accum -> {accum} (same effective "
                    f"batch); set them yourself to skip the failed try")
    # None means "on for CUDA", and an OOM happens only on CUDA: only an explicit false is left to change
    if cfg.gradient_checkpointing is False:
        cfg = cfg.model_copy(update={"gradient_checkpointing": True})
        yield cfg, ("CUDA out of memory: train.gradient_checkpointing -> true (recompute activations: less memory, "
                    "~25% slower); set it yourself to skip the failed tries")
    floor = max(min_length, 16)
    length = cfg.max_length  # resolved by the stage before training (train/lengths.py)
    while length is not None and length // 2 >= floor:
        length //= 2
        cfg = cfg.model_copy(update={"max_length": length})
        yield cfg, (f"CUDA out of memory: train.max_length -> {length} (about half the activation memory; "
                    f"longer examples are shortened in the prompt, and dropped where the answer alone no longer "
                    f"fits); shorten the data or set it yourself to skip the failed tries")


def _free_cuda() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_with_fallback(attempt: Callable[[TrainConfig], T], cfg: TrainConfig, *,
                      min_length: int = MIN_MAX_LENGTH) -> tuple[T, list[str]]:
    """Call `attempt(cfg)`, stepping through the OOM fixes on each CUDA OOM. Returns the result and the
    warnings of the fixes applied (empty when the first try fit). Raises TrainError when the last fix still
    runs out of memory; other errors from `attempt` propagate."""
    applied: list[str] = []
    steps = fallback_steps(cfg, min_length)
    current = cfg
    while True:
        try:
            return attempt(current), applied
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_oom(exc):
                raise
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # out of the except block: the traceback (and the tensors its frames hold) is released before freeing
        _free_cuda()
        step = next(steps, None)
        if step is None:
            raise TrainError(
                f"does not fit in GPU memory even at batch 1, gradient checkpointing, max_length "
                f"{current.max_length} ({reason})",
                "use a smaller base model, QLoRA (train.method: qlora), shorter examples, or more GPUs (--gpus N)",
            )
        current, message = step
        log.warning(message)
        applied.append(message)
