"""`edgetune plan` and `edgetune bundle extract` through main() (which alone maps errors to exit codes), on real
GGUFs and the real bundle tarball; argv → planner arguments as a table."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from edgetune.artifacts import Store
from edgetune.cli import commands
from edgetune.planner import make_plan
from edgetune.targets import get_target

from .test_cli import one_error_line

LLAMA2_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "intermediate_size": 11008,
             "vocab_size": 32000, "max_position_embeddings": 4096}


@pytest.fixture(scope="module")
def quant_files(tiny_bundle) -> dict[str, Path]:
    store = Store(tiny_bundle.path.parents[1])
    return {q: store.lookup("gguf", key).file("gguf") for q, key in tiny_bundle.record["inputs"].items()}


# --- plan --------------------------------------------------------------------------------------------------

def test_plan_human(edgetune, quant_files):
    result = edgetune("plan", "--target", "rpi5", "--gguf", quant_files["Q8_0"], "--gguf", quant_files["Q4_0"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("rpi5-8gb: 4x cortex-a76 @ 2.4 GHz [neon, dotprod, fp16], 12.9 GB/s; usable RAM 5600.0 MB")
    assert lines[1].split() == ["quant", "source", "ctx", "weights", "need", "fits", "prompt", "tok/s", "gen", "tok/s"]
    assert [line.split()[:3] for line in lines[2:4]] == [["Q4_0", "file", "512"], ["Q8_0", "file", "512"]]
    assert all(line.split()[7] == "fits" for line in lines[2:4])
    assert lines[4].startswith("pick: Q4_0 (llama.cpp repacks Q4_0")
    assert "estimates" in lines[5]


def test_plan_json_is_the_library_plan(edgetune, quant_files):
    result = edgetune("--json", "plan", "--target", "rpi5-8gb", "--gguf", quant_files["Q4_0"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload == json.loads(json.dumps(make_plan(get_target("rpi5"), ggufs=[quant_files["Q4_0"]]).to_dict()))
    assert payload["pick"] == "Q4_0" and payload["pick_path"] == str(quant_files["Q4_0"])
    assert payload["rows"][0]["fits"] is True and payload["assumptions"]["gen_bw_efficiency"] == 0.8


def test_plan_estimates_from_an_hf_config(edgetune, isolated):
    (isolated / "config.json").write_text(json.dumps(LLAMA2_7B))
    result = edgetune("--json", "plan", "--target", "rpi5-8gb", "--hf-config", ".")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["quant"], r["source"]) for r in rows] == [("Q4_0", "estimate"), ("Q8_0", "estimate")]
    assert [r["status"] for r in rows] == ["fits", "oom"]  # Q8_0: 7.2 GB + 1.1 GB KV: past RAM and swap


def test_plan_refuses_a_board_too_small(edgetune, isolated):
    (isolated / "config.json").write_text(json.dumps(LLAMA2_7B))
    line = one_error_line(edgetune("plan", "--target", "rpi-zero-2w", "--hf-config", "config.json"), 2)
    assert line.startswith("error: no quant fits rpi-zero-2w: the smallest need is Q3_K_M at ")
    assert "MB, usable RAM is 300.0 MB (60% of 0.5 GB) (use a smaller model" in line


@pytest.mark.parametrize("argv, exit_code, text", [
    (["plan", "--target", "rpi5"], 2, "give a model: --gguf FILE, --run RUN_DIR or --hf-config PATH"),
    (["plan", "--hf-config", "."], 2, "give --target BOARD (or --calibrate RUN/devices)"),
    (["plan", "--target", "rpi5", "--gguf", "missing.gguf"], 2, "does not exist"),
    (["plan", "--target", "rpi5", "--hf-config", ".", "--quant", "Q9_9"], 2, "Invalid value for '--quant'"),
], ids=["no-model", "no-target", "missing-file", "bad-quant"])
def test_plan_usage_errors(edgetune, argv, exit_code, text):
    result = edgetune(*argv)
    assert result.exit_code == exit_code and text in result.stderr and result.stdout == ""


def test_plan_unknown_target(edgetune, quant_files):
    line = one_error_line(edgetune("plan", "--target", "rpi9", "--gguf", quant_files["Q4_0"]), 2)
    assert line.startswith("error: unknown target 'rpi9' (did you mean rpi5")


def test_plan_run_folder_without_record(edgetune, isolated):
    (isolated / "run").mkdir()
    line = one_error_line(edgetune("plan", "--target", "rpi5", "--run", "run"), 2)
    assert line == ("error: run/run.json is missing or unreadable (point --run at edgetune-out/runs/<target>, "
                    "written by `edgetune build`)")


PLAN_ARGV = [
    (["--target", "rpi5", "--gguf", "a.gguf"], {"target": "rpi5", "ggufs": (Path("a.gguf"),)}),
    (["--target", "rpi4", "--gguf", "a.gguf", "--gguf", "b.gguf"],
     {"target": "rpi4", "ggufs": (Path("a.gguf"), Path("b.gguf"))}),
    (["--target", "x", "--run", "run"], {"target": "x", "run_dir": Path("run")}),
    (["--target", "x", "--hf-config", "m", "--quant", "Q4_0", "--quant", "Q8_0"],
     {"target": "x", "hf_config": Path("m"), "quants": ("Q4_0", "Q8_0")}),
]


@pytest.mark.parametrize("argv, changes", PLAN_ARGV, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_plan_argv_to_arguments(isolated, argv, changes):
    for name in ("a.gguf", "b.gguf"):
        (isolated / name).write_bytes(b"")
    (isolated / "run").mkdir()
    (isolated / "m").mkdir()
    params = commands.plan.make_context("plan", list(argv)).params
    assert params == {"target": None, "ggufs": (), "run_dir": None, "hf_config": None, "quants": (),
                      "devices_dir": None, "published": False, **changes}


# --- bundle extract ----------------------------------------------------------------------------------------

def test_bundle_extract(edgetune, tiny_bundle, isolated):
    tarball = tiny_bundle.file("tarball")
    result = edgetune("bundle", "extract", tarball, "models")
    assert result.exit_code == 0, result.stderr
    root = Path("models") / tiny_bundle.outputs["bundle"]
    assert result.stdout.strip() == f"extracted and verified: {root}"
    assert edgetune("bundle", "verify", root).exit_code == 0
    again = edgetune("--json", "bundle", "extract", tarball, "elsewhere")
    assert json.loads(again.stdout) == {"bundle": str(Path("elsewhere") / tiny_bundle.outputs["bundle"])}


def test_bundle_extract_refuses_a_hostile_member(edgetune, tiny_bundle, isolated):
    import io

    name = tiny_bundle.outputs["bundle"]
    with tarfile.open("evil.tar.gz", "w:gz") as tar:
        tar.add(tiny_bundle.path / name, arcname=name)
        info = tarfile.TarInfo(f"{name}/../../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    line = one_error_line(edgetune("bundle", "extract", "evil.tar.gz", "out"), 7)
    assert line.startswith(f"error: refusing bundle member '{name}/../../escaped.txt': path traversal ('..') (")
    assert not (isolated / "out").exists() and not (isolated / "escaped.txt").exists()


def test_bundle_extract_into_an_existing_bundle(edgetune, tiny_bundle, isolated):
    name = tiny_bundle.outputs["bundle"]
    (isolated / "out" / name).mkdir(parents=True)
    line = one_error_line(edgetune("bundle", "extract", tiny_bundle.file("tarball"), "out"), 2)
    assert line == f"error: {Path('out') / name} already exists (remove it, or extract into another folder)"


def test_bundle_extract_missing_tarball(edgetune):
    result = edgetune("bundle", "extract", "nope.tar.gz", "out")
    assert result.exit_code == 2 and "does not exist" in result.stderr
