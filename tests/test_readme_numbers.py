"""README's default-build table is the committed fresh-clone report, rendered by scripts/readme_table.py: a figure
changed in README without a new report (or a new report without README) fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "results" / "rpi5-default" / "report.json"


def test_readme_table_is_the_committed_reports():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_table.py"), str(REPORT)],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out in (ROOT / "README.md").read_text(), "regenerate README's table: scripts/readme_table.py " + str(REPORT)
    report = json.loads(REPORT.read_text())
    assert {r["name"] for r in report["builds"]} >= {"base", "gpu"}  # a real build's report, not a stub
    assert report["finetune"]["verdict"] == "beats" and report["recommendation"]["quant"]


def _check_default_build():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_default_build", ROOT / "scripts" / "check_default_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(**change):
    """The committed report with one build's figures changed: {"Q8_0": {"accuracy": ...}, ...}."""
    from edgetune.report.schema import Report

    data = json.loads(REPORT.read_text())
    for row in data["builds"]:
        for key, value in change.get(row["name"], {}).items():
            target = row
            *path, last = key.split(".")
            for part in path:
                target = target[part]
            target[last] = value
    return Report.load(data)


def test_ci_check_passes_the_committed_report_and_noise_within_tolerance(capsys):
    check = _check_default_build()
    check.check_readme_table(_report())
    assert "renders it exactly" in capsys.readouterr().out
    kld = json.loads(REPORT.read_text())["builds"][4]["fidelity"]["kld_mean"]
    check.check_readme_table(_report(Q8_0={"fidelity.kld_mean": kld + 0.001}))  # under the 0.002 allowance
    assert "within the run-to-run and cross-CPU noise" in capsys.readouterr().out


def test_ci_check_passes_what_another_cpu_moved():
    """What an Intel Xeon's llama.cpp (AMX off) moved against the committed AMD EPYC report: two items on Q8_0,
    one on Q4_0 with its verdict from worse to inconclusive (benchmarks/results-cross-host-default-2026-12-07.log)."""
    check = _check_default_build()
    data = json.loads(REPORT.read_text())
    q4, q8 = data["builds"][3], data["builds"][4]
    assert (q4["name"], q8["name"]) == ("Q4_0", "Q8_0")
    check.check_readme_table(_report(
        Q4_0={"accuracy": 179 / 230, "vs_gpu.lost": q4["vs_gpu"]["lost"] - 1, "vs_gpu.verdict": "inconclusive",
              "vs_gpu.diff": -0.0696, "vs_gpu.ci95": [-0.122, -0.018],
              "fidelity.kld_mean": q4["fidelity"]["kld_mean"] - 0.0102},
        Q8_0={"accuracy": 195 / 230, "vs_gpu.gained": q8["vs_gpu"]["gained"] - 2, "vs_gpu.diff": 0.0,
              "vs_gpu.ci95": [-0.019, 0.019], "fidelity.top1_agreement": q8["fidelity"]["top1_agreement"] + 0.012}))


@pytest.mark.parametrize("change, figure", [
    ({"Q8_0": {"accuracy": 201 / 230}}, "Q8_0.accuracy: 87.4 now, 85.7"),  # four more items right (n=230)
    ({"Q4_0": {"fidelity.kld_mean": 0.5564}}, "Q4_0.kld: 0.5564 now, 0.5264"),  # 5.7% more
    ({"Q8_0": {"fidelity.kld_mean": 0.0115}}, "Q8_0.kld: 0.0115 now, 0.0085"),  # 0.003 more
    ({"F16": {"size_bytes": 290_000_000}}, "F16.size_mb: 290 now, 271"),
    ({"Q4_0": {"vs_gpu.verdict": "not worse"}}, "Q4_0.verdict: not worse now, worse"),  # two steps away
    ({"F16": {"forgetting.mmlu.acc": 0.26}}, "F16.forgetting.mmlu: 26.0 now"),  # over 3 of its 100 items
], ids=["accuracy", "kld", "kld-small", "size", "verdict", "forgetting"])
def test_ci_check_fails_a_figure_beyond_the_noise(change, figure):
    check = _check_default_build()
    with pytest.raises(AssertionError) as exc:
        check.check_readme_table(_report(**change))
    assert figure in str(exc.value) and "beyond the run-to-run and cross-CPU noise" in str(exc.value)
