"""EDGETUNE_REQUIRE_TIERS=1 (tests/tiers.py, hooks in tests/conftest.py): a pytest run in a temp folder with this
repository's conftest and tier table, and tests that skip the ways the real tiers do (in a fixture, at module
import, in the test body); under the switch each fails naming its tier and reason, a `gpu` test still skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

CASES = {
    "tests/pi/test_board.py": '''
import pytest

@pytest.fixture
def board():
    pytest.skip("binfmt_misc cannot be mounted")

def test_on_the_board(board):
    pass
''',
    "tests/train/test_registry.py": '''
import pytest

mlflow = pytest.importorskip("no_such_module_mlflow", reason="mlflow-skinny is in the test extras")

def test_logs():
    pass
''',
    "tests/test_other.py": '''
import pytest

def test_body_skip():
    pytest.skip("something optional is missing")

@pytest.mark.gpu
def test_gpu_only():
    pytest.skip("needs CUDA")

def test_runs():
    pass
''',
}


def run_pytest(root: Path, require: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGETUNE_REQUIRE_TIERS"}
    if require is not None:
        env["EDGETUNE_REQUIRE_TIERS"] = require
    # a module that skips at import fails its collection, which stops a run before any test: go on here to see all
    argv = ["-q", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors", "tests"]
    return subprocess.run([sys.executable, "-m", "pytest", *argv],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "tests").mkdir()
    for name in ("conftest.py", "tiers.py"):
        shutil.copy(TESTS / name, tmp_path / "tests" / name)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    for rel, text in CASES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_skips_pass_without_the_switch(project):
    done = run_pytest(project, None)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 4 skipped" in done.stdout and "did not run" not in done.stdout


def test_each_tier_skip_fails_under_the_switch(project):
    done = run_pytest(project, "1")
    out = done.stdout
    assert done.returncode == 1, out
    assert ("tier pi (emulated Raspberry Pi 5: scripts/setup-pi-emulation.sh) did not run "
            "(EDGETUNE_REQUIRE_TIERS=1): binfmt_misc cannot be mounted") in out
    assert ("tier mlflow (the test extra) did not run (EDGETUNE_REQUIRE_TIERS=1): "
            "mlflow-skinny is in the test extras") in out
    assert "tier no tier did not run (EDGETUNE_REQUIRE_TIERS=1): something optional is missing" in out
    assert "SKIPPED [1] tests/test_other.py:9: needs CUDA" in out  # gpu is opt-in, not a tier
    assert "PASSED tests/test_other.py::test_runs" in out
    assert run_pytest(project, "0").returncode == 0  # only "1" turns it on
