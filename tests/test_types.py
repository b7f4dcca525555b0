"""The type check CI runs before the tests (.ci/run): mypy over the modules pyproject.toml's [tool.mypy] lists,
--strict for the stage graph's vocabulary (artifacts, outputs, config). A field added to a stage's output and
not to its readers fails here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is in the test extra: pip install -e '.[test]'")
def test_typed_modules_pass_mypy():
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
