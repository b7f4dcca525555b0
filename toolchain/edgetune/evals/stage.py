"""The eval stages: score one build (base, GPU build, a GGUF) on the held-out task and on each forgetting set.

Every build is fed the same token ids, made once with the base model's HF tokenizer and chat template, so
per-item results pair up across builds. Each (build, suite) is its own cached artifact holding
`results.jsonl` (one line per item) and the summary in its record's metrics; each stage returns its typed
view (edgetune.outputs: TaskEval, ForgettingEval, FidelityReference, Fidelity, PairwiseJudge, PointwiseJudge).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from edgetune.artifacts import Artifact, Builder, Store
from edgetune.outputs import (
    Fidelity,
    FidelityReference,
    ForgettingEval,
    PairwiseJudge,
    PointwiseJudge,
    TaskEval,
)
from edgetune.evals.forgetting import MCItem, run_multiple_choice
from edgetune.errors import EvalError
from edgetune.evals.metrics import MetricSpec, derive_max_new_tokens, make_metric, resolve_spec
from edgetune.evals.task import TaskItem, run_task_metric
from edgetune.progress import NullProgress, Progress
from edgetune.runtimes.base import Runtime

log = logging.getLogger(__name__)

KIND_TASK = TaskEval.KIND
KIND_FORGET = ForgettingEval.KIND


class _Borrowed(Runtime):
    """A runtime lent to one stage: closing it (the stage's `with`) leaves the model loaded for the next."""

    def __init__(self, inner: Runtime):
        self._inner = inner
        self.name = inner.name

    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
        return self._inner.generate(prompt_ids, max_new_tokens, stop_ids)

    def loglikelihood(self, requests):
        return self._inner.loglikelihood(requests)

    def logits(self, ids: list[int]):
        return self._inner.logits(ids)


class RuntimeLease:
    """Opens one build's runtime at most once for several eval stages (task, each forgetting set): pass the
    lease where a stage takes `open_runtime`. Stages served from the cache never open it; leaving the `with`
    frees the model."""

    def __init__(self, open_runtime: Callable[[], Runtime]):
        self._open = open_runtime
        self._runtime: Runtime | None = None

    def __call__(self) -> Runtime:
        if self._runtime is None:
            self._runtime = self._open()
        return _Borrowed(self._runtime)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


def task_items(examples: Sequence[dict[str, Any]], tokenizer) -> list[TaskItem]:
    """Render each held-out example's prompt with the model's own chat template, as the trainer did."""
    items = []
    for ex in examples:
        text = tokenizer.apply_chat_template(ex["messages"][:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        items.append(TaskItem(id=ex["id"], prompt_ids=ids, reference=ex["messages"][-1]["content"]))
    return items


@dataclass(frozen=True)
class TaskPlan:
    """How the held-out task is scored: the resolved metric, why it was chosen, and the token budget."""

    metric: MetricSpec
    why: str
    max_new_tokens: int
    derived_tokens: bool  # True when max_new_tokens came from the references, not the config

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric.name, "metric_options": self.metric.model_dump(exclude_defaults=True,
                                                                                      exclude={"name"}),
                "why": self.why, "max_new_tokens": self.max_new_tokens, "max_new_tokens_derived": self.derived_tokens}


def plan_task(items: Sequence[TaskItem], tokenizer, spec: MetricSpec, max_new_tokens: int | None) -> TaskPlan:
    """Resolve `auto` against the items' references and size the budget from their token lengths (the same
    tokenizer the prompts use) unless `max_new_tokens` is set. Raises EvalError when there are no items."""
    if not items:
        raise EvalError("the held-out task has no items", "check data.heldout_size and the data file")
    resolved, why = resolve_spec(spec, [i.reference for i in items])
    if max_new_tokens is not None:
        plan = TaskPlan(resolved, why, max_new_tokens, False)
    else:
        lengths = [len(tokenizer(i.reference, add_special_tokens=False)["input_ids"]) for i in items]
        plan = TaskPlan(resolved, why, derive_max_new_tokens(resolved.name, lengths), True)
    log.info("task metric %s (%s); max_new_tokens %d%s", resolved.name, why, plan.max_new_tokens,
             " (derived from the references)" if plan.derived_tokens else "")
    return plan


def stop_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(tokenizer, "added_tokens_encoder", {})
    for name in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        if name in gen:
            ids.add(gen[name])
    return sorted(i for i in ids if i is not None)


def _items_hash(items: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps(it.__dict__, sort_keys=True, default=str).encode())
    return h.hexdigest()


def run_task(build: str, build_key: str, open_runtime: Callable[[], Runtime], items: Sequence[TaskItem],
             tokenizer, store: Store, *, max_new_tokens: int, metric: MetricSpec | None = None,
             progress: Progress | None = None, context: int | None = None) -> TaskEval:
    """Score `items` on one build with `metric` (resolved, not `auto`; None: label). results.jsonl holds one
    row per item (id, prompt_sha256, output, reference, correct, latency_s, score, truncated, detail); the
    record's metrics hold metric, score, accuracy, n, correct, truncated and the median latency. `context`:
    items over it are scored as failures (evals/context.py's `fail` policy)."""
    spec = metric or MetricSpec(name="label")
    scorer = make_metric(spec)
    # "results": 2 marks the per-item score/truncated fields, so artifacts cached before them are not reused
    params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "metric": spec.model_dump(exclude_defaults=True),
                              "results": 2}
    if context is not None and any(len(i.prompt_ids) + max_new_tokens > context for i in items):
        params["context"] = context  # only where it changes a score, so other keys stay as they were
    inputs = {"build": build_key, "items": _items_hash(items)}

    def score(b: Builder) -> None:
        stops = stop_ids(tokenizer)
        with (progress or NullProgress()).task(f"task eval: {build}", len(items)) as bar, \
                open_runtime() as rt:
            result = run_task_metric(rt, items, scorer,
                                     decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                                     max_new_tokens=max_new_tokens, stop_ids=stops, on_item=bar.advance,
                                     context=params.get("context"))
        data = result.to_dict()
        TaskEval.write_rows(b, data["items"])
        latencies = sorted(i["latency_s"] for i in data["items"])
        TaskEval.write(b, build=build, metric=result.metric, score=result.score, accuracy=result.accuracy,
                       n=result.n, correct=sum(i["correct"] for i in data["items"]), truncated=result.truncated,
                       max_new_tokens=max_new_tokens, latency_p50_s=latencies[len(latencies) // 2])
        log.info("task eval %s: %s %.3f, accuracy %.3f on %d items (%d truncated)", build, result.metric,
                 result.score, result.accuracy, result.n, result.truncated)

    # the build's name labels the record; its key (in inputs) is what identifies it
    return TaskEval.of(store.stage(KIND_TASK, params, inputs, score, record_params={**params, "build": build}))


def forgetting_stage(set_name: str, build: str) -> str:
    """The stage name of one build's forgetting eval on one set in `stages`/run.json, e.g. "arc_easy-Q4_0"
    ("mmlu-<build>" as before the other sets existed)."""
    return f"{set_name}-{build}"


def run_forgetting(build: str, build_key: str, open_runtime: Callable[[], Runtime], items: Sequence[MCItem],
                   store: Store, *, set_name: str = "mmlu", progress: Progress | None = None) -> ForgettingEval:
    """Score `items` (one forgetting set) on one build: results.jsonl holds one row per item (id, prompt
    sha256, the choice picked by acc and by acc_norm, the answer, every choice's log-likelihood); the record's
    metrics hold acc, acc_norm, n and per-subject figures."""
    # MMLU keeps the parameters it had before the other sets, so its cached artifacts stay valid
    params = {"metric": "mmlu_loglikelihood"} if set_name == "mmlu" else \
        {"metric": "mc_loglikelihood", "set": set_name}
    inputs = {"build": build_key, "items": _items_hash(items)}

    def score(b: Builder) -> None:
        with (progress or NullProgress()).task(f"{set_name}: {build}", len(items)) as bar, \
                open_runtime() as rt:
            result = run_multiple_choice(rt, items, on_item=bar.advance)
        ForgettingEval.write_rows(b, result.to_dict()["items"])
        ForgettingEval.write(b, build=build, set_name=set_name, acc=result.acc, acc_norm=result.acc_norm,
                             n=result.n, per_subject=result.per_subject)
        log.info("forgetting %s on %s: acc %.3f, acc_norm %.3f (n=%d)", build, set_name, result.acc,
                 result.acc_norm, result.n)

    return ForgettingEval.of(store.stage(KIND_FORGET, params, inputs, score,
                                         record_params={**params, "build": build}))


def read_results(artifact: Artifact) -> list[dict[str, Any]]:
    """results.jsonl's rows of any eval artifact, typed or not (the typed ones also have `.rows()`)."""
    with artifact.file("results").open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


KIND_FID_REF = FidelityReference.KIND
KIND_FID = Fidelity.KIND


def run_fidelity_reference(build_key: str, open_runtime: Callable[[], Runtime], items: Sequence[TaskItem],
                           tokenizer, store: Store, *, n_tokens: int,
                           progress: Progress | None = None) -> FidelityReference:
    """The GPU build's greedy continuations of the gate prompts (computed once, shared by every GGUF)."""
    from edgetune.evals.fidelity import references

    params = {"n_tokens": n_tokens}
    inputs = {"build": build_key, "items": _items_hash(items)}

    def generate(b: Builder) -> None:
        with (progress or NullProgress()).task("fidelity: GPU reference", len(items)) as bar, \
                open_runtime() as rt:
            refs = references(rt, [(i.id, i.prompt_ids) for i in items], n_tokens=n_tokens,
                              stop_ids=stop_ids(tokenizer), on_item=bar.advance)
        FidelityReference.write_rows(b, [r.__dict__ for r in refs])
        FidelityReference.write(b, n=len(refs), stopped=sum(r.stopped for r in refs))

    return FidelityReference.of(store.stage(KIND_FID_REF, params, inputs, generate))


def run_fidelity(build: str, build_key: str, reference: FidelityReference, open_reference: Callable[[], Runtime],
                 open_runtime: Callable[[], Runtime], tokenizer, store: Store, *,
                 progress: Progress | None = None) -> Fidelity:
    """KLD, top-1, greedy and stop agreement of one edge build against the GPU build (see evals.fidelity)."""
    from edgetune.evals.fidelity import Reference, compare

    params = {"metric": "fidelity"}
    inputs = {"build": build_key, "reference": reference.key}

    def score(b: Builder) -> None:
        refs = [Reference(**row) for row in reference.rows()]
        with (progress or NullProgress()).task(f"fidelity: {build}", len(refs)) as bar, \
                open_reference() as ref_rt, open_runtime() as rt:
            result = compare(ref_rt, rt, refs, stop_ids=stop_ids(tokenizer), on_item=bar.advance)
        Fidelity.write_rows(b, [i.__dict__ for i in result.items])
        Fidelity.write(b, build=build, summary=result.summary())
        log.info("fidelity %s: KLD %.4f, top-1 %.3f", build, result.kld_mean, result.top1_agreement)

    return Fidelity.of(store.stage(KIND_FID, params, inputs, score, record_params={**params, "build": build}))


KIND_JUDGE = PairwiseJudge.KIND


def run_judge_pairwise(build: str, gpu_task: TaskEval, edge_task: TaskEval, items: Sequence[Any], rubric_name: str,
                       judge_cfg, fallback_gguf: Path, cache_dir: Path, store: Store, *,
                       progress: Progress | None = None) -> PairwiseJudge:
    """Pairwise GPU build vs one edge build on the task eval's own greedy answers, both orders judged.

    `items`: evals.judge.JudgeItem. With `judge_cfg` None a local llama.cpp judge over `fallback_gguf` is
    started, but only when some answers differ (identical answers are ties without a call). Verdicts are cached
    per call in `cache_dir`; the whole comparison is also a store artifact, so a rebuild starts no server."""
    from edgetune.evals.judge import judge_pairwise
    from edgetune.evals.judge_server import judge_endpoint, local_model_name
    from edgetune.evals.suites import load_rubric

    rubric = load_rubric(rubric_name)
    judge_id = judge_cfg.describe() if judge_cfg is not None else {"local": local_model_name(fallback_gguf)}
    params = {"rubric": rubric_name, "rubric_sha256": rubric.sha256(), "judge": judge_id}
    inputs = {"gpu": gpu_task.key, "edge": edge_task.key, "items": _items_hash(items)}

    def judge(b: Builder) -> None:
        gpu, edge = gpu_task.item_outputs(), edge_task.item_outputs()
        answers_a, answers_b = [gpu[i.id] for i in items], [edge[i.id] for i in items]
        with (progress or NullProgress()).task(f"judge: gpu vs {build}", 2 * len(items)) as bar:
            if answers_a == answers_b:
                result = None  # nothing to judge: every item is a tie by identity
                PairwiseJudge.write(b, build=build, n=len(items), wins_gpu=0, ties=len(items), wins_edge=0,
                                    invalid=0, flip_rate=None, calls=0, identical=len(items), judge=judge_id)
            else:
                with judge_endpoint(judge_cfg, fallback_gguf) as cfg:
                    result = judge_pairwise(cfg, rubric, items, answers_a, answers_b, cache_dir,
                                            names=("gpu", build), on_verdict=bar.advance)
                data = result.to_dict()
                PairwiseJudge.write(b, build=build, n=result.n, wins_gpu=result.wins_a, ties=result.ties,
                                    wins_edge=result.wins_b, invalid=result.invalid, flip_rate=result.flip_rate,
                                    calls=result.calls, identical=data.get("identical"), judge=judge_id)
                PairwiseJudge.write_rows(b, data["items"])

    return PairwiseJudge.of(store.stage(KIND_JUDGE, params, inputs, judge,
                                        record_params={**params, "build": build}))


KIND_JUDGE_SINGLE = PointwiseJudge.KIND


def run_judge_single(build: str, task: TaskEval, items: Sequence[Any], rubric_name: str, judge_cfg,
                     fallback_gguf: Path, cache_dir: Path, store: Store, *,
                     progress: Progress | None = None) -> PointwiseJudge:
    """Pointwise grading of one build's greedy answers (the task eval's own) 1-10 against each item's reference
    with the rubric's single template. `items`: evals.judge.JudgeItem, the same ones for every build, so ratings
    pair up across builds. results.jsonl: id, rating (None when the reply did not parse), valid, reason."""
    from edgetune.evals.judge import judge_single
    from edgetune.evals.judge_server import judge_endpoint, local_model_name
    from edgetune.evals.suites import load_rubric

    rubric = load_rubric(rubric_name)
    judge_id = judge_cfg.describe() if judge_cfg is not None else {"local": local_model_name(fallback_gguf)}
    params = {"rubric": rubric_name, "rubric_sha256": rubric.sha256(), "judge": judge_id}
    inputs = {"task": task.key, "items": _items_hash(items)}

    def grade(b: Builder) -> None:
        answers = task.item_outputs()
        with (progress or NullProgress()).task(f"judge (pointwise): {build}", len(items)) as bar, \
                judge_endpoint(judge_cfg, fallback_gguf) as cfg:
            result = judge_single(cfg, rubric, items, [answers[i.id] for i in items], cache_dir,
                                  on_verdict=bar.advance)
        PointwiseJudge.write_rows(b, [{"id": i.id, "rating": i.rating, "valid": i.valid, "reason": i.reason}
                                      for i in result.items])
        PointwiseJudge.write(b, build=build, n=result.n, n_valid=result.n_valid, mean_rating=result.mean_rating,
                             calls=result.calls, judge=judge_id)

    return PointwiseJudge.of(store.stage(KIND_JUDGE_SINGLE, params, inputs, grade,
                                         record_params={**params, "build": build}))
