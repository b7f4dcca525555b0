"""Settings shared by the train stage's tool tests (their `inputs` fixture lives in tests/conftest.py)."""

from __future__ import annotations

from edgetune.config import TrainConfig

# lr 1e-2 and no warm-up move the random tiny model visibly within a few steps (as tests/test_train.py)
FAST = TrainConfig(method="lora", r=8, alpha=16, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, seed=0, min_steps=0,
                   eval_items=4)

