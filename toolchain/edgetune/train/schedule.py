"""How long to train: enough optimizer steps for a small data set to learn its task.

One epoch over a few hundred rows is a handful of steps at batch 8 (277 rows held out 200 left 10 steps, and the
fine-tune learned nothing: issue 22). So when `train.epochs` is unset (None) and `train.max_steps` is unset, the
stage trains `max(1, min_steps / steps_per_epoch)` epochs, capped at MAX_AUTO_EPOCHS (more passes over a tiny set
memorise it rather than learn): steps_per_epoch = ceil(examples / (batch_size x grad_accum x processes)). An
explicit `train.epochs` or `train.max_steps` is always kept. Pure.
"""

from __future__ import annotations

import logging
import math

from edgetune.config import TrainConfig

log = logging.getLogger("edgetune.train")

MAX_AUTO_EPOCHS = 10.0
DEFAULT_EPOCHS = 1.0


def steps_per_epoch(cfg: TrainConfig, n_examples: int, processes: int = 1) -> int:
    return max(1, math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum * processes)))


def resolve_epochs(cfg: TrainConfig, n_examples: int, processes: int = 1) -> TrainConfig:
    """`cfg` with `epochs` set to the epochs to train (see the module docstring); logs the choice when it
    raised them, and warns when even the cap leaves fewer than min_steps."""
    if cfg.epochs is not None or cfg.max_steps is not None:
        return cfg if cfg.epochs is not None else cfg.model_copy(update={"epochs": DEFAULT_EPOCHS})
    per_epoch = steps_per_epoch(cfg, n_examples, processes)
    wanted = cfg.min_steps / per_epoch
    epochs = min(MAX_AUTO_EPOCHS, max(DEFAULT_EPOCHS, round(wanted, 2)))
    if epochs > DEFAULT_EPOCHS:
        log.info("train.epochs unset: %g epochs (%d steps of %d examples) so %d examples see train.min_steps=%d "
                 "steps", epochs, math.ceil(per_epoch * epochs), cfg.batch_size * cfg.grad_accum * processes,
                 n_examples, cfg.min_steps)
    if wanted > MAX_AUTO_EPOCHS:
        log.warning("only %d training examples: %g epochs give %d optimizer steps, under train.min_steps=%d; add "
                    "data (a few hundred rows) or set train.epochs to train longer anyway", n_examples, epochs,
                    math.ceil(per_epoch * epochs), cfg.min_steps)
    return cfg.model_copy(update={"epochs": epochs})
