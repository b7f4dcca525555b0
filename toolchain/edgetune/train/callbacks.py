"""Trainer callbacks of the train stage: the progress bar (loss, real tokens per second, ETA), the per-epoch
held-out task check, and the tutorial's "loss not falling after epoch 1" check.

Everything they record goes into the trainer's `state.log_history`, which checkpoints carry, so a resumed run
reports the epochs it did before the interruption too.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from transformers import TrainerCallback

from edgetune.train.heldout import HeldoutItem, exact_match

log = logging.getLogger("edgetune.train")

FALL_MIN = 0.01  # the loss must drop by at least 1% over epoch 1 to count as falling
MIN_STEPS = 4  # fewer logged steps in epoch 1 than this: too noisy to judge


class ProgressReport(TrainerCallback):
    """Drives a Progress task: one advance per optimizer step with `loss` and `tok/s` (non-padding tokens seen
    in this session over its wall time). A resumed run starts the bar at the checkpoint's step."""

    def __init__(self, bar):
        self.bar = bar
        self.loss = float("nan")
        self.started = time.perf_counter()
        self.tokens0 = 0

    def on_train_begin(self, args, state, control, **kw):
        self.started, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen
        if state.global_step:
            self.bar.advance(state.global_step, **self.fields(state))

    def elapsed(self) -> float:
        """Seconds since training (re)started in this session."""
        return time.perf_counter() - self.started

    def fields(self, state) -> dict[str, float]:
        return {"loss": self.loss, "tok/s": (state.num_input_tokens_seen - self.tokens0) / max(self.elapsed(), 1e-9)}

    def on_step_end(self, args, state, control, **kw):
        self.bar.advance(1, **self.fields(state))

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            self.bar.advance(0, **self.fields(state))


class HeldoutTask(TrainerCallback):
    """After each evaluation (once per epoch), answer the held-out items greedily and add the exact-match
    accuracy to that evaluation's log row."""

    def __init__(self, tok, items: list[HeldoutItem], batch_size: int):
        self.tok, self.items, self.batch_size = tok, items, batch_size

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        if not self.items or model is None:
            return
        if args.world_size > 1:  # FSDP shards the weights: generating would need every rank; eval loss only
            log.info("held-out exact match is skipped in a %d-process run (held-out loss only)", args.world_size)
            self.items = []
            return
        result = exact_match(model, self.tok, self.items, batch_size=self.batch_size, bf16=args.bf16)
        row = next((r for r in reversed(state.log_history) if "eval_loss" in r), None)
        if row is not None:
            row.update(eval_accuracy=result["accuracy"], eval_items=result["n"])
        log.info("epoch %.2f: held-out loss %.4f, exact match %d/%d", state.epoch or 0.0,
                 (metrics or {}).get("eval_loss", float("nan")), round(result["accuracy"] * result["n"]), result["n"])


def loss_check(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the training loss fell over the first epoch (or the whole run, if shorter): the mean of its first
    quarter of logged steps (2 to 10 steps) against its last quarter."""
    losses = [r["loss"] for r in log_history if "loss" in r and r.get("epoch", 0.0) <= 1.0 + 1e-6]
    if len(losses) < MIN_STEPS:
        return {"judged": False, "steps": len(losses), "reason": f"fewer than {MIN_STEPS} steps in epoch 1"}
    k = max(2, min(10, len(losses) // 4))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return {"judged": True, "steps": len(losses), "first": first, "last": last, "falling": last <= first * (1 - FALL_MIN)}


def warn_if_flat(check: dict[str, Any], learning_rate: float, pad_token: str) -> bool:
    """The tutorial's checklist as one WARNING when the loss did not fall; returns whether it warned."""
    if not check.get("judged") or check["falling"]:
        return False
    log.warning(
        "loss is not falling after the first epoch (%.3f -> %.3f over %d steps). Check: (1) the learning rate: "
        "train.learning_rate=%g, try 1e-4 or 5e-5; (2) the chat template matches the model (edgetune renders with "
        "the base model's own template: is model.source the model you mean?); (3) the pad token is set (it is %r); "
        "(4) padding is not trained on (edgetune masks padding and prompts out of the loss: check your data's "
        "answers are not empty or padding-like)",
        check["first"], check["last"], check["steps"], learning_rate, pad_token,
    )
    return True


class LossCheck(TrainerCallback):
    """Judges the loss at the end of epoch 1 (or at the end of a shorter run) and warns there, while the user
    can still stop the run; `warned` tells the stage not to warn again."""

    def __init__(self, learning_rate: float, pad_token: str):
        self.learning_rate, self.pad_token = learning_rate, pad_token
        self.warned = False
        self.judged = False

    def on_epoch_end(self, args, state, control, **kw):
        if self.judged or (state.epoch or 0.0) > 1.0 + 1e-6:
            return  # judged already, or resumed past epoch 1 (the stage judges from the log at the end)
        self.judged = True
        self.warned = warn_if_flat(loss_check(state.log_history), self.learning_rate, self.pad_token)

