"""`edgetune train` and `edgetune sweep` through main(), on the tiny Llama and the colour task (fast settings in
a config file, flags on top)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from edgetune.cli.main import cli  # importing main registers every command

from .test_cli import one_error_line

FAST = {"data": {"heldout_size": 10, "train_size": 32},
        "train": {"method": "lora", "batch_size": 8, "learning_rate": 1e-2, "warmup_ratio": 0.0, "eval_items": 0, "min_steps": 0,
                  "save_steps": 0}}


@pytest.fixture
def config(isolated, tiny_model_dir, colour_jsonl) -> Path:
    path = isolated / "edgetune.yaml"
    path.write_text(yaml.safe_dump({**FAST, "model": {"source": str(tiny_model_dir)},
                                    "data": {**FAST["data"], "source": str(colour_jsonl)}}))
    return path


@pytest.mark.parametrize("name", ["train", "sweep"])
def test_help(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output
    assert ("--gpus" in result.output) == (name == "train")
    assert ("--ranks" in result.output) == (name == "sweep")


def test_train_prints_the_adapter_and_registry_id(edgetune, config, isolated):
    result = edgetune("train", "-c", config, "--rank", "4", "--max-steps", "2", "--out", "out")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    adapter = Path(lines[0].removeprefix("adapter: "))
    assert (adapter / "adapter_config.json").is_file()
    assert adapter.resolve().is_relative_to((isolated / "out" / "store" / "train").resolve())
    reg_id = lines[1].removeprefix("registry id: ").split()[0]
    entry = isolated / "out" / "registry" / reg_id
    assert (entry / "metadata.json").is_file() and (entry / "adapter" / "adapter_config.json").is_file()
    assert json.loads((entry / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert "in 2 steps" in lines[2]
    # only what train needs ran: no merge, export or bundle
    assert {p.name for p in (isolated / "out" / "store").iterdir()} == {"data", "base", "train"}

    again = edgetune("--json", "train", "-c", config, "--rank", "4", "--max-steps", "2", "--out", "out")
    assert again.exit_code == 0, again.stderr
    payload = json.loads(again.stdout)
    assert payload["registry_id"] == reg_id and payload["cached"] is True
    assert payload["strategy"] == "single" and payload["oom_fallback"] == []
    assert payload["metrics"]["steps"] == 2 and payload["metrics"]["method"] == "lora"


@pytest.mark.parametrize("argv, expected", [
    (["--rank", "2", "--lr", "0.005"], {"r": 2, "learning_rate": 0.005, "adapter": "lora"}),
    (["--adapter", "dora", "--epochs", "0.25"], {"adapter": "dora", "epochs": 0.25}),
    (["--packing", "--micro-batch-tokens", "512"], {"packing": True, "micro_batch_tokens": 512}),
])
def test_flags_reach_the_train_stage(edgetune, config, isolated, argv, expected):
    result = edgetune("--json", "train", "-c", config, "--max-steps", "1", "--out", "out", *argv)
    assert result.exit_code == 0, result.stderr
    record = json.loads((Path(json.loads(result.stdout)["artifact"]) / "artifact.json").read_text())
    expected = {**expected, "max_steps": 1}
    assert {k: record["params"][k] for k in expected} == expected


def test_more_gpus_than_present_is_one_error_line(edgetune, config, isolated):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = edgetune("train", "-c", config, "--gpus", "2", "--out", "out")
    # the data stage's small-data warning (32 training rows, issue 22) may come first; the error is one line
    lines = result.stderr.splitlines()
    assert all("training examples" in w for w in lines if w.startswith("WARNING: "))
    result.stderr = "\n".join(w for w in lines if not w.startswith("WARNING: "))
    line = one_error_line(result, 2)
    assert line == "error: asked for 2 GPUs, but CUDA shows 0 on this machine (drop --gpus (CPU training))"
    assert not (isolated / "out" / "store" / "train").exists() and not (isolated / "out" / "registry").exists()


def test_sweep_prints_the_table_and_the_choice(edgetune, config, isolated):
    result = edgetune("sweep", "-c", config, "--ranks", "4,2", "--fraction", "0.25", "--max-steps", "2",
                      "--out", "out")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "| rank |" in out and "| 2" in out and "| 4" in out
    chosen = int(out.split("chosen rank: ")[1].split()[0])
    assert chosen in (2, 4) and f"| {chosen} **chosen** |" in out
    run_dir = isolated / "out" / "runs"
    [sweep_dir] = list(run_dir.iterdir())
    assert sweep_dir.name.startswith("sweep-") and {p.name for p in sweep_dir.iterdir()} == {"sweep.json", "sweep.md"}

    again = edgetune("--json", "sweep", "-c", config, "--ranks", "4,2", "--fraction", "0.25", "--max-steps", "2",
                     "--out", "out")
    payload = json.loads(again.stdout)
    assert payload["chosen_rank"] == chosen and [r["rank"] for r in payload["rows"]] == [2, 4]
    assert payload["n_train"] == 8 and payload["metric"] == "accuracy"


@pytest.mark.parametrize("argv, message", [
    (["--ranks", "4,x"], "give comma-separated integers"),
    (["--ranks", "4,4"], "ranks must be distinct"),
    (["--fraction", "0"], "0<x<=1"),
    (["--metric", "bleu"], "bleu"),
])
def test_sweep_usage_errors_exit_2(edgetune, config, argv, message):
    result = edgetune("sweep", "-c", config, *argv)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_an_unknown_chat_template_fallback_is_one_error_line(edgetune, config, isolated):
    result = edgetune("train", "-c", config, "--chat-template-fallback", "vicuna", "--out", "out")
    line = one_error_line(result, 2)  # a config error
    assert "vicuna" in line and "chatml" in line
    assert not (isolated / "out").exists()


def test_build_takes_gpus_as_train_does(edgetune, config, isolated):
    """`build --gpus 2` goes through the same launcher check as `train --gpus 2`: on a machine without CUDA, the
    same one error line, before any stage runs."""
    import torch

    assert "--gpus" in CliRunner().invoke(cli, ["build", "--help"]).output
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = edgetune("build", "-c", config, "--gpus", "2", "--out", "out")
    line = one_error_line(result, 2)
    assert line == "error: asked for 2 GPUs, but CUDA shows 0 on this machine (drop --gpus (CPU training))"
    assert not (isolated / "out" / "store").exists()
