"""What a judge run returns: single-answer ratings, and the pairwise arithmetic (two position-swapped verdicts
per item → an outcome, and the counts over items).

Single grading: `mean_rating` over valid verdicts; invalid ones are counted (`n_invalid`), never guessed.

Order "ab" shows answer a as Assistant A; order "ba" shows answer b as Assistant A. A shown verdict maps back
to the answers: in "ab", A→a and B→b; in "ba", A→b and B→a; "tie" stays a tie. The item's outcome:
- both verdicts valid and equal after mapping → that outcome (a, b or tie);
- both valid but different (a position flip: the judge changed its mind when the order changed) → tie;
- either invalid → invalid (left out of wins/ties/losses; counted in `invalid`);
- identical answers (never sent to the judge) → tie.
`flip_rate` = flips / items with two valid verdicts (identical answers excluded); `first_position_rate` =
share of valid non-tie shown verdicts that chose position A (0.5 means no position bias).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["a", "b", "tie", "invalid"]
_MAP = {"ab": {"A": "a", "B": "b", "tie": "tie"}, "ba": {"A": "b", "B": "a", "tie": "tie"}}


@dataclass(frozen=True)
class SingleItemResult:
    id: str
    rating: int | None
    valid: bool
    reason: str
    raw: str


@dataclass(frozen=True)
class SingleResult:
    n: int
    n_valid: int
    mean_rating: float | None
    calls: int
    cached: int
    elapsed_s: float
    judge: dict[str, Any]
    items: list[SingleItemResult] = field(default_factory=list)

    @property
    def n_invalid(self) -> int:
        return self.n - self.n_valid

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "items"},
            "n_invalid": self.n_invalid,
            "items": [asdict(i) for i in self.items],
        }


@dataclass(frozen=True)
class PairwiseItemResult:
    id: str
    verdict_ab: str | None  # the shown verdict (A, B, tie) with a in position A; None: invalid or not asked
    verdict_ba: str | None  # the shown verdict with b in position A
    outcome: Outcome
    flipped: bool  # both verdicts valid but they disagree once mapped back to a/b
    identical: bool  # the answers were identical, so no judge call was made

    @classmethod
    def from_verdicts(
        cls, item_id: str, verdict_ab: str | None, verdict_ba: str | None
    ) -> PairwiseItemResult:
        if verdict_ab is None or verdict_ba is None:
            return cls(item_id, verdict_ab, verdict_ba, "invalid", False, False)
        first, second = _MAP["ab"][verdict_ab], _MAP["ba"][verdict_ba]
        outcome: Outcome = first if first == second else "tie"
        return cls(item_id, verdict_ab, verdict_ba, outcome, first != second, False)

    @classmethod
    def identical_answers(cls, item_id: str) -> PairwiseItemResult:
        return cls(item_id, None, None, "tie", False, True)


@dataclass(frozen=True)
class PairwiseResult:
    """Win/tie/loss of a against b over `n` items. `ties` includes flips and identical answers."""

    names: tuple[str, str]
    n: int
    wins_a: int
    ties: int
    wins_b: int
    invalid: int
    flips: int
    identical: int
    flip_rate: float | None
    first_position_rate: float | None
    calls: int
    cached: int
    elapsed_s: float
    judge: dict[str, Any]
    items: list[PairwiseItemResult] = field(default_factory=list)

    @property
    def win_tie_loss(self) -> tuple[int, int, int]:
        """(a wins, ties, b wins), over the items with a valid outcome."""
        return self.wins_a, self.ties, self.wins_b

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "items"}
        return {**data, "names": list(self.names), "items": [asdict(i) for i in self.items]}


def combine(
    items: Sequence[PairwiseItemResult],
    *,
    names: tuple[str, str],
    calls: int,
    cached: int,
    elapsed_s: float,
    judge: dict[str, Any],
) -> PairwiseResult:
    """Count outcomes, flips and position preference over `items` (see the module docstring)."""
    outcomes = [i.outcome for i in items]
    judged = [i for i in items if not i.identical and i.outcome != "invalid"]
    flips = sum(i.flipped for i in judged)
    shown = [v for i in items if not i.identical for v in (i.verdict_ab, i.verdict_ba) if v in ("A", "B")]
    return PairwiseResult(
        names=names,
        n=len(items),
        wins_a=outcomes.count("a"),
        ties=outcomes.count("tie"),
        wins_b=outcomes.count("b"),
        invalid=outcomes.count("invalid"),
        flips=flips,
        identical=sum(i.identical for i in items),
        flip_rate=flips / len(judged) if judged else None,
        first_position_rate=shown.count("A") / len(shown) if shown else None,
        calls=calls,
        cached=cached,
        elapsed_s=elapsed_s,
        judge=judge,
        items=list(items),
    )
