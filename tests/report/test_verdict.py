"""The non-inferiority verdict and its statistics, checked against an independent implementation (SciPy's Wilson
intervals combined as Newcombe's paper writes it, SciPy's bootstrap), a published value, and brute-force
enumeration of every outcome on small n — never against numbers the code itself produced."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is a test dependency: pip install -e '.[test]'")

from edgetune.report.stats import newcombe_paired_diff_interval  # noqa: E402
from edgetune.report.verdict import (  # noqa: E402
    BEATS,
    CONTINUOUS,
    INCONCLUSIVE,
    NO_COMPARISON,
    NOT_BETTER,
    NOT_WORSE,
    PROPORTION,
    WORSE,
    item_scores,
    paired_verdict,
)


def independent_newcombe_paired(both: float, only_a: float, only_b: float, neither: float):
    """Newcombe (1998) method 10 in the paper's own notation (a, b, c, d; l2/u2 and l3/u3 the Wilson limits of
    the two marginal proportions), the Wilson limits from SciPy, float counts through SciPy's score formula."""
    a, b, c, d = both, only_a, only_b, neither
    n = a + b + c + d

    def wilson(x):
        if float(x).is_integer() and float(n).is_integer():
            ci = scipy_stats.binomtest(int(x), int(n)).proportion_ci(method="wilson")
            return ci.low, ci.high
        z = scipy_stats.norm.ppf(0.975)  # fractional counts: the score interval solved as a quadratic
        p = x / n
        roots = np.roots([1 + z * z / n, -(2 * p + z * z / n), p * p])
        return float(min(roots.real)), float(max(roots.real))

    p2, p3 = (a + b) / n, (a + c) / n
    l2, u2 = wilson(a + b)
    l3, u3 = wilson(a + c)
    efgh = (a + b) * (c + d) * (a + c) * (b + d)
    if efgh == 0:
        phi = 0.0
    else:
        ad_bc = a * d - b * c
        phi = (ad_bc - n / 2 if ad_bc > n / 2 else (ad_bc if ad_bc < 0 else 0.0)) / math.sqrt(efgh)
    theta = p2 - p3
    dl2, du2, dl3, du3 = p2 - l2, u2 - p2, p3 - l3, u3 - p3
    delta = math.sqrt(max(0.0, dl2 ** 2 - 2 * phi * dl2 * du3 + du3 ** 2))
    eps = math.sqrt(max(0.0, du2 ** 2 - 2 * phi * du2 * dl3 + dl3 ** 2))
    return max(-1.0, theta - delta), min(1.0, theta + eps)


def scores(outcomes: list[tuple[int, int]]) -> tuple[dict[str, float], dict[str, float]]:
    return ({str(k): float(r) for k, (r, _) in enumerate(outcomes)},
            {str(k): float(o) for k, (_, o) in enumerate(outcomes)})


def table(both: int, lost: int, gained: int, neither: int) -> list[tuple[int, int]]:
    """(reference right?, other right?) per item."""
    return [(1, 1)] * both + [(1, 0)] * lost + [(0, 1)] * gained + [(0, 0)] * neither


def test_newcombe_paired_matches_the_published_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8: the paired table
    # (59, 6 / 16, 80) gives the Newcombe square-and-add interval −0.1186 to −0.0046 (estimate −0.0621).
    lo, hi = newcombe_paired_diff_interval(59, 6, 16, 80)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)


@pytest.mark.parametrize("cells", [(59, 6, 16, 80), (0, 0, 0, 20), (20, 0, 0, 0), (5, 0, 3, 2), (3, 7, 1, 0),
                                   (170, 2, 0, 28), (1, 1, 1, 1), (0, 3, 4, 0)])
def test_newcombe_paired_matches_the_independent_implementation(cells):
    assert newcombe_paired_diff_interval(*cells) == pytest.approx(independent_newcombe_paired(*cells), abs=1e-7)  # z is 1.959964 here, exact in SciPy


def exact_coverage(n: int, probs: tuple[float, float, float, float]) -> float:
    """P(the interval covers the true p_a − p_b), summed exactly over every table of n items."""
    truth = (probs[0] + probs[1]) - (probs[0] + probs[2])
    total = 0.0
    for a, b, c in product(range(n + 1), repeat=3):
        d = n - a - b - c
        if d < 0:
            continue
        pmf = (math.factorial(n) / (math.factorial(a) * math.factorial(b) * math.factorial(c) * math.factorial(d))
               * probs[0] ** a * probs[1] ** b * probs[2] ** c * probs[3] ** d)
        lo, hi = newcombe_paired_diff_interval(a, b, c, d)
        total += pmf * (lo <= truth <= hi)
    return total


@pytest.mark.parametrize("probs", [(0.7, 0.05, 0.05, 0.2), (0.8, 0.1, 0.02, 0.08), (0.4, 0.2, 0.1, 0.3)])
def test_newcombe_paired_covers_about_95_percent_by_enumeration(probs):
    cover = exact_coverage(25, probs)
    assert 0.92 <= cover <= 0.995, cover


def test_verdicts_follow_the_margin_rule_on_every_small_table():
    # brute force: every paired table of 12 items, both rules, against the independent interval
    n = 12
    for both, lost, gained in product(range(n + 1), repeat=3):
        neither = n - both - lost - gained
        if neither < 0:
            continue
        ref, other = scores(table(both, lost, gained, neither))
        lo, hi = independent_newcombe_paired(both, gained, lost, neither)  # a = other, b = reference
        v = paired_verdict(ref, other, margin=0.1)
        assert v.ci95 == pytest.approx((lo, hi), abs=1e-7)  # z is 1.959964 here, exact in SciPy and v.method == PROPORTION
        assert v.verdict == (NOT_WORSE if lo > -0.1 else WORSE if hi < -0.1 else INCONCLUSIVE)
        assert (v.lost, v.gained, v.n) == (lost, gained, n)
        assert v.diff == pytest.approx((gained - lost) / n)
        s = paired_verdict(ref, other, margin=0.1, rule="superiority")
        assert s.verdict == (BEATS if lo > 0 else NOT_BETTER if hi < 0.1 else INCONCLUSIVE)


@pytest.mark.parametrize(("both", "lost", "gained", "neither"), [(150, 2, 1, 47), (170, 3, 0, 27), (40, 5, 5, 10),
                                                                   (100, 0, 0, 100)])
def test_n_needed_is_the_smallest_n_that_decides_at_the_observed_rates(both, lost, gained, neither):
    ref, other = scores(table(both, lost, gained, neither))
    v = paired_verdict(ref, other)
    n = v.n
    if v.verdict != INCONCLUSIVE:
        assert v.n_needed is None
        return
    counts = (both, gained, lost, neither)

    def decided(m: int) -> bool:
        lo, hi = independent_newcombe_paired(*(c * m / n for c in counts))
        return lo > -0.02 or hi < -0.02

    assert v.n_needed is not None and v.n_needed > n
    assert decided(v.n_needed) and not decided(v.n_needed - 1)


def test_a_difference_sitting_on_the_margin_needs_no_finite_n():
    # 50 items, the other build 1 item (2 points) worse: the observed change is exactly −margin
    ref, other = scores(table(30, 1, 0, 19))
    v = paired_verdict(ref, other, margin=0.02)
    assert v.verdict == INCONCLUSIVE and v.n_needed is None


def test_minimum_detectable_difference_is_the_80_percent_power_size():
    ref, other = scores(table(150, 6, 4, 40))
    v = paired_verdict(ref, other)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert v.mdd == pytest.approx(z * math.sqrt(10 / 200 / 200), rel=1e-5)
    # no disagreement at all: the disagreement rate is taken at its 95% upper bound (3/n), never zero
    same = paired_verdict(ref, dict(ref))
    assert same.mdd == pytest.approx(z * math.sqrt(3 / 200 / 200), rel=1e-5) and same.mdd > 0
    # more items, same rates: smaller
    ref4, other4 = scores(table(600, 24, 16, 160))
    assert paired_verdict(ref4, other4).mdd == pytest.approx(v.mdd / 2, rel=1e-5)


def test_continuous_scores_use_a_paired_bootstrap_that_matches_scipy():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.3, 1.0, 150)
    other = np.clip(ref + rng.normal(-0.01, 0.04, 150), 0, 1)
    v = paired_verdict({str(i): float(x) for i, x in enumerate(ref)}, {str(i): float(x) for i, x in enumerate(other)})
    assert v.method == CONTINUOUS and v.lost is None
    expected = scipy_stats.bootstrap((other - ref,), np.mean, method="percentile", n_resamples=10_000,
                                     random_state=np.random.default_rng(0)).confidence_interval
    assert v.ci95 == pytest.approx((expected.low, expected.high), abs=0.0015)
    assert v.diff == pytest.approx(float(np.mean(other - ref)))
    lo, hi = v.ci95
    assert v.verdict == (NOT_WORSE if lo > -0.02 else WORSE if hi < -0.02 else INCONCLUSIVE)
    sd = float(np.std(other - ref, ddof=1))
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert v.mdd == pytest.approx(z * sd / math.sqrt(150), rel=1e-5)


def test_continuous_inconclusive_verdict_gives_the_normal_approximation_n():
    rng = np.random.default_rng(4)
    ref = rng.uniform(0.2, 0.9, 40)
    other = np.clip(ref + rng.normal(-0.015, 0.08, 40), 0, 1)
    v = paired_verdict({str(i): float(x) for i, x in enumerate(ref)}, {str(i): float(x) for i, x in enumerate(other)})
    assert v.verdict == INCONCLUSIVE  # the premise
    d, sd = float(np.mean(other - ref)), float(np.std(other - ref, ddof=1))
    assert v.n_needed == math.ceil((scipy_stats.norm.ppf(0.975) * sd / abs(d + 0.02)) ** 2)


def test_no_paired_items_is_no_comparison_never_a_zero_width_interval():
    v = paired_verdict({"a": 1.0}, {"b": 1.0})
    assert v.verdict == NO_COMPARISON and v.ci95 is None and v.n == 0
    assert paired_verdict({}, {}).to_dict()["ci95"] is None
    with pytest.raises(ValueError, match="no paired items"):
        newcombe_paired_diff_interval(0, 0, 0, 0)


def test_item_scores_prefer_score_and_fall_back_to_correct():
    rows = [{"id": "a", "correct": True}, {"id": "b", "correct": False, "score": 0.5},
            {"id": "c", "correct": False, "score": None}]
    assert item_scores(rows) == {"a": 1.0, "b": 0.5, "c": 0.0}
    with pytest.raises(ValueError, match="outside"):
        item_scores([{"id": "x", "score": 1.5}])
    with pytest.raises(ValueError, match="no score"):
        item_scores([{"id": "x"}])
    # scores that are all 0/1 are proportions even when written as floats
    ref = {str(i): float(i % 2) for i in range(20)}
    assert paired_verdict(ref, dict(ref)).method == PROPORTION
