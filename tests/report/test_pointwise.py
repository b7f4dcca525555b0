"""The pointwise judge's summary: Spearman's rho against scipy's, the mean rating's CI, the paired difference
from the GPU build, and invalid replies left out rather than guessed."""

from __future__ import annotations

import random

import pytest
from scipy import stats

from edgetune.report.pointwise import spearman, summarise


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = random.Random(seed)
    xs = [rng.randint(1, 10) for _ in range(40)]  # judge ratings: many ties
    ys = [round(rng.random(), 1) for _ in range(40)]  # chrF-like scores, rounded to force ties
    assert spearman(xs, ys) == pytest.approx(stats.spearmanr(xs, ys).statistic, abs=1e-12)


def test_spearman_is_none_when_undefined():
    assert spearman([1, 2], [3, 4]) is None  # too few pairs
    assert spearman([5, 5, 5], [0.1, 0.2, 0.3]) is None  # a constant side has no ranks to correlate
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


def test_summary_of_a_build_against_the_gpu_build():
    gpu = {f"i{k}": 8 for k in range(30)}
    edge = {f"i{k}": (6 if k < 10 else 8) for k in range(30)}
    edge["i29"] = None  # an invalid reply: left out of the mean and the pairing
    scores = {f"i{k}": (0.2 if k < 10 else 0.9) for k in range(30)}
    out = summarise(edge, gpu, scores)
    assert (out["n"], out["n_valid"], out["invalid"]) == (30, 29, 1)
    assert out["mean_score"] == pytest.approx((10 * 6 + 19 * 8) / 29)
    lo, hi = out["ci95"]
    assert lo < out["mean_score"] < hi and 6 <= lo and hi <= 8
    vs = out["vs_gpu"]
    assert vs["n"] == 29 and vs["diff"] == pytest.approx(-20 / 29)
    assert vs["ci95"][0] < vs["diff"] < vs["ci95"][1] < 0  # a real loss: the interval excludes 0
    assert out["metric_spearman"] == pytest.approx(1.0)  # the ratings follow the metric exactly here


def test_no_paired_items_is_no_comparison_not_a_zero_width_interval():
    out = summarise({"a": 7, "b": 5}, {"a": None, "b": None}, {"a": 1.0, "b": 0.0})
    assert out["vs_gpu"] == {"n": 0, "diff": None, "ci95": None}
    none_valid = summarise({"a": None}, None, {"a": 1.0})
    assert none_valid["mean_score"] is None and none_valid["ci95"] is None and none_valid["vs_gpu"] is None


def test_a_judge_that_rates_everything_alike_is_named_as_such():
    # the embedded 135M judge on the instruct-text run rated all 20 answers of every build 10, the base's too
    gpu = {f"i{k}": 10 for k in range(20)}
    out = summarise(gpu, None, {f"i{k}": k / 20 for k in range(20)})
    assert out["constant_rating"] == 10 and out["metric_spearman"] is None
    varied = summarise({"a": 3, "b": 9, "c": 9}, None, {"a": 0.1, "b": 0.8, "c": 0.9})
    assert "constant_rating" not in varied and varied["metric_spearman"] is not None


def test_the_judge_table_says_when_ratings_carry_nothing():
    from edgetune.report.sections import judge_table

    row = {"name": "gpu", "kind": "GPU build", "judge": {**summarise({f"i{k}": 10 for k in range(5)}, None, {}),
                                                         "reliability": {"embedded_judge": True}}}
    table = judge_table({"builds": [row]})
    assert table.rows[0][-1] == "none: every rating 10"
