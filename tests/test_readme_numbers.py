"""README's default-build table is the committed fresh-clone report, rendered by scripts/readme_table.py: a figure
changed in README without a new report (or a new report without README) fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "results" / "rpi5-default" / "report.json"


def test_readme_table_is_the_committed_reports():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_table.py"), str(REPORT)],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out in (ROOT / "README.md").read_text(), "regenerate README's table: scripts/readme_table.py " + str(REPORT)
    report = json.loads(REPORT.read_text())
    assert {r["name"] for r in report["builds"]} >= {"base", "gpu"}  # a real build's report, not a stub
    assert report["finetune"]["verdict"] == "beats" and report["recommendation"]["quant"]
