"""On-device results in the report: what `edgetune eval --out RUN/devices` fetched, per device and model.

Reads `RUN/devices/<device>/<job>/{device_run.json, results.jsonl, summary.json}` and pairs the device's answers
with the GPU build's on the same item ids. Produces the report's top-level `device` mapping (one entry per
"<quant> @ <device>"), with measured speeds next to the planner's prediction for that quant.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetune.evals.metrics import Metric, MetricSpec, make_metric
from edgetune.report.schema import Report
from edgetune.report.stats import mcnemar_exact_p, paired_flips, wilson_interval

log = logging.getLogger(__name__)

DEVICES_DIR = "devices"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _quant_of(model_path: str) -> str:
    match = re.search(r"-((?:IQ|Q|F)[0-9A-Z_]+)\.gguf$", Path(model_path).name)
    return match.group(1) if match else Path(model_path).stem


def _build_of(job: Mapping[str, Any]) -> str:
    """The build a device job measured: its model's quant, `<QUANT>+recovery` when the runner applied the
    bundle's recovery adapter (bundle.py names it `<model>-<QUANT>-recovery-f16.gguf`), `<QUANT>+lora` for another
    LoRA."""
    quant = _quant_of(str(job.get("model") or ""))
    lora = job.get("lora")
    if not lora:
        return quant
    return quant + ("+recovery" if "-recovery-" in Path(str(lora)).name else "+lora")


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def task_metric(report: Mapping[str, Any] | Report) -> Metric:
    """The metric the build scored its held-out task with (report.json's context.task_metric), so device
    answers are scored exactly as the build's were; label for a report from before task metrics."""
    plan = Report.load(report).context.task_metric
    if plan is None:
        return make_metric(MetricSpec(name="label"))
    return make_metric(MetricSpec(name=plan.metric or "label", **(plan.metric_options or {})))


def device_sections(run_dir: Path, report: Mapping[str, Any], gpu_correct: Mapping[str, bool]) -> dict[str, dict]:
    """'<quant> @ <device>' → accuracy (Wilson CI) and the task metric's mean score, paired flips vs the GPU
    build, speeds, TTFT, peak RSS and the planner's prediction; empty when no device results were fetched."""
    typed = Report.load(report)
    metric = task_metric(typed)
    out: dict[str, dict] = {}
    for record_path in sorted((Path(run_dir) / DEVICES_DIR).glob("*/*/device_run.json")):
        job = record_path.parent
        record = json.loads(record_path.read_text())
        if not (job / "results.jsonl").is_file():
            continue
        results = _jsonl(job / "results.jsonl")
        summary = json.loads((job / "summary.json").read_text()) if (job / "summary.json").is_file() else {}
        job_record = summary.get("job") or {"model": summary.get("model")}
        quant = _build_of(job_record)
        scored = {r["id"]: metric.score(r.get("output", ""), r["reference"]) for r in results if r.get("reference")}
        correct = {i: s.correct for i, s in scored.items()}
        n, hits = len(correct), sum(correct.values())
        entry: dict[str, Any] = {"device": record.get("device"), "quant": quant, "n": n,
                                 "device_facts": record.get("device_facts", {})}
        if n:
            lost, gained = paired_flips(dict(gpu_correct), correct)
            entry.update(metric=metric.name, score=sum(s.score for s in scored.values()) / n,
                         accuracy=hits / n, ci95=list(wilson_interval(hits, n)), flips_lost=len(lost),
                         flips_gained=len(gained), mcnemar_p=mcnemar_exact_p(len(lost), len(gained)))
        prompt = [r["prompt_tokens_per_s"] for r in results if r.get("prompt_tokens_per_s")]
        gen = [r["gen_tokens_per_s"] for r in results if r.get("gen_tokens_per_s")]
        ttft = [r["ttft_ms"] / 1000 for r in results if r.get("ttft_ms") is not None]
        rss = [r["peak_rss_mb"] for r in results if r.get("peak_rss_mb") is not None]
        entry.update(prompt_tps=statistics.median(prompt) if prompt else None,
                     gen_tps=statistics.median(gen) if gen else None,
                     ttft_p50_s=_p(ttft, 0.5), ttft_p95_s=_p(ttft, 0.95), peak_rss_mb=max(rss) if rss else None)
        row = typed.row(quant)
        plan = row.plan if row is not None else None
        entry.update(predicted_prompt_tps=plan.predicted_prompt_tps if plan else None,
                     predicted_gen_tps=plan.predicted_gen_tps if plan else None)
        entry["bench"] = bench_entry(record)
        out[f"{quant} @ {record.get('device', job.parent.name)}"] = entry
    return out


def bench_entry(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """schema.Bench from device_run.json: llama-bench's pp/tg tok/s on the device, the planner's prediction for
    that GGUF and target, and measured / predicted; None for a run from before llama-bench was run."""
    bench, pred = record.get("bench") or {}, record.get("predicted") or {}
    if not bench and not pred:
        return None
    tests = {t.get("test", "")[:2]: t for t in bench.get("tests") or []}

    def ratio(measured: float | None, predicted: float | None) -> float | None:
        return round(measured / predicted, 3) if measured and predicted else None

    prompt, gen = bench.get("prompt_tokens_per_s"), bench.get("gen_tokens_per_s")
    return {"n_prompt": (tests.get("pp") or {}).get("n_prompt"), "n_gen": (tests.get("tg") or {}).get("n_gen"),
            "prompt_tps": prompt, "gen_tps": gen, "predicted_prompt_tps": pred.get("prompt_tok_s"),
            "predicted_gen_tps": pred.get("gen_tok_s"), "prompt_ratio": ratio(prompt, pred.get("prompt_tok_s")),
            "gen_ratio": ratio(gen, pred.get("gen_tok_s")), "efficiency_source": pred.get("efficiency_source"),
            "error": bench.get("error") or bench.get("skipped") or (None if bench else "llama-bench was not run")}
