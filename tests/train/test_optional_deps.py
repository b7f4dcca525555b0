"""Training without the optional extras (issue 21): a process in which bitsandbytes, liger-kernel and mlflow are
not importable, as after a core install (`pip install edgetune`, no `[cuda]` or `[mlflow]`), trains LoRA on the
CPU, and asking for QLoRA there fails with one line naming the extra.

The packages are hidden before anything imports them (a None entry in sys.modules: `find_spec` reports them
absent and `import` fails), so transformers and peft see them missing too, as they would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HIDE = ("bitsandbytes", "liger_kernel", "mlflow")
RUN_WITHOUT = ("import sys\n"
               f"for name in {HIDE!r}:\n"
               "    sys.modules[name] = None\n"
               "from edgetune.cli.main import main\n"
               "sys.argv = ['edgetune', *sys.argv[1:]]\n"
               "main()\n")
FAST = {"data": {"heldout_size": 10, "train_size": 32},
        "train": {"batch_size": 8, "learning_rate": 1e-2, "warmup_ratio": 0.0, "eval_items": 0, "min_steps": 0,
                  "save_steps": 0, "max_steps": 2}}


def edgetune_without_extras(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGETUNE_HOME": str(cwd / "home"), "MLFLOW_TRACKING_URI": f"file://{cwd}/mlruns"}
    return subprocess.run([sys.executable, "-c", RUN_WITHOUT, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def config(tmp_path, tiny_model_dir, colour_jsonl):
    def write(method: str) -> Path:
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump({"model": {"source": str(tiny_model_dir)},
                                        "data": {**FAST["data"], "source": str(colour_jsonl)},
                                        "train": {**FAST["train"], "method": method}}))
        return path
    return write


def test_cpu_training_needs_no_optional_extra(tmp_path, config):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    done = edgetune_without_extras(tmp_path, "--json", "train", "-c", str(config("auto")), "--out", "out")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["metrics"]["method"] == "lora" and payload["metrics"]["steps"] == 2
    assert not (tmp_path / "mlruns").exists()  # no mlflow: registered locally only


def test_qlora_without_bitsandbytes_is_one_line_naming_the_extra(tmp_path, config):
    done = edgetune_without_extras(tmp_path, "train", "-c", str(config("qlora")), "--out", "out")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("WARNING: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "train.method qlora needs bitsandbytes, which is not installed" in lines[0]
    assert "pip install 'edgetune[cuda]'" in lines[0]
    assert not (tmp_path / "out" / "store" / "train").exists()  # refused before training
