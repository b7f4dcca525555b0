"""`edgetune report`: re-render a run folder's report (JSON, Markdown, self-contained HTML), or compare two.

A run folder (`<out_dir>/runs/<target>/`) holds report.json and run.json, the record of every stage's
artifact folder. When run.json's eval artifacts are still there, the report is rebuilt from them, so a report
written by an older edgetune gains the fields it lacks (flipped items with their text, per-subject
forgetting, every forgetting set's paired flips) — but only if the rebuilt accuracies equal the stored ones; otherwise the stored report is kept
and a warning says why.
Keys other stages added (fidelity, judge, device, recommendation) are kept as they are.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.artifacts import Artifact, atomic_write_text, write_json
from edgetune.constants import ARTIFACT_FILE, GPU_BUILD, REPORT_JSON, RUN_RECORD
from edgetune.evals.mc_sets import FORGETTING_SETS
from edgetune.evals.stage import forgetting_stage
from edgetune.outputs import TaskEval
from edgetune.report import compare
from edgetune.report.device import device_sections
from edgetune.report.schema import Report
from edgetune.report.render import build_report, item_texts, load_report, write_report_files
from edgetune.report.verdict import DEFAULT_MARGIN

log = logging.getLogger(__name__)

TASK_PREFIX, DATA_STAGE = "eval-", "data"


@dataclass(frozen=True)
class Published:
    json_path: Path
    md_path: Path
    html_path: Path
    recommendation: dict[str, Any] | None = None


def run_artifacts(run_dir: Path) -> dict[str, Artifact]:
    """Stage name → artifact, from the run folder's run.json (paths as recorded there, relative to where the
    build ran or to the output folder above `runs/`). Stages whose folder is gone are left out."""
    record_path = Path(run_dir) / RUN_RECORD
    if not record_path.is_file():
        return {}
    stages = json.loads(record_path.read_text()).get("stages", {})
    above = Path(run_dir).resolve().parents
    roots = [Path.cwd()] + ([above[2]] if len(above) > 2 else [])  # the build's cwd; the folder above out_dir
    found = {}
    for name, recorded in stages.items():
        candidates = [Path(recorded)] if Path(recorded).is_absolute() else [root / recorded for root in roots]
        path = next((c for c in candidates if (c / ARTIFACT_FILE).is_file()), None)
        if path is None:
            continue
        rec = json.loads((path / ARTIFACT_FILE).read_text())
        found[name] = Artifact(rec.get("kind", ""), rec.get("key", ""), path, rec, cached=True)
    return found


def refresh(report: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The report rebuilt from the run's eval artifacts (see the module docstring), or `report` unchanged."""
    arts = run_artifacts(run_dir)
    typed = Report.load(report)
    names = [r.name for r in typed.builds]
    task = {n: arts[TASK_PREFIX + n] for n in names if TASK_PREFIX + n in arts}
    forgetting = {s: found for s in FORGETTING_SETS
                  if (found := {n: arts[forgetting_stage(s, n)] for n in names if forgetting_stage(s, n) in arts})}
    if not task:
        return report
    texts = {}
    if DATA_STAGE in arts and "heldout" in arts[DATA_STAGE].outputs:
        with arts[DATA_STAGE].file("heldout").open() as fh:
            texts = item_texts([json.loads(line) for line in fh if line.strip()])
    core = [r.model_dump(include={"name", "kind", "size_bytes"}, exclude_unset=True) for r in typed.builds]
    stored = typed.to_dict()  # the JSON form, merged with the rebuilt one below
    rebuilt = build_report(title=typed.title, builds=core, task=task, forgetting=forgetting,
                           context=typed.context.model_dump(mode="json", by_alias=True, exclude_unset=True),
                           item_text=texts,
                           margin=typed.margin if typed.margin is not None else DEFAULT_MARGIN,
                           training=_training(typed))
    for old, new in zip(typed.builds, Report.load(rebuilt).builds):
        if (old.accuracy, old.n) != (new.accuracy, new.n):
            log.warning("%s: the eval artifacts in %s give %s accuracy %s (n=%s), the report says %s "
                        "(n=%s); keeping the stored report (re-run `edgetune build` to rebuild it)", run_dir,
                        RUN_RECORD, old.name, new.accuracy, new.n, old.accuracy, old.n)
            return report
    # rebuilt fields win; keys other stages added to a row (fidelity, judge, plan, device) are kept
    merged = [{**old, **new} for old, new in zip(stored["builds"], rebuilt["builds"])]
    return {**stored, **rebuilt, "builds": merged}


def _training(report: Report) -> dict[str, Any] | None:
    """The stored training curve in its JSON form (what build_report takes, as the build passes it)."""
    ft = report.finetune
    if ft is None or ft.training is None:
        return None
    return ft.training.model_dump(mode="json", exclude_unset=True)


def render_run(run_dir: Path, out_dir: Path | None = None) -> Published:
    """Read `run_dir`/report.json, refresh it from the run's artifacts, and write report.json, report.md and
    report.html into `out_dir` (default: `run_dir`). Raises ConfigError when there is no readable report."""
    run_dir = Path(run_dir)
    report = refresh(load_report(run_dir / REPORT_JSON), run_dir)
    gpu = _item_correct(run_dir, [GPU_BUILD]).get(GPU_BUILD, {})
    devices = device_sections(run_dir, report, gpu)
    if devices:
        report = {**report, "device": devices}
    files = write_report_files(report, Path(out_dir) if out_dir else run_dir)
    return Published(files.json_path, files.md_path, files.html_path, files.report.get("recommendation"))


def _label(report: Report, run_dir: Path) -> str:
    ctx = report.context
    return f"{ctx.model} @ {ctx.target}" if ctx.model and ctx.target else str(run_dir)


def _item_correct(run_dir: Path, names: list[str]) -> dict[str, dict[str, bool]]:
    arts = run_artifacts(run_dir)
    return {n: {r["id"]: bool(r["correct"]) for r in TaskEval.of(arts[TASK_PREFIX + n]).rows()}
            for n in names if TASK_PREFIX + n in arts}


def compare_runs(run_a: Path, run_b: Path, out_dir: Path | None = None) -> Published:
    """Compare two run folders; write compare.json, compare.md and compare.html into `out_dir` (default:
    `<run_a>/../compare-<A>-vs-<B>`). Raises ConfigError when either has no readable report."""
    run_a, run_b = Path(run_a), Path(run_b)
    a, b = Report.load(load_report(run_a / REPORT_JSON)), Report.load(load_report(run_b / REPORT_JSON))
    label_a, label_b = _label(a, run_a), _label(b, run_b)
    if label_a == label_b:
        label_a, label_b = str(run_a), str(run_b)
    names = [r.name for r in a.builds]
    ia, ib = _item_correct(run_a, names), _item_correct(run_b, names)
    cmp = compare.compare_reports(a, b, label_a=label_a, label_b=label_b,
                                  paired={n: (ia[n], ib[n]) for n in ia if n in ib})
    out = Path(out_dir) if out_dir else run_a.parent / f"compare-{run_a.name}-vs-{run_b.name}"
    out.mkdir(parents=True, exist_ok=True)
    paths = Published(out / "compare.json", out / "compare.md", out / "compare.html")
    write_json(paths.json_path, cmp)
    atomic_write_text(paths.md_path, compare.to_markdown(cmp))
    atomic_write_text(paths.html_path, compare.to_html(cmp))
    return paths
