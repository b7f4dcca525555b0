"""LLM-as-judge: grade answers 1-10 against a rubric, or compare two builds' answers pairwise.

Pairwise judging shows every pair in both orders (answers_a as Assistant A, then as Assistant B). An item's
outcome is the agreed verdict; verdicts that disagree across the two orders (a position flip) count as a tie,
and `flip_rate` is the share of judged items whose two verdicts disagree. Identical answers are a tie without
asking the judge. A reply that does not parse strictly ("Rating: N" / "Verdict: A|B|tie" / the JSON forms) is
recorded as invalid, never guessed, and its item is left out of the win/tie/loss counts.

Reads and writes verdicts under `cache_dir` (see `judge_cache`); reads the API key from the variable the
config names. Raises JudgeError (exit code 8). `judge_*_async` are the coroutines; `judge_single` / `judge_pairwise`
run them with `asyncio.run` for synchronous callers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.aio import run_sync
from edgetune.errors import JudgeError
from edgetune.evals.judge_cache import VerdictCache, verdict_key
from edgetune.evals.judge_client import JudgeClient
from edgetune.judge_config import JudgeConfig
from edgetune.evals.judge_results import (
    PairwiseItemResult,
    PairwiseResult,
    SingleItemResult,
    SingleResult,
    combine,
)
from edgetune.evals.judge_verdicts import FORMAT, PARSERS, SCHEMA, Mode, parse_preference, parse_rating
from edgetune.evals.suites import Rubric

log = logging.getLogger(__name__)

__all__ = [
    "JudgeItem",
    "PairwiseResult",
    "SingleResult",
    "judge_pairwise",
    "judge_pairwise_async",
    "judge_single",
    "judge_single_async",
    "parse_preference",
    "parse_rating",
]


@dataclass(frozen=True)
class JudgeItem:
    """What the judge sees besides the answers: the question and, for rubrics that use it, a reference."""

    id: str
    question: str
    reference: str | None = None


# -- calling ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    key: str
    item_id: str
    mode: Mode
    order: str
    messages: list[dict[str, str]]


def _job(cfg: JudgeConfig, rubric: Rubric, mode: Mode, order: str, item: JudgeItem, **answers: str) -> _Job:
    user = rubric.render(mode, question=item.question, reference=item.reference, **answers)
    messages = [
        {"role": "system", "content": rubric.system},
        {"role": "user", "content": f"{user.rstrip()}\n\n{FORMAT[mode, cfg.json_schema_grammar]}"},
    ]
    sampling = {
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
        "grammar": cfg.json_schema_grammar,
    }
    key = verdict_key(
        model=cfg.model,
        sampling=sampling,
        rubric_sha256=rubric.sha256(),
        mode=mode,
        order=order,
        messages=messages,
    )
    return _Job(key, item.id, mode, order, messages)


@dataclass(frozen=True)
class _Run:
    records: dict[str, dict[str, Any]]
    calls: int
    cached: int
    elapsed_s: float


async def _resolve(
    cfg: JudgeConfig,
    rubric: Rubric,
    jobs: Sequence[_Job],
    cache_dir: Path,
    on_verdict: Callable[[], None] | None,
) -> _Run:
    """Every job's verdict record: from the cache, else from the judge (stored the moment it arrives)."""
    cache = VerdictCache(cache_dir)
    records: dict[str, dict[str, Any]] = {}
    todo: dict[str, _Job] = {}
    for job in jobs:
        if job.key in records or job.key in todo:
            continue
        if (hit := cache.get(job.key)) is not None:
            records[job.key] = hit
            if on_verdict:
                on_verdict()
        else:
            todo[job.key] = job
    started = time.perf_counter()
    log.info(
        "judge %s at %s: %d verdicts to ask, %d cached, concurrency %d",
        cfg.model,
        cfg.base_url,
        len(todo),
        len(records),
        cfg.concurrency,
    )
    if todo:
        async with JudgeClient(cfg) as client:
            gate = asyncio.Semaphore(cfg.concurrency)
            failed = asyncio.Event()  # after one failure no waiting job starts a request

            async def one(job: _Job) -> None:
                async with gate:
                    if failed.is_set():
                        return
                    try:
                        reply = await client.complete(
                            job.messages,
                            json_schema=SCHEMA[job.mode] if cfg.json_schema_grammar else None,
                            schema_name=f"{job.mode}_verdict",
                        )
                    except BaseException:
                        failed.set()
                        raise
                value, reason = PARSERS[job.mode](reply.text)
                if value is None:
                    log.info(
                        "judge verdict for %s (%s, order %s) is invalid: %s",
                        job.item_id,
                        job.mode,
                        job.order,
                        reason,
                    )
                record = {
                    "item_id": job.item_id,
                    "mode": job.mode,
                    "order": job.order,
                    "model": cfg.model,
                    "rubric": rubric.name,
                    "rubric_version": rubric.version,
                    "messages": job.messages,
                    "raw": reply.text,
                    "finish_reason": reply.finish_reason,
                    "verdict": value,
                    "valid": value is not None,
                    "reason": reason,
                    "attempts": reply.attempts,
                    "latency_s": round(reply.latency_s, 4),
                }
                cache.put(job.key, record)
                records[job.key] = {**record, "key": job.key}
                if on_verdict:
                    on_verdict()

            await _all_or_nothing([one(job) for job in todo.values()])
    elapsed_s = time.perf_counter() - started
    if todo:
        log.info("judge: %d calls in %.1fs (%.2f verdicts/s)", len(todo), elapsed_s, len(todo) / elapsed_s)
    return _Run(records, len(todo), len(jobs) - len(todo), elapsed_s)


async def _all_or_nothing(coros: list) -> None:
    """Run `coros` concurrently; on the first failure cancel the rest and raise it. Verdicts already stored
    stay stored, so a rerun resumes where this one stopped."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()


def _check(items: Sequence[JudgeItem], *answer_lists: Sequence[str]) -> None:
    if not items:
        raise JudgeError("the judge was given no items", "judge at least one held-out item")
    for answers in answer_lists:
        if len(answers) != len(items):
            raise JudgeError(
                f"the judge got {len(answers)} answers for {len(items)} items",
                "pass one answer per item, in item order",
            )
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise JudgeError(f"judge item id {dup!r} appears more than once", "give every item a unique id")


# -- single-answer grading -------------------------------------------------------------------------------


async def judge_single_async(
    cfg: JudgeConfig,
    rubric: Rubric,
    items: Sequence[JudgeItem],
    answers: Sequence[str],
    cache_dir: Path,
    *,
    on_verdict: Callable[[], None] | None = None,
) -> SingleResult:
    """Grade each answer 1-10 with `rubric`'s single template; one judge call per item (cached)."""
    _check(items, answers)
    jobs = [_job(cfg, rubric, "single", "-", item, answer=answer) for item, answer in zip(items, answers)]
    run = await _resolve(cfg, rubric, jobs, Path(cache_dir), on_verdict)
    results = []
    for item, job in zip(items, jobs):
        rec = run.records[job.key]
        results.append(SingleItemResult(item.id, rec["verdict"], rec["valid"], rec["reason"], rec["raw"]))
    ratings = [r.rating for r in results if r.rating is not None]
    return SingleResult(
        n=len(results),
        n_valid=len(ratings),
        mean_rating=sum(ratings) / len(ratings) if ratings else None,
        calls=run.calls,
        cached=run.cached,
        elapsed_s=run.elapsed_s,
        judge=cfg.describe(),
        items=results,
    )


def judge_single(
    cfg: JudgeConfig,
    rubric: Rubric,
    items: Sequence[JudgeItem],
    answers: Sequence[str],
    cache_dir: Path,
    *,
    on_verdict: Callable[[], None] | None = None,
) -> SingleResult:
    """Synchronous `judge_single_async`."""
    return run_sync(judge_single_async(cfg, rubric, items, answers, cache_dir, on_verdict=on_verdict))


# -- pairwise comparison ---------------------------------------------------------------------------------


async def judge_pairwise_async(
    cfg: JudgeConfig,
    rubric: Rubric,
    items: Sequence[JudgeItem],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    cache_dir: Path,
    *,
    names: tuple[str, str] = ("a", "b"),
    on_verdict: Callable[[], None] | None = None,
) -> PairwiseResult:
    """Compare answers_a[i] with answers_b[i] for every item, in both orders (two cached calls per item;
    none when the two answers are identical after stripping whitespace). `names` label a and b in the
    result, e.g. ("gpu", "Q4_0")."""
    _check(items, answers_a, answers_b)
    jobs: list[_Job] = []
    pairs: list[tuple[_Job, _Job] | None] = []
    for item, a, b in zip(items, answers_a, answers_b):
        if a.strip() == b.strip():
            pairs.append(None)
            continue
        pair = (
            _job(cfg, rubric, "pairwise", "ab", item, answer_a=a, answer_b=b),
            _job(cfg, rubric, "pairwise", "ba", item, answer_a=b, answer_b=a),
        )
        pairs.append(pair)
        jobs.extend(pair)
    run = await _resolve(cfg, rubric, jobs, Path(cache_dir), on_verdict)
    results: list[PairwiseItemResult] = []
    for item, pair in zip(items, pairs):
        if pair is None:
            results.append(PairwiseItemResult.identical_answers(item.id))
        else:
            results.append(
                PairwiseItemResult.from_verdicts(
                    item.id, run.records[pair[0].key]["verdict"], run.records[pair[1].key]["verdict"]
                )
            )
    return combine(
        results,
        names=names,
        calls=run.calls,
        cached=run.cached,
        elapsed_s=run.elapsed_s,
        judge=cfg.describe(),
    )


def judge_pairwise(
    cfg: JudgeConfig,
    rubric: Rubric,
    items: Sequence[JudgeItem],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    cache_dir: Path,
    *,
    names: tuple[str, str] = ("a", "b"),
    on_verdict: Callable[[], None] | None = None,
) -> PairwiseResult:
    """Synchronous `judge_pairwise_async`."""
    return run_sync(
        judge_pairwise_async(
            cfg, rubric, items, answers_a, answers_b, cache_dir, names=names, on_verdict=on_verdict
        )
    )
