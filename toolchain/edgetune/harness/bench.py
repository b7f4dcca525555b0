"""`edgetune bench`: the harness's standard tasks on every build of a run, on the same requests.

`bench(run_dir, tasks, ...)` opens each build of the run in turn (base and GPU build in transformers, every GGUF
in llama.cpp on this host, or with `device` on the board over SSH from the run's bundle), wraps it in the
harness model class (`harness.lm.EdgetuneLM`) and evaluates the offline tasks (`harness.tasks`) with the
harness's own `simple_evaluate` (same seeds, same few-shot examples, same `limit`, so every build answers the
same requests). Per-item correctness comes from the harness's logged samples; the report section pairs each
build with the GPU build (and the GPU build with the base) by item, with the verdict rule of the task eval
(report.verdict.paired_verdict, non-inferiority at the report's margin).

Reads RUN/run.json's stage folders (base, merge, gguf-*, bundle). Writes RUN/bench.json (the section alone) and
adds the section to RUN/report.json (both atomically). Raises ConfigError (no such run, unknown task, lm-eval
missing), DataError (the eval data package missing), and what the runtimes raise (ModelError, EvalError, the
device errors).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetune.constants import BASE_BUILD, GPU_BUILD, REPORT_JSON
from edgetune.errors import ConfigError
from edgetune.harness.tasks import OFFLINE_TASKS, check_names, parse_entry
from edgetune.progress import NullProgress, Progress
from edgetune.report.schema import BenchScore, StandardBenchmarks, Verdict
from edgetune.report.verdict import DEFAULT_MARGIN, paired_verdict

if TYPE_CHECKING:
    from edgetune.device.spec import Device

log = logging.getLogger(__name__)

BENCH_JSON = "bench.json"


@dataclass(frozen=True)
class BenchBuild:
    name: str  # base, gpu, or a quant
    kind: str  # what runs it, for the report
    open: Callable[[], Any]  # -> an open Runtime
    tokenizer_dir: Path
    max_length: int = 2048


@dataclass
class TaskRun:
    """One build on one task: per-item correctness on the task's report metric, and both accuracies."""

    metric: str
    items: dict[str, float] = field(default_factory=dict)  # "<harness task>/<doc_id>" -> 0/1
    acc: dict[str, float] = field(default_factory=dict)
    acc_norm: dict[str, float] = field(default_factory=dict)


def evaluate(lm: Any, names: list[str], *, num_fewshot: int | None = None, limit: int | None = None,
             seed: int = 0, samples: dict[str, list[int]] | None = None) -> dict[str, TaskRun]:
    """Run the offline harness tasks `names` (`task` or `task:N`) on the harness model `lm`. Returns entry ->
    TaskRun. Entries of one task with different few-shot counts (`mmlu,mmlu:5`) share the harness's task
    names, so each few-shot count is its own `simple_evaluate` (same seeds)."""
    groups: dict[int | None, list[str]] = {}
    for name in check_names(names):
        groups.setdefault(parse_entry(name, num_fewshot)[1], []).append(name)
    runs: dict[str, TaskRun] = {}
    for group in groups.values():
        runs.update(_evaluate_group(lm, group, num_fewshot, limit, seed, samples))
    return {n: runs[n] for n in names}


def _evaluate_group(lm: Any, names: list[str], num_fewshot: int | None, limit: int | None, seed: int,
                    samples: dict[str, list[int]] | None = None) -> dict[str, TaskRun]:
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    from edgetune.harness.tasks import build_tasks

    built = build_tasks(names, num_fewshot=num_fewshot)
    flat = [t for tasks in built.values() for t in tasks]
    # an empty task index: the tasks are built already, and indexing the harness's thousands of YAMLs takes ~20 s
    out = simple_evaluate(model=lm, tasks=flat, task_manager=TaskManager(include_defaults=False), limit=limit,
                          samples=samples, log_samples=True, bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed,
                          torch_random_seed=seed, fewshot_random_seed=seed, verbosity="WARNING")
    runs: dict[str, TaskRun] = {}
    for name, tasks in built.items():
        run = runs[name] = TaskRun(metric=OFFLINE_TASKS[parse_entry(name)[0]].metric)
        for task in tasks:
            for sample in out["samples"][task.config.task]:
                item = f"{task.config.task}/{sample['doc_id']}"
                run.acc[item] = float(sample["acc"])
                if "acc_norm" in sample:
                    run.acc_norm[item] = float(sample["acc_norm"])
        run.items = run.acc_norm if run.metric == "acc_norm" and run.acc_norm else run.acc
    return runs


def run_builds(run_dir: Path, device: Device | None = None, *, n_threads: int | None = None,
               accept_new_host_key: bool = False) -> list[BenchBuild]:
    """The run's builds in report order: base, GPU build, then each GGUF (on `device` when given).
    Raises ConfigError when RUN is not a build's run folder."""
    from edgetune.outputs import BaseModel, Bundle, GGUFFile, MergedModel
    from edgetune.report.publish import run_artifacts

    arts = run_artifacts(run_dir)
    if "base" not in arts or "merge" not in arts:
        raise ConfigError(f"{run_dir} is not a build's run folder (no run.json with base and merge stages)",
                          "pass edgetune-out/runs/<target> after `edgetune build`")
    base, merged = BaseModel.of(arts["base"]), MergedModel.of(arts["merge"])
    ggufs = [GGUFFile.of(a) for n, a in arts.items() if n.startswith("gguf-")]
    builds = [BenchBuild(BASE_BUILD, "base (HF fp32)", _hf(base.model_dir), merged.model_dir),
              BenchBuild(GPU_BUILD, "GPU build (HF fp32, merged)", _hf(merged.model_dir), merged.model_dir)]
    if device is None:
        builds += [BenchBuild(g.quant, "GGUF (llama.cpp, host)", _gguf(g.gguf_path, n_threads), merged.model_dir)
                   for g in ggufs]
        return builds
    if "bundle" not in arts:
        raise ConfigError(f"{run_dir} has no bundle to run on {device}", "run `edgetune build` to the end first")
    from edgetune.bundle_manifest import read_manifest

    bundle_dir = Bundle.of(arts["bundle"]).bundle_dir
    shipped = {m["quant"]: m["file"] for m in read_manifest(bundle_dir)["models"]}
    where = device.name or device.host
    builds += [BenchBuild(g.quant, f"GGUF (llama-server on {where})",
                          _device(device, shipped[g.quant], bundle_dir, n_threads, accept_new_host_key),
                          merged.model_dir) for g in ggufs if g.quant in shipped]
    return builds


def _hf(model_dir: Path) -> Callable[[], Any]:
    def open_() -> Any:
        from edgetune.runtimes import HFRuntime

        return HFRuntime(model_dir)
    return open_


def _gguf(path: Path, n_threads: int | None) -> Callable[[], Any]:
    def open_() -> Any:
        from edgetune.runtimes import LlamaCppRuntime

        return LlamaCppRuntime(path, n_ctx=2048, n_threads=n_threads)
    return open_


def _device(device: Device, model: str, bundle_dir: Path, threads: int | None,
            accept_new: bool) -> Callable[[], Any]:
    def open_() -> Any:
        from edgetune.runtimes import DeviceRuntime

        return DeviceRuntime(device, model, bundle_dir=bundle_dir, threads=threads, accept_new_host_key=accept_new)
    return open_


def bench(run_dir: Path, names: list[str], *, num_fewshot: int | None = None, limit: int | None = None,
          device: Device | None = None, margin: float | None = None, progress: Progress | None = None,
          n_threads: int | None = None, accept_new_host_key: bool = False) -> StandardBenchmarks:
    """Every build of `run_dir` on the harness tasks `names`; the section written to RUN/bench.json and
    RUN/report.json. See the module docstring for what is raised."""
    check_names(names)
    report = _load_report(Path(run_dir))
    builds = run_builds(Path(run_dir), device, n_threads=n_threads, accept_new_host_key=accept_new_host_key)
    section = score_builds(builds, names, num_fewshot=num_fewshot, limit=limit,
                           margin=margin if margin is not None else float(report.get("margin") or DEFAULT_MARGIN),
                           device=(device.name or f"{device.user}@{device.host}") if device else None,
                           progress=progress)
    _write(Path(run_dir), section, report)
    return section


def score_builds(builds: list[BenchBuild], names: list[str], *, num_fewshot: int | None = None,
                 limit: int | None = None, margin: float = DEFAULT_MARGIN, device: str | None = None,
                 progress: Progress | None = None) -> StandardBenchmarks:
    """`builds` (opened one at a time) on the harness tasks `names`: the report section. Writes nothing
    (`build` adds it to its report; `bench` writes it)."""
    from importlib.metadata import version

    from transformers import AutoTokenizer

    from edgetune.harness.lm import EdgetuneLM

    check_names(names)
    progress = progress or NullProgress()
    results: dict[str, dict[str, TaskRun]] = {}
    seconds: dict[str, float] = {}
    requests: dict[str, int] = {}
    for b in builds:
        tok = AutoTokenizer.from_pretrained(b.tokenizer_dir)
        with progress.task(f"bench {b.name}", None) as bar, b.open() as runtime:
            # never past the runtime's own context (a device's llama-server may hold less than asked for): a
            # longer request is cut from the left as `hf` cuts it instead of failing the whole run (EdgetuneLM
            # keeps max_length + 1 tokens, and the runtimes count every one of them as a position)
            max_length = min(b.max_length, int(getattr(runtime, "n_ctx", b.max_length + 1)) - 1)
            lm = EdgetuneLM(runtime, tok, max_length=max_length, on_requests=bar.advance)
            t0 = time.perf_counter()
            results[b.name] = evaluate(lm, names, num_fewshot=num_fewshot, limit=limit)
            seconds[b.name] = round(time.perf_counter() - t0, 2)
            requests[b.name] = lm.requests_scored
    return StandardBenchmarks(
        harness=f"lm-eval {version('lm-eval')}", tasks=names, num_fewshot=num_fewshot, limit=limit,
        device=device, margin=margin, builds={b.name: b.kind for b in builds}, seconds=seconds, requests=requests,
        notes={n: note for n in names if (note := OFFLINE_TASKS[parse_entry(n)[0]].note)},
        scores={n: {b: _score(results[b][n], results, n, b, margin) for b in results} for n in names})


def _score(run: TaskRun, results: dict[str, dict[str, TaskRun]], task: str, build: str,
           margin: float) -> BenchScore:
    from edgetune.report.stats import wilson_interval

    n = len(run.items)
    correct = int(sum(run.items.values()))
    reference = GPU_BUILD if build != GPU_BUILD else BASE_BUILD
    verdict = None
    if build != BASE_BUILD and reference in results:
        verdict = Verdict.model_validate(paired_verdict(results[reference][task].items, run.items,
                                                                margin=margin).to_dict())
    return BenchScore(metric=run.metric, score=correct / n if n else 0.0, n=n,
                      ci95=list(wilson_interval(correct, n)) if n else None,
                      acc=_mean(run.acc), acc_norm=_mean(run.acc_norm) if run.acc_norm else None,
                      reference=reference if verdict else None, verdict=verdict, items=run.items)


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0


def _load_report(run_dir: Path) -> dict[str, Any]:
    import json

    path = run_dir / REPORT_JSON
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist", "pass edgetune-out/runs/<target>")
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(run_dir: Path, section: StandardBenchmarks, report: dict[str, Any]) -> None:
    from edgetune.artifacts import write_json

    data = section.model_dump(mode="json", exclude_none=True)
    write_json(run_dir / BENCH_JSON, data)
    if report:  # a run with a report gains the section; the margins there rule the verdicts above
        write_json(run_dir / REPORT_JSON, {**report, "standard_benchmarks": data})
