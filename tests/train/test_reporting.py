"""train.report_to: tensorboard writes real event files into the train artifact, readable with TensorBoard's own
EventAccumulator, one train/loss point per logged step; a target whose package is missing is one error line."""

from __future__ import annotations

import json

import pytest
from edgetune import train
from edgetune.artifacts import Store
from edgetune.errors import TrainError
from edgetune.train import reporting
from edgetune.train.stage import cache_key

from .conftest import FAST


def test_tensorboard_event_files_hold_the_training_curve(inputs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base_art, data_art = inputs
    cfg = FAST.model_copy(update={"report_to": "tensorboard", "max_steps": 4, "save_steps": 0, "eval_items": 0})
    trained = train.run(cfg, base_art, data_art, Store(tmp_path / "store"), threads=1)
    assert trained.tensorboard_dir is not None and trained.tensorboard_dir.is_dir()
    events = EventAccumulator(str(trained.tensorboard_dir))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"]
    points = events.Scalars("train/loss")
    logged = [json.loads(line) for line in trained.log_path.read_text().splitlines()]
    assert [p.step for p in points] == [r["step"] for r in logged] == [1, 2, 3, 4]
    assert [p.value for p in points] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert "eval/loss" in events.Tags()["scalars"]  # the per-epoch held-out loss too


def test_report_to_is_not_in_the_cache_key(inputs):
    base_art, data_art = inputs
    assert cache_key(FAST, base_art, data_art) == \
        cache_key(FAST.model_copy(update={"report_to": "tensorboard"}), base_art, data_art)


def test_a_missing_package_is_one_line_before_training():
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here: no missing package to report")
    with pytest.raises(TrainError, match="train.report_to: wandb needs the wandb package") as exc:
        reporting.check("wandb")
    assert "report_to: none" in exc.value.hint and exc.value.exit_code == 5
    reporting.check("tensorboard")  # installed here: no error
