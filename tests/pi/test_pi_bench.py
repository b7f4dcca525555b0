"""`edgetune bench --device` into the emulated Raspberry Pi 5: the standard benchmarks (MMLU 0-shot and 5-shot,
ARC-Challenge, HellaSwag, PIQA, WinoGrande; the harness's own task definitions on the packaged data) scored by
the bundle's cross-built aarch64 llama-server, started by the runner over the rootfs's own arm64 sshd, every
process a Cortex-A76 under qemu-user. The same run's GGUFs are then scored on this host by llama.cpp: same
requests, same answers. Functional only (one item a task, one per MMLU subject): no speed is asserted."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[lmeval]')")

from tests.clirun import run_edgetune  # noqa: E402
from tests.harness.test_harness import make_run  # noqa: E402

pytestmark = pytest.mark.pi

TASKS = "mmlu,mmlu:5,arc_challenge,hellaswag,piqa,winogrande"


def test_bench_on_the_emulated_pi(pi_sshd, pi_bundle, tiny_model_dir, home, tmp_path, monkeypatch):
    manifest = json.loads((pi_bundle / "manifest.json").read_text())
    ggufs = {m["quant"]: pi_bundle / m["file"] for m in manifest["models"]}
    assert sorted(ggufs) == ["Q4_0", "Q8_0"]
    # the HF builds (base, GPU build) run on this host either way; the GGUFs are the bundle's
    run_dir = make_run(tmp_path / "out", tiny_model_dir, tiny_model_dir, ggufs, pi_bundle)
    common = ["--json", "bench", str(run_dir), "--tasks", TASKS, "--limit", "1", "--threads", "1"]

    res = run_edgetune(monkeypatch, *common, "--device", pi_sshd.spec)
    assert res.exit_code == 0, res.stderr[-3000:]
    board = json.loads((run_dir / "bench.json").read_text())  # with the per-item answers stdout leaves out
    res = run_edgetune(monkeypatch, *common)
    assert res.exit_code == 0, res.stderr[-3000:]
    host = json.loads((run_dir / "bench.json").read_text())

    assert board["device"] and host.get("device") is None
    for quant in ggufs:
        assert board["builds"][quant].startswith("GGUF (llama-server on ")
        assert host["builds"][quant] == "GGUF (llama.cpp, host)"
    assert board["tasks"] == host["tasks"] == TASKS.split(",")
    assert board["scores"]["mmlu"]["Q8_0"]["n"] == board["scores"]["mmlu:5"]["Q8_0"]["n"] == 57
    # the same requests on every build, on the board as on the host (5-shot MMLU asks for more context)
    assert board["requests"] == host["requests"]
    for task in board["scores"]:
        for quant in ggufs:
            b, h = board["scores"][task][quant], host["scores"][task][quant]
            assert b["n"] == h["n"], (task, quant)
            if task != "mmlu:5":  # 5-shot prompts pass the board's 512-token context and are cut there only
                differ = [k for k in h["items"] if b["items"].get(k) != h["items"][k]]
                # Q8_0: aarch64's kernels pick the same answers as x86's. Q4_0: their dot products sum in another
                # order, and a near-tie can flip (2 of 57 MMLU items did, 2026-12-07); more than 5% is a real fault
                allowed = 0 if quant == "Q8_0" else max(1, len(h["items"]) // 20)
                assert len(differ) <= allowed, (task, quant, differ)
            assert b["reference"] == "gpu" and b["verdict"]["n"] == b["n"]
