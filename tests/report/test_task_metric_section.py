"""The task metric in the report: each build row's metric, mean per-item score and truncation count, read from
real eval artifacts, and the table that shows them (a report of label-only rows from before per-item scores
still renders, scoring each item as its `correct`)."""

from __future__ import annotations

import random

import pytest

from edgetune.artifacts import Store
from edgetune.evals.stage import KIND_TASK
from edgetune.report.markdown import to_markdown
from edgetune.report.render import build_report, complete
from edgetune.report.sections import task_metric_table

from .conftest import _artifact

BUILDS = ["gpu", "Q8_0", "Q4_0"]


@pytest.fixture
def json_run(tmp_path):
    rng = random.Random(3)
    store = Store(tmp_path / "store")
    items, task = {}, {}
    for k, name in enumerate(BUILDS):
        rows = []
        for i in range(25):
            score = rng.choice([0.0, 1 / 3, 2 / 3, 1.0])
            rows.append({"id": f"json-{i}", "output": "{}", "reference": "{}", "correct": score == 1.0,
                         "score": score, "truncated": rng.random() < 0.2 * k, "latency_s": 0.1})
        items[name] = rows
        task[name] = _artifact(store, KIND_TASK, name, 0, rows, {"metric": "json"})
    plan = {"metric": "json", "why": "auto: every reference is a JSON object or array", "max_new_tokens": 40,
            "max_new_tokens_derived": True}
    report = build_report(title="t", builds=[{"name": b, "kind": "GGUF"} for b in BUILDS], task=task,
                          forgetting={}, context={"task_metric": plan})
    return report, items


def test_rows_carry_metric_score_and_truncations(json_run):
    report, items = json_run
    for row in report["builds"]:
        rows = items[row["name"]]
        assert row["metric"] == "json"
        assert row["score"] == pytest.approx(sum(r["score"] for r in rows) / len(rows))
        assert row["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
        assert row["truncated"] == sum(r["truncated"] for r in rows)
    assert report["builds"][-1]["truncated"] > 0  # the count is exercised, not always zero


def test_table_and_markdown_show_them(json_run):
    report, _ = json_run
    table = task_metric_table(report)
    assert table.columns[2] == "score (JSON fields matching)"
    by_build = {c[0]: c for c in table.rows}
    for row in report["builds"]:
        assert by_build[row["name"]][2] == f"{row['score']:.3f}"
        assert by_build[row["name"]][4] == f"{row['truncated']} / 25"
    assert "auto: every reference is a JSON object or array" in table.note and "max_new_tokens 40 (derived" \
        in table.note
    md = to_markdown(complete(report))
    assert "## Task metric (held-out)" in md and f"| Q4_0 | json | {report['builds'][-1]['score']:.3f} |" in md


def test_rows_without_scores_fall_back_to_correct(synthetic_run):
    for row in synthetic_run.report["builds"]:
        assert row["metric"] == "label" and row["truncated"] == 0
        assert row["score"] == pytest.approx(row["accuracy"])
