"""Small, exact statistics for paired accuracy comparisons (no SciPy needed): Wilson intervals, exact McNemar,
Newcombe's interval for a difference of paired proportions, and paired bootstraps over items."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion; sound at small n and near 0 or 1, unlike the normal one."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (A right, B wrong) and c (the reverse):
    a binomial test of min(b, c) under p = 0.5."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_flips(reference: Mapping[str, bool], other: Mapping[str, bool]) -> tuple[list[str], list[str]]:
    """Item ids right in `reference` and wrong in `other`, and the reverse (shared ids only)."""
    shared = sorted(set(reference) & set(other))
    lost = [i for i in shared if reference[i] and not other[i]]
    gained = [i for i in shared if other[i] and not reference[i]]
    return lost, gained


def paired_bootstrap_diff_ci(n: int, lost: int, gained: int, *, n_resamples: int = 10_000, seed: int = 0,
                             level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of accuracy(other) − accuracy(reference) by a paired bootstrap over `n` shared items.

    Resampling items with replacement and recomputing the difference depends only on how many of each kind
    of item are drawn: `lost` (reference right, other wrong: −1), `gained` (+1) and the rest (0). So the
    item-level bootstrap is drawn exactly as a multinomial over those three counts, which needs only the
    counts a report stores. Seeded, hence reproducible. Raises ValueError for inconsistent counts and for
    n <= 0: no paired items is no comparison, never a zero-width interval."""
    if n <= 0:
        raise ValueError(f"no paired items (n={n}): there is nothing to compare")
    if lost < 0 or gained < 0 or lost + gained > n:
        raise ValueError(f"expected 0 <= lost + gained <= n, got lost={lost}, gained={gained}, n={n}")
    import numpy as np

    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, [lost / n, gained / n, 1 - (lost + gained) / n], size=n_resamples)
    diffs = (draws[:, 1] - draws[:, 0]) / n
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def newcombe_diff_interval(correct_a: int, n_a: int, correct_b: int, n_b: int,
                           z: float = 1.959964) -> tuple[float, float]:
    """95% CI of p_b − p_a for two independent proportions (Newcombe's hybrid score method, built from the
    two Wilson intervals). Used to compare runs whose per-item results are not paired in the report."""
    p_a = correct_a / n_a if n_a else 0.0
    p_b = correct_b / n_b if n_b else 0.0
    lo_a, hi_a = wilson_interval(correct_a, n_a, z)
    lo_b, hi_b = wilson_interval(correct_b, n_b, z)
    d = p_b - p_a
    lower = d - math.sqrt((p_b - lo_b) ** 2 + (hi_a - p_a) ** 2)
    upper = d + math.sqrt((hi_b - p_b) ** 2 + (p_a - lo_a) ** 2)
    return (max(-1.0, lower), min(1.0, upper))


def newcombe_paired_diff_interval(both: float, only_a: float, only_b: float, neither: float,
                                  z: float = 1.959964) -> tuple[float, float]:
    """95% CI of p_a − p_b for two proportions measured on the same items (Newcombe 1998, method 10: the
    square-and-add combination of two Wilson intervals, corrected for the pairs' correlation).

    `both`: items right in A and in B; `only_a`: right in A only; `only_b`: right in B only; `neither`. The
    counts may be fractional (the sample-size search scales observed rates). Raises ValueError for no items."""
    n = both + only_a + only_b + neither
    if n <= 0:
        raise ValueError("no paired items: there is nothing to compare")
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    lo_a, hi_a = _wilson_float(both + only_a, n, z)
    lo_b, hi_b = _wilson_float(both + only_b, n, z)
    # phi estimates the correlation of the pairs; a positive one is shrunk by n/2 (Newcombe's correction, so
    # that a perfectly concordant table does not give a degenerate interval)
    marginals = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    shrunk = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = shrunk / math.sqrt(marginals) if marginals > 0 else 0.0
    d = p_a - p_b
    lower = d - math.sqrt(max(0.0, (p_a - lo_a) ** 2 - 2 * phi * (p_a - lo_a) * (hi_b - p_b) + (hi_b - p_b) ** 2))
    upper = d + math.sqrt(max(0.0, (hi_a - p_a) ** 2 - 2 * phi * (hi_a - p_a) * (p_b - lo_b) + (p_b - lo_b) ** 2))
    return (max(-1.0, lower), min(1.0, upper))


def _wilson_float(hits: float, n: float, z: float) -> tuple[float, float]:
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_bootstrap_mean_ci(diffs: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0,
                             level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of per-item differences by resampling items with replacement (continuous
    scores: the counts shortcut of `paired_bootstrap_diff_ci` holds only for 0/1 scores). Seeded. Raises
    ValueError for no items."""
    if not diffs:
        raise ValueError("no paired items: there is nothing to compare")
    import numpy as np

    values = np.asarray(diffs, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))
