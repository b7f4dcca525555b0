"""`edgetune report` through main() (which alone maps errors to exit codes), as the console script runs it."""

from __future__ import annotations

import json

import pytest

import edgetune.cli.commands  # noqa: F401  (attaches the commands to `cli`)

from tests.clirun import run_edgetune

from .conftest import make_run



@pytest.fixture
def edgetune(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))

    return lambda *argv: run_edgetune(monkeypatch, *argv)


def test_report_writes_html_markdown_json_into_the_run(edgetune, tmp_path):
    run = make_run(tmp_path / "out")
    for name in ("report.html", "report.md"):
        (run.run_dir / name).unlink()
    r = edgetune("report", run.run_dir)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == [f"html: {run.run_dir / 'report.html'}", f"markdown: {run.run_dir / 'report.md'}",
                         f"json: {run.run_dir / 'report.json'}"]
    assert lines[3].startswith("recommended: ")
    assert all((run.run_dir / n).is_file() for n in ("report.html", "report.md", "report.json"))


def test_report_json_output_and_out_folder(edgetune, tmp_path):
    run = make_run(tmp_path / "out")
    r = edgetune("--json", "report", run.run_dir, "--out", tmp_path / "elsewhere")
    assert r.exit_code == 0, r.stderr
    payload = json.loads(r.stdout)
    assert payload["html"] == str(tmp_path / "elsewhere" / "report.html")
    written = json.loads((tmp_path / "elsewhere" / "report.json").read_text())
    assert payload["recommendation"] == written["recommendation"]


def test_report_compare(edgetune, tmp_path):
    a, b = make_run(tmp_path / "a", seed=1), make_run(tmp_path / "b", seed=2, target="rpi4-4gb")
    r = edgetune("--json", "report", "--compare", a.run_dir, b.run_dir, "--out", tmp_path / "cmp")
    assert r.exit_code == 0, r.stderr
    payload = json.loads(r.stdout)
    assert payload["html"] == str(tmp_path / "cmp" / "compare.html") and payload["recommendation"] is None


@pytest.mark.parametrize("argv", [("report",), ("report", "x", "--compare", "a", "b")])
def test_report_usage_errors(edgetune, argv):
    r = edgetune(*argv)
    assert r.exit_code == 2 and r.stdout == ""
    assert "give one RUN folder, or --compare RUN_A RUN_B (not both)" in r.stderr


def test_report_on_a_folder_without_a_report(edgetune, tmp_path):
    (tmp_path / "empty").mkdir()
    r = edgetune("report", tmp_path / "empty")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == (
        f"error: no report at {tmp_path / 'empty' / 'report.json'} (give a run folder written by "
        "`edgetune build` (edgetune-out/runs/<target>), which holds report.json)")


def test_report_on_a_broken_report(edgetune, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text('{"builds": 3}')
    r = edgetune("report", tmp_path / "bad")
    assert r.exit_code == 2 and "is not an edgetune report" in r.stderr
