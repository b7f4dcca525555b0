"""report.json's schema (report.schema): the committed reports of older builds load and round-trip to the same
JSON, `edgetune report` re-renders them, what build_report writes validates, and a report that breaks the
contract is refused naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import edgetune.cli.commands  # noqa: F401  (attaches the commands to `cli`)
from edgetune.report.recommend import resolve
from edgetune.report.schema import SCHEMA_VERSION, Report
from tests.clirun import run_edgetune

from .conftest import make_run

ROOT = Path(__file__).resolve().parents[2]
# reports from before the schema (no schema_version: read as version 1) and ones written through it
COMMITTED = [ROOT / "docs/results/rpi5-default", *sorted(p.parent for p in (ROOT / "docs/runs").glob("*/report.json"))]


@pytest.mark.parametrize("run_dir", COMMITTED, ids=lambda p: p.name)
def test_a_committed_report_round_trips_through_the_schema(run_dir):
    stored = json.loads((run_dir / "report.json").read_text())
    report = Report.load(stored)
    assert stored.get("schema_version", 1) == report.schema_version == SCHEMA_VERSION
    again = report.to_dict()
    assert again.pop("schema_version") == SCHEMA_VERSION
    stored.pop("schema_version", None)
    assert json.dumps(again, sort_keys=True) == json.dumps(stored, sort_keys=True)  # ints stay ints
    assert report.builds[0].name == stored["builds"][0]["name"]
    assert report.context.llama_cpp == stored["context"]["llama.cpp"]


@pytest.mark.parametrize("run_dir", COMMITTED, ids=lambda p: p.name)
def test_edgetune_report_re_renders_a_committed_report(run_dir, tmp_path, monkeypatch):
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    r = run_edgetune(monkeypatch, "--json", "report", copy)
    assert r.exit_code == 0, r.stderr
    written = json.loads((copy / "report.json").read_text())
    stored = json.loads((run_dir / "report.json").read_text())
    assert written["schema_version"] == SCHEMA_VERSION
    # a computed recommendation is computed again under today's rule (extract-json's predates non-inferiority)
    assert written["recommendation"]["quant"] == resolve(stored)["quant"]
    assert [b["accuracy"] for b in written["builds"]] == [b["accuracy"] for b in stored["builds"]]
    assert (copy / "report.md").is_file() and (copy / "report.html").is_file()


def test_build_report_output_is_typed(tmp_path):
    run = make_run(tmp_path / "out")
    report = Report.load(json.loads((run.run_dir / "report.json").read_text()))
    q4 = report.row("Q4_0")
    assert q4 is not None and q4.vs_gpu is not None and q4.forgetting is not None
    assert q4.vs_gpu.verdict in ("not worse", "worse", "inconclusive")
    assert set(q4.forgetting) == {"mmlu", "arc_easy"} and q4.forgetting["mmlu"].n == 30


def test_a_report_that_breaks_the_schema_is_refused_with_the_field(tmp_path, monkeypatch):
    run = make_run(tmp_path / "out")
    path = run.run_dir / "report.json"
    bad = json.loads(path.read_text())
    bad["builds"][1]["accuracy"] = "high"
    path.write_text(json.dumps(bad))
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    r = run_edgetune(monkeypatch, "report", run.run_dir)
    assert r.exit_code != 0 and "builds.1.accuracy" in r.stderr and "report schema" in r.stderr
