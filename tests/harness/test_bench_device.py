"""`edgetune bench --device`: a run's GGUF scored by the bundle's llama-server over real SSH (the unprivileged
sshd of tests/device, this machine as the device, the x86 llama-server from the same llama.cpp as the bundles'
aarch64 one), on the same harness requests as the same GGUF in llama.cpp on the host."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[lmeval]')")

from tests.device.conftest import make_device_bundle, running_sshd, ssh_keys  # noqa: E402
from tests.harness.test_harness import STANDARD, make_run  # noqa: E402

__all__ = ["ssh_keys"]  # a fixture, imported so that pytest finds it here


def test_bench_on_a_device_over_ssh(tmp_path, tiny_model_dir, tiny_bundle, llama_tools, ssh_keys):
    from edgetune.bundle_manifest import read_manifest
    from edgetune.harness.bench import bench

    bundle_dir = make_device_bundle(tiny_bundle.file("bundle"), tmp_path / "bundle",
                                    server=llama_tools.tool("llama-server"))
    q8 = next(m["file"] for m in read_manifest(bundle_dir)["models"] if m["quant"] == "Q8_0")
    run_dir = make_run(tmp_path / "out", tiny_model_dir, tiny_model_dir, {"Q8_0": bundle_dir / q8}, bundle_dir)
    host = bench(run_dir, STANDARD, limit=1, n_threads=1)
    with running_sshd(tmp_path / "sshd", ssh_keys) as server:
        device = server.device()
        on_board = bench(run_dir, STANDARD, limit=1, n_threads=1, device=device)
    assert on_board.device == device.name and on_board.builds["Q8_0"].startswith("GGUF (llama-server on")
    assert on_board.requests == host.requests
    for task in STANDARD:  # MMLU 0- and 5-shot, ARC-Challenge, HellaSwag, PIQA, WinoGrande
        board, local = on_board.scores[task]["Q8_0"], host.scores[task]["Q8_0"]
        # same GGUF, same requests: the same answers (llama-server's float32 probabilities vs llama.cpp's logits)
        assert board.n == local.n == (57 if task.startswith("mmlu") else 1), task
        if task != "mmlu:5":  # 5-shot prompts pass the board's 512-token context and are cut there, not on the host
            assert board.items == local.items, task
    assert board.verdict is not None and board.reference == "gpu"
    assert json.loads((run_dir / "report.json").read_text())["standard_benchmarks"]["device"] == device.name
