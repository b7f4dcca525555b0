"""train.micro_batch_tokens: a device batch split into micro-batches with accumulation making up the rest. The
split must not change what is learned: same losses and the same adapter as the whole batch at once (fp32, CPU,
no dropout, whose masks depend on the batch shape). What it costs and saves on a GPU: the H200 table in
docs/benchmarks.md."""

from __future__ import annotations

import json

import pytest
from edgetune import train
from edgetune.artifacts import Store
from edgetune.train.args import micro_batches, sft_config

from .conftest import FAST


@pytest.mark.parametrize("batch, length, budget, expected", [
    (4, 2048, None, (4, 1)),        # off (the default)
    (4, 2048, 4096, (2, 2)),
    (4, 2048, 2048, (1, 4)),
    (8, 256, 4096, (8, 1)),         # already under the budget
    (6, 1024, 4096, (3, 2)),        # largest divisor of the batch that fits
    (5, 1024, 4096, (1, 5)),        # 5 has no divisor between 1 and 5
    (4, 8192, 4096, (1, 4)),        # one example over the budget still runs, alone
])
def test_micro_batches(batch, length, budget, expected):
    cfg = FAST.model_copy(update={"batch_size": batch, "max_length": length, "micro_batch_tokens": budget})
    micro, accum = micro_batches(cfg)
    assert (micro, accum) == expected and micro * accum == batch * cfg.grad_accum


def test_the_trainer_gets_the_split(tmp_path):
    cfg = FAST.model_copy(update={"batch_size": 4, "grad_accum": 2, "max_length": 64, "micro_batch_tokens": 128})
    args = sft_config(cfg, tmp_path, cuda=False, liger=False)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 4)


def test_a_split_batch_learns_what_the_whole_batch_learns(inputs, tmp_path):
    from safetensors.torch import load_file

    base_art, data_art = inputs
    cfg = FAST.model_copy(update={"batch_size": 4, "max_length": 64, "dropout": 0.0, "max_steps": 4,
                                  "eval_items": 0, "save_steps": 0})
    whole = train.run(cfg.model_copy(update={"micro_batch_tokens": None}), base_art, data_art,
                      Store(tmp_path / "whole"), threads=1)
    split = train.run(cfg.model_copy(update={"micro_batch_tokens": 64}), base_art, data_art,
                      Store(tmp_path / "split"), threads=1)
    assert (whole.metrics["micro_batch"], split.metrics["micro_batch"]) == (4, 1)
    assert whole.metrics["steps"] == split.metrics["steps"] == 4
    rows = [[json.loads(line)["loss"] for line in a.file("log").read_text().splitlines()] for a in (whole, split)]
    assert rows[0] == pytest.approx(rows[1], abs=1e-5) and rows[0][-1] < rows[0][0]
    a, b = (load_file(x.file("adapter") / "adapter_model.safetensors") for x in (whole, split))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert all(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)  # trained, not two untouched copies


@pytest.mark.parametrize("checkpointing", [None, False])
def test_offload_activations_without_checkpointing_is_refused(tmp_path, checkpointing):
    from edgetune.errors import ConfigError

    cfg = FAST.model_copy(update={"max_length": 64, "gradient_checkpointing": checkpointing,
                                  "offload_activations": True})
    with pytest.raises(ConfigError, match="offload_activations needs gradient checkpointing"):
        sft_config(cfg, tmp_path, cuda=False, liger=False)
