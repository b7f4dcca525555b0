"""The OOM fallback sequence. A CPU has no CUDA OOM, so `attempt` here raises torch.cuda.OutOfMemoryError
when the config's activation memory (batch x max_length x a per-token cost, a third of it with checkpointing)
exceeds a budget, as a GPU would; the real OOM is exercised on a GPU by benchmarks/train_oom_gpu.py. The last
test runs the real train stage through the fallback: the first try fails, the second trains."""

from __future__ import annotations

import logging

import pytest
import torch
from edgetune.config import TrainConfig
from edgetune.errors import TrainError
from edgetune.train import oom, stage

PER_TOKEN_BYTES = 1_000_000


def activation_bytes(cfg: TrainConfig) -> int:
    recompute = 3 if cfg.gradient_checkpointing is not False else 1  # None: on for CUDA
    return cfg.batch_size * cfg.max_length * PER_TOKEN_BYTES // recompute


def budgeted(budget_bytes: int, tries: list[TrainConfig]):
    def attempt(cfg: TrainConfig) -> str:
        tries.append(cfg)
        if activation_bytes(cfg) > budget_bytes:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {activation_bytes(cfg)} bytes")
        return "trained"
    return attempt


BIG = TrainConfig(batch_size=8, grad_accum=2, max_length=2048, gradient_checkpointing=False)


def test_fits_first_time_changes_nothing():
    tries: list[TrainConfig] = []
    result, applied = oom.run_with_fallback(budgeted(10**12, tries), BIG)
    assert (result, applied, tries) == ("trained", [], [BIG])


@pytest.mark.parametrize("budget, expected", [
    # batch 1 alone is enough: 1 x 2048 tokens
    (2048 * PER_TOKEN_BYTES, [(8, 2, False, 2048), (1, 16, False, 2048)]),
    # batch 1 + checkpointing
    (1000 * PER_TOKEN_BYTES, [(8, 2, False, 2048), (1, 16, False, 2048), (1, 16, True, 2048)]),
    # and max_length halved twice
    (200 * PER_TOKEN_BYTES, [(8, 2, False, 2048), (1, 16, False, 2048), (1, 16, True, 2048),
                             (1, 16, True, 1024), (1, 16, True, 512)]),
])
def test_steps_in_the_tutorials_order(budget, expected, caplog):
    tries: list[TrainConfig] = []
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        result, applied = oom.run_with_fallback(budgeted(budget, tries), BIG)
    assert result == "trained"
    assert [(c.batch_size, c.grad_accum, c.gradient_checkpointing, c.max_length) for c in tries] == expected
    assert all(c.batch_size * c.grad_accum == 16 for c in tries)  # the effective batch is kept
    assert len(applied) == len(expected) - 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "edgetune.train" and r.levelno == logging.WARNING]
    assert warnings == applied
    assert "train.batch_size -> 1 and train.grad_accum -> 16" in applied[0]


def test_nothing_left_raises_train_error_with_the_last_setting():
    tries: list[TrainConfig] = []
    with pytest.raises(TrainError) as info:
        oom.run_with_fallback(budgeted(10 * PER_TOKEN_BYTES, tries), BIG)
    err = info.value
    assert err.message.startswith("does not fit in GPU memory even at batch 1, gradient checkpointing, max_length 128")
    assert "QLoRA" in err.hint and "smaller base" in err.hint and "--gpus" in err.hint
    assert [c.max_length for c in tries] == [2048, 2048, 2048, 1024, 512, 256, 128]
    assert err.exit_code == 5


def test_none_checkpointing_is_already_on_and_floor_is_configurable():
    """None means on for CUDA, so no try is spent on it; max_length stops at min_length."""
    tries: list[TrainConfig] = []
    cfg = TrainConfig(batch_size=1, max_length=1024)
    with pytest.raises(TrainError, match="max_length 512"):
        oom.run_with_fallback(budgeted(1, tries), cfg, min_length=512)
    assert [(c.batch_size, c.gradient_checkpointing, c.max_length) for c in tries] == [(1, None, 1024), (1, None, 512)]


def test_runtime_error_with_out_of_memory_text_counts_and_others_propagate():
    calls = []

    def cublas_oom(cfg):
        calls.append(cfg)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: out of memory (cublasCreate)")
        return "ok"

    assert oom.run_with_fallback(cublas_oom, BIG)[0] == "ok"

    def other(cfg):
        raise RuntimeError("size mismatch for lora_A")

    with pytest.raises(RuntimeError, match="size mismatch"):
        oom.run_with_fallback(other, BIG)
    with pytest.raises(ValueError):
        oom.run_with_fallback(lambda c: (_ for _ in ()).throw(ValueError("bad")), BIG)


def test_the_train_stage_recovers_through_the_fallback(inputs, tmp_path, caplog):
    """The real stage on the tiny model: a callback raises a CUDA OOM on the first training step while the
    per-device batch is over 1; the stage retries at batch 1 (x8 accumulation) and commits that adapter."""
    from transformers import TrainerCallback

    base_art, data_art = inputs
    from edgetune.artifacts import Store

    class OOMAtBatch8(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if args.per_device_train_batch_size > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    cfg = TrainConfig(method="lora", r=4, alpha=8, batch_size=8, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0,
                      eval_items=0, save_steps=0)
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        art = stage.run(cfg, base_art, data_art, Store(tmp_path / "store"), threads=1, callbacks=(OOMAtBatch8(),))
    applied = art.metrics["oom_fallback"]
    assert len(applied) == 1 and "train.batch_size -> 1 and train.grad_accum -> 8" in applied[0]
    assert art.metrics["steps"] == 2
    assert art.record["params"]["batch_size"] == 8  # the key stays that of the config asked for
    assert applied[0] in caplog.text
