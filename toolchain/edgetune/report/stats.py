"""Small, exact statistics for paired accuracy comparisons (no SciPy needed)."""

from __future__ import annotations

import math


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


def paired_flips(reference: dict[str, bool], other: dict[str, bool]) -> tuple[list[str], list[str]]:
    """Item ids right in `reference` and wrong in `other`, and the reverse (shared ids only)."""
    shared = sorted(set(reference) & set(other))
    lost = [i for i in shared if reference[i] and not other[i]]
    gained = [i for i in shared if other[i] and not reference[i]]
    return lost, gained
