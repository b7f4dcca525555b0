"""How far a judge's verdicts can be trusted, measured on the run itself: whether its pairwise outcomes agree
with the task metric on the same items, and whether the judge is the embedded 135M model (a smoke test).

Agreement counts the items the judge decided (a valid outcome, answers not identical) for which both builds
have a metric score: the metric prefers a when a's score is higher, b when lower, else calls it a tie. On
items the metric calls decisively, a judge no better than chance agrees about a third of the time (win, tie or
loss); a trustworthy one agrees on most.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def metric_outcome(score_a: float, score_b: float) -> str:
    return "a" if score_a > score_b else "b" if score_b > score_a else "tie"


def metric_agreement(judge_items: Iterable[Mapping[str, Any]], scores_a: Mapping[str, float],
                     scores_b: Mapping[str, float]) -> dict[str, Any]:
    """`judge_items`: pairwise rows ({"id", "outcome", "identical"}); `scores_*`: item id -> metric score of the
    builds in positions a and b. Returns n (items compared), agreement (share, None when n is 0), and the same
    restricted to items where the metric prefers one build (`n_decisive`, `agreement_decisive`)."""
    pairs = [(row["outcome"], metric_outcome(scores_a[row["id"]], scores_b[row["id"]]))
             for row in judge_items
             if row.get("outcome") in ("a", "b", "tie") and not row.get("identical")
             and row["id"] in scores_a and row["id"] in scores_b]
    decisive = [(j, m) for j, m in pairs if m != "tie"]

    def share(rows: list[tuple[str, str]]) -> float | None:
        return sum(j == m for j, m in rows) / len(rows) if rows else None

    return {"n": len(pairs), "agreement": share(pairs), "n_decisive": len(decisive),
            "agreement_decisive": share(decisive)}


def is_embedded_judge(judge_id: Mapping[str, Any]) -> bool:
    """The fallback judge (no `judge:` endpoint configured) is a local llama.cpp server over the embedded
    SmolLM2-135M: its id is {"local": ...}."""
    return "local" in judge_id
