"""Task accuracy: greedy answers to labelled prompts, compared with the reference label after normalisation.

Works on any `Runtime`; reads nothing from disk and writes nothing (callers store `TaskResult.to_dict()`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgetune.errors import EvalError
from edgetune.labels import label_matches, normalise_label
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


@dataclass(frozen=True)
class TaskResult:
    accuracy: float
    n: int
    items: list[ItemResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n, "items": [asdict(item) for item in self.items]}


def run_label_accuracy(
    runtime: Runtime,
    items: Sequence[TaskItem],
    *,
    decode: Callable[[list[int]], str],
    max_new_tokens: int = 4,
    stop_ids: Sequence[int],
    on_item: Callable[[], None] | None = None,
) -> TaskResult:
    """Greedy-decode each item's prompt (at most `max_new_tokens`, stopping before any of `stop_ids`), decode
    the new ids to text with `decode` and score it with `label_matches`. `on_item` is called after each item
    (progress). Latency is the wall time of the runtime's generate call. Raises EvalError for no items or an
    item whose reference is empty after normalisation; runtime errors propagate."""
    if not items:
        raise EvalError("label-accuracy eval has no items", "check the eval split is not empty")
    results: list[ItemResult] = []
    for item in items:
        if not normalise_label(item.reference):
            raise EvalError(f"item {item.id} has an empty reference label", "every eval row needs a label")
        started = time.perf_counter()
        new_ids = runtime.generate(list(item.prompt_ids), max_new_tokens, stop_ids)
        latency_s = time.perf_counter() - started
        output = decode(new_ids)
        results.append(
            ItemResult(
                id=item.id,
                prompt_sha256=prompt_sha256(item.prompt_ids),
                output=output,
                reference=item.reference,
                correct=label_matches(output, item.reference),
                latency_s=latency_s,
            )
        )
        if on_item is not None:
            on_item()
    accuracy = sum(r.correct for r in results) / len(results)
    log.info("label accuracy %.4f on %d items (%s)", accuracy, len(results), runtime.name)
    return TaskResult(accuracy=accuracy, n=len(results), items=results)
