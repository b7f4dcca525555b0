"""What every task metric is: a scorer of one model answer against one reference, registered by name.

A metric returns a `Score` per item so items pair across builds: `score` in [0, 1] is the metric's value for
the item, `correct` the strict pass/fail (for binary metrics `correct == (score == 1.0)`), `detail` whatever
helps a reader see why (the extracted number, the JSON fields that matched). Subclasses register themselves
under `name` (class keyword), so the registry and the classes cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from edgetune.metric_spec import MetricSpec

REGISTRY: dict[str, type[Metric]] = {}


@dataclass(frozen=True)
class Score:
    score: float
    correct: bool
    detail: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # a metric bug must not leak a value the statistics downstream would average silently
        if not (isinstance(self.score, float) and math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise ValueError(f"metric score must be a float in [0, 1], got {self.score!r}")


class Metric:
    """Scores answers for one task. `binary` metrics give 0.0 or 1.0 only; the others (json per-field, text)
    give partial credit."""

    name: ClassVar[str]
    binary: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init_subclass__(cls, *, name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name in REGISTRY:
            raise TypeError(f"metric {name!r} is registered twice ({REGISTRY[name].__name__}, {cls.__name__})")
        cls.name = name
        REGISTRY[name] = cls

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec

    def reference_problem(self, reference: str) -> str | None:
        """Why `reference` cannot be scored by this metric (a phrase completing "item X ..."), or None."""
        return None if reference.strip() else "has an empty reference"

    def score(self, output: str, reference: str) -> Score:
        raise NotImplementedError


def binary(ok: bool, detail: dict[str, Any] | None = None) -> Score:
    return Score(1.0 if ok else 0.0, ok, detail)
