"""docs/task-metrics.md's headline tables are the committed run reports (docs/runs/*/report.json) rendered by
scripts/task_table.py: a figure edited in the doc without a new report, or a new report without the doc, fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted((ROOT / "docs" / "runs").glob("*/report.json"))


@pytest.mark.parametrize("report", RUNS, ids=[p.parent.name for p in RUNS])
def test_task_metrics_doc_holds_each_runs_table(report):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "task_table.py"), str(report)],
                         capture_output=True, text=True, check=True).stdout.strip()
    doc = (ROOT / "docs" / "task-metrics.md").read_text()
    assert out in doc, f"regenerate the table in docs/task-metrics.md: scripts/task_table.py {report}"
    data = json.loads(report.read_text())
    assert {r["name"] for r in data["builds"]} >= {"base", "gpu"}  # a real build's report
    assert all(r.get("vs_gpu") for r in data["builds"] if r["kind"] == "GGUF")  # verdicts on every GGUF


def test_there_are_three_task_shapes():
    metrics = {next(r["metric"] for r in json.loads(p.read_text())["builds"] if r.get("metric")) for p in RUNS}
    assert {"json", "number", "text"} <= metrics
