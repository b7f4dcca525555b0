"""The paired bootstrap and Newcombe intervals: checked against brute force, the normal approximation,
simulated coverage and a published value — never against numbers the code itself produced."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgetune.report.stats import newcombe_diff_interval, paired_bootstrap_diff_ci, wilson_interval


def item_level_bootstrap(ref: np.ndarray, other: np.ndarray, n_resamples: int,
                         seed: int) -> tuple[float, float]:
    """The textbook paired bootstrap: resample item indices, recompute the accuracy difference."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ref), size=(n_resamples, len(ref)))
    diffs = other[idx].mean(axis=1) - ref[idx].mean(axis=1)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return float(lo), float(hi)


def paired_vectors(n: int, lost: int, gained: int, both_right: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros(n)
    other = np.zeros(n)
    ref[:lost] = 1  # lost: ref right, other wrong
    other[lost:lost + gained] = 1  # gained
    ref[lost + gained:lost + gained + both_right] = 1
    other[lost + gained:lost + gained + both_right] = 1
    np.random.default_rng(1).shuffle(order := np.arange(n))
    return ref[order], other[order]


@pytest.mark.parametrize(("n", "lost", "gained"), [(200, 17, 5), (200, 2, 0), (60, 10, 10), (500, 0, 30)])
def test_count_bootstrap_matches_item_level_bootstrap(n, lost, gained):
    ref, other = paired_vectors(n, lost, gained, both_right=n // 2)
    lo, hi = paired_bootstrap_diff_ci(n, lost, gained)
    blo, bhi = item_level_bootstrap(ref, other, 4000, seed=7)
    step = 1 / n  # differences live on a 1/n grid; allow Monte Carlo error of a couple of steps
    assert abs(lo - blo) <= 2.5 * step and abs(hi - bhi) <= 2.5 * step, ((lo, hi), (blo, bhi))


def test_bootstrap_agrees_with_normal_approximation_at_large_n():
    n, lost, gained = 4000, 300, 200
    d = (gained - lost) / n
    sd = math.sqrt(((lost + gained) / n - d * d) / n)
    lo, hi = paired_bootstrap_diff_ci(n, lost, gained)
    assert lo == pytest.approx(d - 1.959964 * sd, abs=0.1 * sd)
    assert hi == pytest.approx(d + 1.959964 * sd, abs=0.1 * sd)


def test_bootstrap_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    n, p_lost, p_gained, reps = 200, 0.08, 0.03, 300
    hits = 0
    for draw in rng.multinomial(n, [p_lost, p_gained, 1 - p_lost - p_gained], size=reps):
        lo, hi = paired_bootstrap_diff_ci(n, int(draw[0]), int(draw[1]), n_resamples=2000)
        hits += lo <= p_gained - p_lost <= hi
    assert 0.89 <= hits / reps <= 0.99, hits / reps


def test_bootstrap_edges_and_invariants():
    assert paired_bootstrap_diff_ci(200, 0, 0) == (0.0, 0.0)  # identical builds: the bootstrap sees no spread
    with pytest.raises(ValueError, match="no paired items"):  # no data is an error, never a (0, 0) interval
        paired_bootstrap_diff_ci(0, 0, 0)
    lo, hi = paired_bootstrap_diff_ci(100, 9, 3)
    assert lo <= (3 - 9) / 100 <= hi
    assert paired_bootstrap_diff_ci(100, 9, 3) == (lo, hi)  # seeded: reports are reproducible
    assert paired_bootstrap_diff_ci(100, 3, 9) == pytest.approx((-hi, -lo), abs=0.011)  # symmetric
    small = paired_bootstrap_diff_ci(100, 10, 5)
    large = paired_bootstrap_diff_ci(1000, 100, 50)
    assert large[1] - large[0] < small[1] - small[0]  # same rates, more items: narrower
    hi_only_losses = paired_bootstrap_diff_ci(200, 2, 0)[1]
    assert hi_only_losses == 0.0  # no gains to resample: the change can't be positive


@pytest.mark.parametrize(("n", "lost", "gained"), [(10, 6, 5), (10, -1, 0), (-5, 0, 0)])
def test_bootstrap_rejects_inconsistent_counts(n, lost, gained):
    with pytest.raises(ValueError, match="no paired items" if n <= 0 else "lost"):
        paired_bootstrap_diff_ci(n, lost, gained)


def test_newcombe_matches_the_published_example():
    # Newcombe (1998), Stat Med 17:873, Table II: 56/70 − 48/80, method 10 (hybrid score): 0.0524 to 0.3339.
    lo, hi = newcombe_diff_interval(48, 80, 56, 70)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_newcombe_is_built_from_the_wilson_intervals_and_covers():
    a_lo, a_hi = wilson_interval(30, 50)
    b_lo, b_hi = wilson_interval(40, 50)
    lo, hi = newcombe_diff_interval(30, 50, 40, 50)
    assert lo == pytest.approx(0.2 - math.hypot(0.8 - b_lo, a_hi - 0.6))
    assert hi == pytest.approx(0.2 + math.hypot(b_hi - 0.8, 0.6 - a_lo))
    rng = np.random.default_rng(5)
    covered = sum(lo <= 0.1 <= hi for lo, hi in (newcombe_diff_interval(int(rng.binomial(80, 0.7)), 80,
                                                                        int(rng.binomial(90, 0.8)), 90)
                                                 for _ in range(1000)))
    assert 0.93 <= covered / 1000 <= 0.99
