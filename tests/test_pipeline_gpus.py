"""`edgetune build --gpus N` trains through the same launcher as `edgetune train --gpus N` (train/launch.py):
here with 2 CPU processes (gloo DDP), as tests/train/test_launch.py tests the launcher, then the rest of the
pipeline on rank 0's adapter."""

from __future__ import annotations

import json

from edgetune.config import EvalConfig, ExportConfig, TrainConfig
from edgetune.constants import Quant
from edgetune.home import edgetune_home
from edgetune.pipeline import build
from edgetune.train import stage

from tests.test_pipeline import config


def test_build_trains_on_two_processes_through_the_launcher(tmp_path, tiny_model_dir, colour_jsonl):
    cfg = config(tiny_model_dir, colour_jsonl, tmp_path / "out")
    cfg = cfg.model_copy(update={
        "train": TrainConfig(method="lora", r=8, alpha=16, max_steps=3, batch_size=4, learning_rate=1e-2,
                             warmup_ratio=0.0, eval_items=0),
        "export": ExportConfig(quants=[Quant.Q8_0]),  # the rest of the pipeline, kept short
        "eval": EvalConfig(forgetting={"arc_easy": 2}, max_new_tokens=4)})
    result = build(cfg, edgetune_home(), gpus=2, cpu_processes=True)
    assert "train" in result.ran and result.bundle_dir.is_dir()
    found = list((cfg.out_dir / "store" / "train").glob("*/artifact.json"))
    assert len(found) == 1  # rank 0's artifact only; the other rank wrote to scratch
    record = json.loads(found[0].read_text())
    assert record["params"]["processes"] == 2
    # 2 ranks of batch 4 take 8 of the 32 examples a step: 3 steps are 0.75 of an epoch (one process: 0.375)
    log = [json.loads(line) for line in (found[0].parent / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and abs(log[-1]["epoch"] - 0.75) < 1e-6
    # the key `edgetune train --gpus 2` uses for the same config: a later `train --gpus 2` is a cache hit
    from edgetune.outputs import BaseModel, DataSplit
    from edgetune.train.worker import load_artifact

    base = BaseModel.of(load_artifact(next((cfg.out_dir / "store" / "base").glob("*/artifact.json")).parent))
    data = DataSplit.of(load_artifact(next((cfg.out_dir / "store" / "data").glob("*/artifact.json")).parent))
    assert record["key"] == stage.cache_key(cfg.train, base, data, processes=2)
    # and a rebuild starts nothing: the 2-process adapter is found under that key
    again = build(cfg, edgetune_home(), gpus=2, cpu_processes=True)
    assert "train" in again.reused and "train" not in again.ran
