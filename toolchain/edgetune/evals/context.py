"""The board's context as a limit on the held-out items, checked before any training.

An edge build runs on the board with the target profile's `context_length` (the bundle's runner, its
llama-server line and the Modelfile use it), or `eval.context_length` when set, never more than the model's
own context. A held-out item needs its prompt plus the generation budget; an item over the board's context is
handled by an explicit policy (`eval.over_context`): `exclude` leaves it out of every build's score (the
builds stay paired on the same items), `fail` scores it as a failure on every GGUF build (what the board would
do) and as usual on the base and GPU builds. Either way the report says how many.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edgetune.errors import DataError
from edgetune.evals.task import TaskItem

Policy = Literal["exclude", "fail"]


@dataclass(frozen=True)
class ContextCheck:
    context: int  # tokens the edge builds run with
    where: str  # whose context it is, e.g. "rpi5's context_length"
    budget: int  # tokens generated per item
    longest: int  # the longest item's prompt plus the budget
    n: int  # held-out items checked
    over: tuple[str, ...]  # ids of the items over the context
    policy: Policy

    def fits(self, item: TaskItem) -> bool:
        return len(item.prompt_ids) + self.budget <= self.context

    def summary(self) -> str:
        if not self.over:
            return (f"every held-out item fits {self.where} of {self.context:,} tokens (longest {self.longest:,} "
                    f"with the {self.budget}-token answer budget)")
        what = ("excluded from every build's score" if self.policy == "exclude"
                else "scored as failures on the GGUF builds")
        return (f"{len(self.over)} of {self.n} held-out items exceed {self.where} of {self.context:,} tokens "
                f"(prompt plus the {self.budget}-token answer budget; longest {self.longest:,}): {what} "
                f"(eval.over_context: {self.policy})")

    def to_dict(self) -> dict[str, Any]:
        return {"context": self.context, "where": self.where, "budget": self.budget, "longest": self.longest,
                "n": self.n, "over": len(self.over), "policy": self.policy, "summary": self.summary()}


def check(items: Sequence[TaskItem], budget: int, context: int, where: str, policy: Policy) -> ContextCheck:
    """Which held-out items the board's context cannot take. Raises DataError when none fits under `exclude`
    (nothing would be left to score) or when none fits at all (no edge build could answer anything)."""
    lengths = [len(i.prompt_ids) + budget for i in items]
    result = ContextCheck(context, where, budget, max(lengths, default=0), len(items),
                          tuple(i.id for i, n in zip(items, lengths) if n > context), policy)
    if items and len(result.over) == len(items):
        shortest = min(lengths)
        raise DataError(f"none of the {len(items)} held-out items fits {where} of {context:,} tokens (the "
                        f"shortest needs {shortest:,} with the {budget}-token answer budget)",
                        "pick a target with a longer context_length, set eval.context_length, or shorten the "
                        "prompts")
    return result


def keep(items: Sequence[TaskItem], ctx: ContextCheck) -> list[TaskItem]:
    """The items every build is scored on: all of them, less those over the context under `exclude`."""
    return [i for i in items if ctx.policy == "fail" or i.id not in set(ctx.over)]
