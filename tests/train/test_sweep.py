"""The rank sweep for real on the tiny Llama: the data slice, one trained + merged + scored adapter per rank,
the choice rule, and sweep.json / sweep.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgetune.artifacts import Store
from edgetune.config import TrainConfig
from edgetune.data import read_examples
from edgetune.errors import ConfigError
from edgetune.train import sweep
from edgetune.train.sweep import SweepRow

CFG = TrainConfig(method="lora", r=8, alpha=16, batch_size=4, max_steps=6, learning_rate=1e-2, warmup_ratio=0.0,
                  eval_items=0, save_steps=0)


@pytest.fixture(scope="module")
def swept(inputs, tmp_path_factory):
    base_art, data_art = inputs
    root = tmp_path_factory.mktemp("sweep")
    store = Store(root / "store")
    result = sweep.run_sweep(CFG, base_art, data_art, store, root / "run", ranks=(8, 2), fraction=0.25,
                             min_examples=4, heldout_items=6, max_new_tokens=4, threads=1)
    return result, store


def row(rank, acc, nll):
    return SweepRow(rank, 2 * rank, acc, nll, 1.0, 1.0, 100 * rank, "x")


@pytest.mark.parametrize("rows, metric, expected", [
    ([row(4, 0.5, 2.0), row(8, 0.7, 1.5), row(16, 0.7, 1.2)], "accuracy", 8),  # tie on accuracy: smaller rank
    ([row(16, 0.7, 1.2), row(4, 0.5, 2.0), row(8, 0.7, 1.5)], "accuracy", 8),  # whatever the order given
    ([row(4, 0.5, 2.0), row(8, 0.7, 1.5), row(16, 0.7, 1.2)], "heldout_nll", 16),  # lowest loss
    ([row(4, 0.0, 1.2), row(32, 0.0, 1.2)], "heldout_nll", 4),
])
def test_choice_rule(rows, metric, expected):
    assert sweep.choose(rows, metric) == expected


def test_each_rank_trains_on_the_slice_with_its_own_rank(swept, inputs):
    result, store = swept
    _, data_art = inputs
    assert [r.rank for r in result.rows] == [2, 8]  # smallest first
    assert [r.alpha for r in result.rows] == [4, 16]  # alpha/r of the config (2) kept
    assert result.n_train == 8 and result.n_heldout == 6  # 25% of 32
    [part] = [a for a in (store.root / sweep.KIND_SUBSET).iterdir()]
    sliced = read_examples(part / "train.jsonl")
    assert sliced == read_examples(data_art.file("train"))[:8]
    assert (part / "heldout.jsonl").read_text() == data_art.file("heldout").read_text()
    for r in result.rows:
        config = json.loads((Path(r.adapter) / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (r.rank, r.alpha)
        assert r.trainable_params == 2 * r.rank * (128 + 96 + 96 + 128)


def test_scores_are_real_measurements(swept, inputs):
    """Held-out NLL of every trained rank is below the untrained base's on the same items (lr 1e-2 moves the
    tiny model); accuracy is a share of the 6 items."""
    result, _ = swept
    base_art, data_art = inputs
    heldout = read_examples(data_art.file("heldout"))[:6]
    _, base_nll = sweep._score(base_art.model_dir, heldout, 4)
    for r in result.rows:
        assert 0 < r.heldout_nll < base_nll, (r, base_nll)
        assert r.accuracy * 6 == round(r.accuracy * 6)
    assert result.chosen_rank == sweep.choose(result.rows, "accuracy")


def test_writes_json_and_markdown(swept):
    result, _ = swept
    saved = json.loads(result.json_path.read_text())
    assert saved["chosen_rank"] == result.chosen_rank and [r["rank"] for r in saved["rows"]] == [2, 8]
    assert saved["train"]["max_steps"] == 6
    md = result.md_path.read_text()
    assert f"**r={result.chosen_rank}**" in md and md.count("\n| ") == 3  # header + 2 rows
    assert f"| {result.chosen_rank} **chosen** |" in md


def test_a_second_sweep_reuses_every_artifact(swept, inputs):
    result, store = swept
    base_art, data_art = inputs
    again = sweep.run_sweep(CFG, base_art, data_art, store, result.json_path.parent, ranks=(2, 8), fraction=0.25,
                            min_examples=4, heldout_items=6, max_new_tokens=4, threads=1)
    assert [(r.rank, r.heldout_nll, r.train_s) for r in again.rows] == \
        [(r.rank, r.heldout_nll, r.train_s) for r in result.rows]


@pytest.mark.parametrize("kwargs, match", [
    ({"ranks": (4, 4)}, "distinct positive"),
    ({"ranks": (0, 4)}, "distinct positive"),
    ({"ranks": ()}, "distinct positive"),
    ({"fraction": 0.0}, r"fraction must be in \(0, 1\]"),
    ({"fraction": 1.5}, r"fraction must be in \(0, 1\]"),
    ({"metric": "bleu"}, "unknown sweep metric"),
])
def test_bad_settings_fail_before_training(inputs, tmp_path, kwargs, match):
    base_art, data_art = inputs
    with pytest.raises(ConfigError, match=match):
        sweep.run_sweep(CFG, base_art, data_art, Store(tmp_path / "store"), tmp_path / "run", **kwargs)
    assert not (tmp_path / "store" / "train").exists() and not (tmp_path / "run").exists()
