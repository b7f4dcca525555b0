"""`edgetune doctor` through the CLI: lines for every check, JSON for scripts, and exit 9 when the probe sees
llama.cpp crash (a real SIGSEGV from the tool it runs)."""

from __future__ import annotations

import json

from tests.setup.test_probe import crashing_tool


def test_doctor_explains_the_build(edgetune, monkeypatch, edgetune_home):
    monkeypatch.setenv("EDGETUNE_HOME", str(edgetune_home))  # the set-up cache, not the test's empty one
    result = edgetune("--json", "doctor")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert {"cpu", "llama-cpp-python", "converter", "native tools", "build flags", "gpu", "judge"} <= set(checks)
    assert checks["llama-cpp-python"]["status"] == "OK", checks["llama-cpp-python"]
    assert "compiled in:" in checks["llama-cpp-python"]["detail"] and "AVX2" in checks["llama-cpp-python"]["detail"]
    assert checks["native tools"]["status"] == "OK" and "GGML_NATIVE=OFF" in checks["native tools"]["detail"]
    assert checks["judge"]["status"] == "WARN"  # no endpoint: the embedded tiny judge is a smoke test
    assert result.exit_code == (1 if any(c["status"] == "FAIL" for c in checks.values()) else 0)
    human = edgetune("doctor", "--judge-url", "http://127.0.0.1:9/v1")
    assert "FAIL judge: http://127.0.0.1:9/v1/models unreachable" in human.stdout
    assert human.exit_code == 1 and "judge" in human.stderr


def test_doctor_probe_exits_9_when_llama_cpp_crashes(edgetune, monkeypatch, tmp_path, llama_tools):
    home = tmp_path / "home"
    root = home / "llama.cpp" / llama_tools.version
    root.mkdir(parents=True)
    (root / "edgetune-tools.json").write_text(json.dumps({"version": llama_tools.version,
                                                          "revision": llama_tools.revision}))
    crashing_tool(root / "bin")
    # the probe's files are made by the real llama-quantize; only the tool that computes with them crashes
    (root / "bin" / "llama-quantize").symlink_to(llama_tools.tool("llama-quantize"))
    monkeypatch.setenv("EDGETUNE_HOME", str(home))
    result = edgetune("doctor", "--probe", "--quant", "Q4_0")
    assert result.exit_code == 9, result.stderr
    assert "Q4_0    llama-bench       crash (SIGSEGV)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: llama.cpp crashed on this machine computing "
                                                             "with Q4_0 via llama-bench")
    assert json.loads((root / "probe.json").read_text())["crashed"] is True


def test_doctor_says_which_fast_paths_are_active(edgetune):
    """On this CPU machine every training fast path is inactive, each line saying why (the real torch here is a CPU
    build); the JSON gives each path's state for scripts. On a CUDA host the same checks report them active."""
    import torch

    result = edgetune("--json", "doctor")
    payload = json.loads(result.stdout)
    paths = {p["name"]: p for p in payload["fast_paths"]}
    assert list(paths) == ["CUDA torch", "[cuda] extra", "bitsandbytes NF4", "Liger kernels", "flash attention (sdpa)"]
    checks = {c["name"]: c for c in payload["checks"]}
    if torch.cuda.is_available():
        assert paths["CUDA torch"]["active"] and checks["fast path: CUDA torch"]["status"] == "OK"
        return
    assert not any(p["active"] for p in paths.values())
    assert torch.version.cuda is None and "is a CPU build" in paths["CUDA torch"]["detail"]
    assert "no CUDA GPU here" in paths["Liger kernels"]["detail"] and "Triton" in paths["Liger kernels"]["detail"]
    assert "trains fp32 LoRA" in paths["bitsandbytes NF4"]["detail"]
    assert "sdpa runs torch's CPU kernel" in paths["flash attention (sdpa)"]["detail"]
    for name in paths:  # OFF: nothing to fix on a machine without a GPU, so they never fail the doctor
        assert checks[f"fast path: {name}"]["status"] == "OFF"
        assert checks[f"fast path: {name}"]["detail"].startswith("inactive: ")
    human = edgetune("doctor")
    assert "OFF  fast path: Liger kernels: inactive: no CUDA GPU here" in human.stdout


def test_fast_paths_name_the_cuda_extra_pyproject_declares():
    # doctor reports the [cuda] extra as installed or not by these names; pyproject.toml is what pip installs
    import re
    import tomllib
    from pathlib import Path

    from edgetune.fastpaths import CUDA_EXTRA

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    declared = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower()
                for r in pyproject["project"]["optional-dependencies"]["cuda"]}
    assert set(CUDA_EXTRA) == declared == {"bitsandbytes", "liger-kernel"}
