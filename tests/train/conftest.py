"""Fixtures for the train stage's tools: the tiny Llama and the colour task as base and data artifacts."""

from __future__ import annotations

import pytest
from edgetune import basemodel, data
from edgetune.artifacts import Store
from edgetune.config import DataConfig, ModelConfig, TrainConfig

# lr 1e-2 and no warm-up move the random tiny model visibly within a few steps (as tests/test_train.py)
FAST = TrainConfig(method="lora", r=8, alpha=16, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, seed=0,
                   eval_items=4)


@pytest.fixture(scope="package")
def inputs(tmp_path_factory, tiny_model_dir, colour_jsonl):
    """(base artifact, data artifact): the tiny Llama in place, 32 train rows and 10 held out."""
    store = Store(tmp_path_factory.mktemp("train-tools-inputs") / "store")
    data_art = data.run(DataConfig(source=str(colour_jsonl), heldout_size=10, train_size=32), store)
    base_art = basemodel.run(ModelConfig(source=str(tiny_model_dir)), store)
    return base_art, data_art
