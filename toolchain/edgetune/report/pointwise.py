"""The pointwise judge's numbers for one build: mean rating (1-10) with a 95% CI, the paired difference from the
GPU build's ratings on the same items, and how well the ratings follow the task metric (Spearman rank
correlation over the items both scored; a judge that tracks the reference metric earns some trust, one near 0
is noise). Invalid replies are left out, never guessed; their count is kept. A judge that gives every answer
the same rating (the embedded 135M model rates nearly everything 10) has no rank correlation to report:
`constant_rating` says so instead of a silent blank."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgetune.report.stats import paired_bootstrap_mean_ci


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank (what Spearman's rho needs)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson's r of the ranks); None with fewer than 3 pairs or a constant side."""
    if len(xs) != len(ys):
        raise ValueError("spearman needs two sequences of the same length")
    if len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / (sxx * syy) ** 0.5


def summarise(ratings: Mapping[str, float | None], gpu_ratings: Mapping[str, float | None] | None,
              scores: Mapping[str, float]) -> dict[str, Any]:
    """`ratings`/`gpu_ratings`: item id -> rating (None: invalid reply); `scores`: item id -> task metric score
    of this build. The GPU build's own row passes gpu_ratings None (no difference to itself)."""
    valid = {k: float(v) for k, v in ratings.items() if v is not None}
    out: dict[str, Any] = {"n": len(ratings), "n_valid": len(valid), "invalid": len(ratings) - len(valid),
                           "mean_score": sum(valid.values()) / len(valid) if valid else None, "ci95": None,
                           "vs_gpu": None, "metric_spearman": None}
    if not valid:
        return out
    out["ci95"] = list(paired_bootstrap_mean_ci(list(valid.values())))
    shared = sorted(k for k in valid if k in scores)
    out["metric_spearman"] = spearman([valid[k] for k in shared], [scores[k] for k in shared])
    out["n_metric"] = len(shared)
    if len(valid) >= 3 and len(set(valid.values())) == 1:
        out["constant_rating"] = next(iter(valid.values()))
    if gpu_ratings is not None:
        ids = sorted(k for k in valid if gpu_ratings.get(k) is not None)
        if ids:
            diffs = [valid[k] - float(gpu_ratings[k]) for k in ids]  # type: ignore[arg-type]
            out["vs_gpu"] = {"n": len(ids), "diff": sum(diffs) / len(diffs),
                             "ci95": list(paired_bootstrap_mean_ci(diffs))}
        else:
            out["vs_gpu"] = {"n": 0, "diff": None, "ci95": None}  # no comparison, never a zero-width CI
    return out
