"""The held-out task eval: greedy answers to the prompts, each scored against its reference by a task metric
(`edgetune.evals.metrics`: label, exact, contains, regex, json, number, text).

Every item keeps its answer, its `score` in [0, 1] and `correct`, and whether the answer was cut off at
`max_new_tokens` (`truncated`): a truncated JSON object or a reasoning chain cut before its final number is a
budget problem, not a model problem, and the report counts them. Works on any `Runtime`; reads nothing from
disk and writes nothing (callers store `TaskResult.to_dict()`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgetune.errors import EvalError
from edgetune.evals.metrics import Metric, MetricSpec, make_metric
from edgetune.labels import label_matches, normalise_label  # noqa: F401  (re-exported by edgetune.evals)
from edgetune.runtimes.base import Runtime

log = logging.getLogger(__name__)


def prompt_sha256(prompt_ids: Sequence[int]) -> str:
    """SHA-256 of the prompt ids written as decimal numbers joined by "," (UTF-8): easy to recompute with the
    standard library on a device, and it proves two runs scored the same tokens."""
    return hashlib.sha256(",".join(str(int(t)) for t in prompt_ids).encode()).hexdigest()


@dataclass(frozen=True)
class TaskItem:
    id: str
    prompt_ids: list[int]
    reference: str


@dataclass(frozen=True)
class ItemResult:
    id: str
    prompt_sha256: str
    output: str
    reference: str
    correct: bool
    latency_s: float
    score: float = 0.0  # the metric's value for this item, in [0, 1]
    truncated: bool = False  # generation hit max_new_tokens before any stop id
    detail: dict[str, Any] | None = None  # metric-specific: extracted number, JSON fields, chrF and ROUGE-L

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        if row["detail"] is None:
            del row["detail"]
        return row


@dataclass(frozen=True)
class TaskResult:
    accuracy: float
    n: int
    items: list[ItemResult] = field(default_factory=list)
    metric: str = "label"
    score: float = 0.0  # mean of the items' scores
    truncated: int = 0  # items cut off at max_new_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "score": self.score, "accuracy": self.accuracy, "n": self.n,
                "truncated": self.truncated, "items": [item.to_dict() for item in self.items]}


def run_task_metric(
    runtime: Runtime,
    items: Sequence[TaskItem],
    metric: Metric,
    *,
    decode: Callable[[list[int]], str],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    on_item: Callable[[], None] | None = None,
    context: int | None = None,
) -> TaskResult:
    """Greedy-decode each item's prompt (at most `max_new_tokens`, stopping before any of `stop_ids`), decode
    the new ids to text with `decode` and score it with `metric`. An item is `truncated` when the runtime
    returned `max_new_tokens` ids: it stopped on the budget, not on a stop id. `on_item` is called after each
    item (progress). Latency is the wall time of the runtime's generate call. With `context`, an item whose prompt
plus `max_new_tokens` exceeds it is scored as a failure without running (detail {"over_context": context}):
what a board with that context would make of it. Raises EvalError for no items or
    a reference the metric cannot score (checked for every item before any generation); runtime errors
    propagate."""
    if not items:
        raise EvalError(f"{metric.name} eval has no items", "check the eval split is not empty")
    for item in items:
        if problem := metric.reference_problem(item.reference):
            raise EvalError(f"item {item.id} {problem} for metric {metric.name}",
                            "fix that row's answer, or choose another metric (eval.metric)")
    results: list[ItemResult] = []
    for item in items:
        if context is not None and len(item.prompt_ids) + max_new_tokens > context:
            results.append(ItemResult(id=item.id, prompt_sha256=prompt_sha256(item.prompt_ids), output="",
                                      reference=item.reference, correct=False, latency_s=0.0,
                                      detail={"over_context": context}))
            if on_item is not None:
                on_item()
            continue
        started = time.perf_counter()
        new_ids = runtime.generate(list(item.prompt_ids), max_new_tokens, stop_ids)
        latency_s = time.perf_counter() - started
        output = decode(new_ids)
        scored = metric.score(output, item.reference)
        results.append(
            ItemResult(
                id=item.id,
                prompt_sha256=prompt_sha256(item.prompt_ids),
                output=output,
                reference=item.reference,
                correct=scored.correct,
                latency_s=latency_s,
                score=scored.score,
                truncated=len(new_ids) >= max_new_tokens,
                detail=scored.detail,
            )
        )
        if on_item is not None:
            on_item()
    n = len(results)
    accuracy = sum(r.correct for r in results) / n
    score = sum(r.score for r in results) / n
    truncated = sum(r.truncated for r in results)
    log.info("%s: score %.4f, accuracy %.4f on %d items, %d truncated (%s)", metric.name, score, accuracy, n,
             truncated, runtime.name)
    return TaskResult(accuracy=accuracy, n=n, items=results, metric=metric.name, score=score, truncated=truncated)


def run_label_accuracy(
    runtime: Runtime,
    items: Sequence[TaskItem],
    *,
    decode: Callable[[list[int]], str],
    max_new_tokens: int = 4,
    stop_ids: Sequence[int],
    on_item: Callable[[], None] | None = None,
) -> TaskResult:
    """`run_task_metric` with the label metric (`label_matches`): the first answer line equals the label."""
    return run_task_metric(runtime, items, make_metric(MetricSpec(name="label")), decode=decode,
                           max_new_tokens=max_new_tokens, stop_ids=stop_ids, on_item=on_item)
