"""scripts/setup.sh installs the `[cuda]` extra (bitsandbytes, liger-kernel: the CUDA fast path) exactly when the
venv's torch is a CUDA build (issues 16 and 21).

The script's own install block (from `build_wheel "$LEVEL"` to `install_wheel`) runs in bash, unchanged, with pip
replaced by `echo` and `.venv/bin/python` a wrapper around this interpreter: once with the real torch of this
CPU host, and once each with a stand-in `torch` module whose `version.cuda` says a CUDA build or none. The
decision tested is the script's, not a copy of it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"


def install_block() -> str:
    text = SETUP.read_text()
    start = text.index('build_wheel "$LEVEL"\n')
    end = text.index("install_wheel\n", start + 1)
    return text[start + len('build_wheel "$LEVEL"\n'):end]


def installed_extras(tmp_path: Path, fake_cuda: str | None = None, fake: bool = False) -> set[str]:
    """The extras the block asks pip for, given this torch (fake: a stand-in whose version.cuda is fake_cuda)."""
    env_lines = ""
    if fake:
        torch_dir = tmp_path / "fake" / "torch"
        torch_dir.mkdir(parents=True)
        (torch_dir / "__init__.py").write_text(f"class version:\n    cuda = {fake_cuda!r}\n")
        env_lines = f"export PYTHONPATH={tmp_path / 'fake'}\n"
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv_bin / "python").chmod(0o755)
    script = ("set -euo pipefail\nstep() { :; }\nPIP=(echo PIP)\nWHEEL=/wheels/key/llama_cpp_python.whl\n"
              + env_lines + install_block())
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("PIP install")]
    target = line.split(" -e ", 1)[1].strip()
    assert target.startswith("."), line  # the checkout itself, editable
    extras = re.fullmatch(r"\.(?:\[(.*)\])?", target)
    assert extras, line
    return set(extras.group(1).split(",")) if extras.group(1) else set()


@pytest.mark.parametrize("cuda", ["12.8", "13.0"])
def test_cuda_torch_gets_the_cuda_extra(tmp_path, cuda):
    assert "cuda" in installed_extras(tmp_path, cuda, fake=True)


def test_cpu_torch_gets_no_cuda_extra(tmp_path):
    assert "cuda" not in installed_extras(tmp_path, None, fake=True)


def test_this_cpu_host_gets_no_cuda_extra(tmp_path):
    import torch

    assert torch.version.cuda is None  # the CPU wheel; the real torch decides here
    assert "cuda" not in installed_extras(tmp_path)


def test_no_extra_brings_test_tools_in_setup(tmp_path):
    # [test] is scripts/setup-test-deps.sh's, never setup.sh's, whatever the torch
    assert "test" not in installed_extras(tmp_path, "12.8", fake=True)
