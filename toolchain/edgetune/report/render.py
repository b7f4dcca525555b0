"""The build report: one row per build (base, GPU build, each GGUF) with accuracy, its 95% CI, the paired
change against the GPU build (flips, exact McNemar p, paired-bootstrap CI of the difference), size, the
flipped items themselves, and forgetting on each log-likelihood multiple-choice set (MMLU overall and per
subject, ARC, HellaSwag, PIQA, WinoGrande): acc and acc_norm with CIs, the change against the base, and the
flips against the GPU build on the same items.

Reads eval artifacts' records and results.jsonl (never guessing paths); writes report.json, report.md and
report.html (see `write_report`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgetune.artifacts import Artifact, atomic_write_text, write_json
from edgetune.constants import BASE_BUILD, GPU_BUILD, REPORT_HTML, REPORT_JSON, REPORT_MD
from edgetune.errors import ConfigError
from edgetune.outputs import ForgettingEval, TaskEval
from edgetune.report.markdown import to_markdown
from edgetune.report.recommend import COMPUTED, resolve
from edgetune.report.schema import SCHEMA_VERSION, Report
from edgetune.report.finetune import answer_forms, label_set
from edgetune.report.finetune import check as finetune_check
from edgetune.report.stats import mcnemar_exact_p, paired_bootstrap_diff_ci, paired_flips, wilson_interval
from edgetune.report.verdict import DEFAULT_MARGIN, item_scores, paired_verdict, verdict_from_row

__all__ = ["BASE_BUILD", "GPU_BUILD", "build_report", "complete", "item_texts", "load_report", "to_markdown",
           "write_report", "write_report_files"]
MAX_FLIP_DETAILS = 20  # flipped items per build and direction whose text and outputs report.json keeps
MAX_TEXT_CHARS = 500  # item text kept per flipped item


def item_texts(examples: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """id → the last user message of each held-out example (`data.read_examples` rows), for `build_report`."""
    out = {}
    for ex in examples:
        users = [m["content"] for m in ex.get("messages", [])[:-1] if m.get("role") == "user"]
        if users:
            out[str(ex["id"])] = users[-1]
    return out


def _flip_details(ids: Sequence[str], gpu: Mapping[str, Mapping[str, Any]],
                  other: Mapping[str, Mapping[str, Any]], item_text: Mapping[str, str]
                  ) -> list[dict[str, Any]]:
    rows = []
    for i in ids[:MAX_FLIP_DETAILS]:
        row = {"id": i, "reference": other[i].get("reference"), "gpu_output": gpu[i].get("output"),
               "output": other[i].get("output")}
        if i in item_text:
            row["text"] = item_text[i][:MAX_TEXT_CHARS]
        rows.append(row)
    return rows


def _forgetting(name: str, arts: Mapping[str, ForgettingEval],
                results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One build's figures on one forgetting set: acc and acc_norm with Wilson CIs, the change against the
    base, and the paired comparison with the GPU build on the same items (flips, McNemar p, bootstrap CI)."""
    m = arts[name]
    rows = results[name]
    right = {i: bool(r["correct"]) for i, r in rows.items()}
    right_norm = {i: bool(r.get("correct_norm", r["correct"])) for i, r in rows.items()}
    out: dict[str, Any] = {
        "acc": m.acc, "acc_norm": m.acc_norm, "n": m.n,
        "ci95": list(wilson_interval(sum(right.values()), len(right))),
        "ci95_norm": list(wilson_interval(sum(right_norm.values()), len(right_norm)))}
    base = arts.get(BASE_BUILD)
    if base is not None and name != BASE_BUILD:
        out["delta_vs_base"] = m.acc - base.acc
        if m.acc_norm is not None and base.acc_norm is not None:
            out["delta_norm_vs_base"] = m.acc_norm - base.acc_norm
    if GPU_BUILD in arts and name != GPU_BUILD:
        gpu = {i: bool(r["correct"]) for i, r in results[GPU_BUILD].items()}
        lost, gained = paired_flips(gpu, right)
        n_paired = len(set(gpu) & set(right))
        out.update(delta_vs_gpu=m.acc - arts[GPU_BUILD].acc, n_paired=n_paired,
                   flips_lost=lost, flips_gained=gained, mcnemar_p=mcnemar_exact_p(len(lost), len(gained)))
        if n_paired:  # no shared items: no interval at all, never a zero-width one
            out["delta_vs_gpu_ci95"] = list(paired_bootstrap_diff_ci(n_paired, len(lost), len(gained)))
    if len(m.per_subject) > 1:
        out["per_subject"] = {
            subject: {"acc": s["acc"], "n": s["n"],
                      **({"delta_vs_base": s["acc"] - base.per_subject[subject]["acc"]}
                         if base is not None and name != BASE_BUILD and subject in base.per_subject else {})}
            for subject, s in sorted(m.per_subject.items())}
    return out


def build_report(*, title: str, builds: Sequence[Mapping[str, Any]], task: Mapping[str, Artifact],
                 forgetting: Mapping[str, Mapping[str, Artifact]], context: Mapping[str, Any],
                 item_text: Mapping[str, str] | None = None, margin: float = DEFAULT_MARGIN,
                 training: Mapping[str, Any] | None = None, max_new_tokens: int | None = None) -> dict[str, Any]:
    """`builds`: [{"name", "kind", "size_bytes", ...}] in display order; `task`: build name → eval artifact;
    `forgetting`: set name (mmlu, arc_easy, ...) → build name → eval artifact, each row then gets
    `row["forgetting"][set]` (see `_forgetting`); `item_text`: item id → prompt text shown next to flipped
    items (see `item_texts`). `margin`: the non-inferiority margin (eval.margin, a share of the metric): every
    build but the base gets `row["vs_gpu"]` (report.verdict), and the report gets `finetune` (report.finetune:
    the GPU build vs the base, with `training`, the train stage's curve, see finetune.training_curve).
    The result is validated by report.schema.Report (a row that breaks the contract fails here, not in a
    reader) and returned in its JSON form."""
    item_text = item_text or {}
    # the typed view of each eval artifact (a run's artifacts read back by `edgetune report` come untyped)
    tasks = {name: TaskEval.of(a) for name, a in task.items()}
    mc_arts = {set_name: {name: ForgettingEval.of(a) for name, a in arts.items()}
               for set_name, arts in forgetting.items()}
    results = {name: {r["id"]: r for r in t.rows()} for name, t in tasks.items()}
    correct = {name: {i: bool(r["correct"]) for i, r in rs.items()} for name, rs in results.items()}
    scores = {name: item_scores(rs.values()) for name, rs in results.items()}
    mc = {set_name: {name: {r["id"]: r for r in a.rows()} for name, a in arts.items()}
          for set_name, arts in mc_arts.items()}
    rows = []
    for build in builds:
        name = build["name"]
        row: dict[str, Any] = dict(build)
        if name in correct:
            hits, n = sum(correct[name].values()), len(correct[name])
            lo, hi = wilson_interval(hits, n)
            row.update(accuracy=hits / n, n=n, ci95=[lo, hi])
            # the task metric's own figures (accuracy above is the strict `correct` share); rows written before
            # per-item scores existed score as their `correct` (report.verdict.item_scores)
            row.update(metric=tasks[name].metric,
                       score=sum(scores[name].values()) / n,
                       truncated=sum(bool(r.get("truncated", False)) for r in results[name].values()))
            if GPU_BUILD in correct and name != GPU_BUILD:
                lost, gained = paired_flips(correct[GPU_BUILD], correct[name])
                n_paired = len(set(correct[GPU_BUILD]) & set(correct[name]))
                row.update(
                    delta_vs_gpu=row["accuracy"] - sum(correct[GPU_BUILD].values()) / len(correct[GPU_BUILD]),
                    n_paired=n_paired, flips_lost=lost, flips_gained=gained,
                    mcnemar_p=mcnemar_exact_p(len(lost), len(gained)),
                    flipped_items={side: _flip_details(ids, results[GPU_BUILD], results[name], item_text)
                                   for side, ids in (("lost", lost), ("gained", gained))},
                )
                if n_paired:
                    row["delta_vs_gpu_ci95"] = list(paired_bootstrap_diff_ci(n_paired, len(lost), len(gained)))
                if name != BASE_BUILD:
                    row["vs_gpu"] = paired_verdict(scores[GPU_BUILD], scores[name], margin=margin).to_dict()
        sets = {set_name: _forgetting(name, arts, mc[set_name]) for set_name, arts in mc_arts.items()
                if name in arts}
        if sets:
            row["forgetting"] = sets
        rows.append(row)
    report: dict[str, Any] = {"title": title, "context": dict(context), "builds": rows, "margin": margin}
    if BASE_BUILD in results and GPU_BUILD in results:
        if (labels := label_set([str(r.get("reference", "")) for r in results[GPU_BUILD].values()])) is not None:
            for row in rows:  # near misses next to the strict score, for every build of a label task
                if row["name"] in results:
                    row["answer_forms"] = answer_forms(list(results[row["name"]].values()), labels)
        report["finetune"] = finetune_check(results[BASE_BUILD], results[GPU_BUILD], scores[BASE_BUILD],
                                            scores[GPU_BUILD], margin=margin, item_text=item_text,
                                            training=training, max_new_tokens=max_new_tokens)
    return Report.load(report).to_dict()


def complete(report: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `report` with the derived fields a report from an older edgetune lacks: the paired-bootstrap
    CI of each change against the GPU build (from the flip counts it stores), and a computed `recommendation`
    when no stage wrote one (marked `"source": "computed"`)."""
    out = json.loads(json.dumps(report, default=str))
    gpu = next((r for r in out.get("builds", []) if r["name"] == GPU_BUILD and "n" in r), None)
    for row in out.get("builds", []):
        if "flips_lost" in row and "delta_vs_gpu_ci95" not in row and gpu is not None:
            n_paired = row["n_paired"] if "n_paired" in row else min(row["n"], gpu["n"])
            if n_paired:  # no shared items: no interval, never a zero-width one
                row["delta_vs_gpu_ci95"] = list(paired_bootstrap_diff_ci(n_paired, len(row["flips_lost"]),
                                                                         len(row["flips_gained"])))
    margin = out.get("margin", DEFAULT_MARGIN)
    for row in out.get("builds", []):
        if "vs_gpu" not in row and row["name"] != BASE_BUILD and "flips_lost" in row and gpu is not None:
            row["vs_gpu"] = verdict_from_row(row, gpu, margin)
    rec = out.get("recommendation")
    if not isinstance(rec, Mapping) or rec.get("source") == COMPUTED:
        out["recommendation"] = resolve(out)
    return Report.load(out).to_dict()


@dataclass(frozen=True)
class ReportFiles:
    json_path: Path
    md_path: Path
    html_path: Path
    report: dict[str, Any]


def write_report_files(report: Mapping[str, Any], out_dir: Path) -> ReportFiles:
    """Write report.json, report.md and a self-contained report.html (inline CSS and PNG plots, no external
    requests) into `out_dir`, atomically each. Returns the paths and the completed report (see `complete`)."""
    from edgetune.report.html import to_html

    full = complete(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / REPORT_JSON, out_dir / REPORT_MD, out_dir / REPORT_HTML, full)
    write_json(files.json_path, full)
    atomic_write_text(files.md_path, to_markdown(full))
    atomic_write_text(files.html_path, to_html(full))
    return files


def write_report(report: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """`write_report_files` (which also writes report.html), returning (report.json, report.md)."""
    files = write_report_files(report, out_dir)
    return files.json_path, files.md_path


def load_report(path: Path) -> dict[str, Any]:
    """Read a report.json. Raises ConfigError when it is missing or not a report."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no report at {path}", "give a run folder written by `edgetune build` "
                          "(edgetune-out/runs/<target>), which holds report.json")
    try:
        report = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}",
                          "re-run `edgetune build` to rewrite it") from exc
    if not isinstance(report, dict) or not isinstance(report.get("builds"), list) or "title" not in report:
        raise ConfigError(f"{path} is not an edgetune report (no title or builds)",
                          "give the report.json written by `edgetune build`")
    try:
        return Report.load(report).to_dict()
    except ValidationError as exc:
        raise ConfigError(f"{path} does not match the report schema (version {SCHEMA_VERSION}): {exc}",
                          "re-run `edgetune build` to rewrite it") from exc
