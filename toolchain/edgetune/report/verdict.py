"""Verdicts that respect sample size: is build B no worse than build A on the held-out task, by more than a margin?

Per-item scores pair across builds by item id. An item's score is its `score` (a float in [0, 1], written by
metrics that grade partially) or, when absent, its `correct` as 0/1. Scores that are all 0 or 1 are proportions:
the CI of the difference is Newcombe's paired interval. Anything else is continuous: a paired bootstrap over
items (percentile, 10,000 seeded resamples).

Two rules share the CI:
- non-inferiority (each build vs the GPU build): "not worse" when the CI's lower end is above −margin, "worse"
  when its upper end is below −margin, "inconclusive" otherwise;
- superiority (the GPU build vs the base, "did the fine-tune work"): "beats" when the lower end is above 0,
  "does not beat" when the upper end is below +margin (any gain is smaller than the margin), "inconclusive"
  otherwise.

An inconclusive verdict carries `n_needed`: the held-out items at which the same rates would decide it (the
same CI method, observed rates scaled; None when the observed difference sits on the threshold). Every verdict
carries `mdd`, the minimum detectable difference for the n used: the smallest true difference a two-sided 5%
test finds 80% of the time, given the observed disagreement between the builds. Pure: reads and writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from edgetune.report.stats import newcombe_paired_diff_interval, paired_bootstrap_mean_ci

DEFAULT_MARGIN = 0.02
NOT_WORSE, WORSE, INCONCLUSIVE = "not worse", "worse", "inconclusive"
BEATS, NOT_BETTER = "beats", "does not beat"
NO_COMPARISON = "no comparison"
PROPORTION, CONTINUOUS = "Newcombe paired (proportions)", "paired bootstrap (continuous)"
Z95, Z80 = 1.959964, 0.841621  # two-sided 5% test, 80% power
MAX_N = 1_000_000  # beyond this the observed difference is taken to sit on the threshold


def item_scores(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """item id → score: `score` when the row has one, else `correct` as 0/1. Raises ValueError for a row
    with neither, or a score outside [0, 1]."""
    out = {}
    for row in rows:
        if row.get("score") is not None:
            score = float(row["score"])
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"item {row.get('id')}: score {score} is outside [0, 1]")
        elif "correct" in row:
            score = 1.0 if row["correct"] else 0.0
        else:
            raise ValueError(f"item {row.get('id')}: no score and no correct field")
        out[str(row["id"])] = score
    return out


def is_proportion(*score_sets: Mapping[str, float]) -> bool:
    return all(v in (0.0, 1.0) for scores in score_sets for v in scores.values())


@dataclass(frozen=True)
class Verdict:
    verdict: str
    rule: str  # "non-inferiority" or "superiority"
    margin: float
    n: int  # paired items
    diff: float | None  # mean score of `other` minus mean score of `reference` on the paired items
    ci95: tuple[float, float] | None
    method: str | None
    n_needed: int | None  # only for an inconclusive verdict; None also when no n would decide it
    mdd: float | None
    lost: int | None = None  # proportions only: items right in the reference and wrong in the other
    gained: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = list(self.ci95) if self.ci95 else None
        return out


def _classify(ci: tuple[float, float], margin: float, rule: str) -> str:
    lo, hi = ci
    if rule == "superiority":
        return BEATS if lo > 0 else (NOT_BETTER if hi < margin else INCONCLUSIVE)
    return NOT_WORSE if lo > -margin else (WORSE if hi < -margin else INCONCLUSIVE)


def _proportion_ci(counts: tuple[float, float, float, float], scale: float = 1.0) -> tuple[float, float]:
    both, lost, gained, neither = (c * scale for c in counts)
    # other − reference: "a" is the other build (right in other only = gained)
    return newcombe_paired_diff_interval(both, gained, lost, neither)


def _n_needed_proportion(counts: tuple[int, int, int, int], margin: float, rule: str) -> int | None:
    n = sum(counts)

    def decided(m: int) -> bool:
        return _classify(_proportion_ci(counts, m / n), margin, rule) != INCONCLUSIVE

    return _smallest_deciding(decided, start=n, floor=n)


def _smallest_deciding(decided, *, start: int, floor: int) -> int | None:
    """The smallest n >= floor with decided(n) (decided is monotone in n): doubling from `start` up to MAX_N,
    then bisection. None when even MAX_N does not decide."""
    lo, hi = floor, start
    while not decided(hi):
        if hi >= MAX_N:
            return None
        lo, hi = hi + 1, min(MAX_N, hi * 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if decided(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _threshold(diff: float, margin: float, rule: str) -> float:
    """The nearest boundary the CI must clear (for the normal-approximation n)."""
    if rule == "superiority":
        return 0.0 if abs(diff) <= abs(diff - margin) else margin
    return -margin


def paired_verdict(reference: Mapping[str, float], other: Mapping[str, float], *, margin: float = DEFAULT_MARGIN,
                   rule: str = "non-inferiority", seed: int = 0) -> Verdict:
    """The verdict on `other` against `reference` over the item ids both scored. With no shared ids the
    verdict is NO_COMPARISON with no CI (never a zero-width interval)."""
    if rule not in ("non-inferiority", "superiority"):
        raise ValueError(f"unknown rule {rule!r}")
    ids = sorted(set(reference) & set(other))
    n = len(ids)
    if n == 0:
        return Verdict(NO_COMPARISON, rule, margin, 0, None, None, None, None, None)
    diffs = [other[i] - reference[i] for i in ids]
    diff = sum(diffs) / n
    if is_proportion({i: reference[i] for i in ids}, {i: other[i] for i in ids}):
        lost = sum(1 for d in diffs if d < 0)
        gained = sum(1 for d in diffs if d > 0)
        both = sum(1 for i in ids if reference[i] == 1.0 and other[i] == 1.0)
        counts = (both, lost, gained, n - both - lost - gained)
        ci = _proportion_ci(counts)
        verdict = _classify(ci, margin, rule)
        needed = _n_needed_proportion(counts, margin, rule) if verdict == INCONCLUSIVE else None
        # with no disagreement seen, take its 95% upper bound (3/n, the rule of three) as the rate
        discordance = max((lost + gained) / n, min(1.0, 3 / n))
        mdd = (Z95 + Z80) * math.sqrt(discordance / n)
        return Verdict(verdict, rule, margin, n, diff, ci, PROPORTION, needed, mdd, lost, gained)
    ci = paired_bootstrap_mean_ci(diffs, seed=seed)
    verdict = _classify(ci, margin, rule)
    sd = math.sqrt(sum((d - diff) ** 2 for d in diffs) / max(1, n - 1))
    needed = None
    if verdict == INCONCLUSIVE:
        gap = abs(diff - _threshold(diff, margin, rule))
        needed = None if gap == 0 else min(MAX_N, max(n + 1, math.ceil((Z95 * sd / gap) ** 2)))
    return Verdict(verdict, rule, margin, n, diff, ci, CONTINUOUS, needed, (Z95 + Z80) * sd / math.sqrt(n))


def verdict_from_row(row: Mapping[str, Any], gpu: Mapping[str, Any], margin: float) -> dict[str, Any]:
    """The verdict of a report row that predates verdicts: for 0/1 scores its flip counts, n and the GPU
    build's accuracy fix the paired table, so this is what `render.build_report` writes today. NO_COMPARISON
    when the counts do not describe one shared item set."""
    n = row["n_paired"] if "n_paired" in row else min(row["n"], gpu["n"])
    lost, gained = len(row["flips_lost"]), len(row["flips_gained"])
    gpu_right = round(gpu["accuracy"] * gpu["n"])
    if not n or gpu["n"] != n or gpu_right < lost or n - gpu_right < gained:
        return Verdict(NO_COMPARISON, "non-inferiority", margin, 0, None, None, None, None, None).to_dict()
    reference = {k: 1.0 if k < gpu_right else 0.0 for k in range(n)}
    # the first `lost` right items turn wrong, the first `gained` wrong ones turn right
    other = {k: (0.0 if k < lost else 1.0) if k < gpu_right else (1.0 if k - gpu_right < gained else 0.0)
             for k in range(n)}
    return paired_verdict({str(k): v for k, v in reference.items()}, {str(k): v for k, v in other.items()},
                          margin=margin).to_dict()


def heldout_needed(margin: float, *, disagreement: float = 0.05, accuracy: float = 0.5) -> int | None:
    """Held-out items needed before a build that loses nothing on average, but disagrees with the GPU build on
    `disagreement` of the items (half lost, half gained), can be shown "not worse" at `margin` (the same
    Newcombe interval and search as `n_needed`). For the data stage's "held-out too small" warning."""
    right = accuracy * (1 - disagreement)
    counts = (right, disagreement / 2, disagreement / 2, 1 - right - disagreement)
    base = 100

    def decided(m: int) -> bool:
        return _classify(_proportion_ci(counts, m), margin, "non-inferiority") == NOT_WORSE

    return _smallest_deciding(decided, start=base, floor=1)
