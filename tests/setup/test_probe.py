"""The set-up probe and the build it checks: every quant type computes through both host paths of llama.cpp, a
real crash (a process killed by SIGSEGV) is recorded as one, and the installed llama.cpp has no AMX kernels."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from edgetune.constants import Quant
from edgetune.cpu import build_flags, cpu_flags, next_level
from edgetune.doctor import FAIL, OK, probe_check, wheel_build_record
from edgetune.llama_probe import enabled_features, load_probe, probe_native, probe_runtime, run_probe, system_info
from edgetune.llamacpp import LlamaCppTools

CRASHING_ENGINE = "tests.runtimes.crashing:CrashingRuntime"


def crashing_tool(folder: Path, name: str = "llama-bench") -> Path:
    """A real executable that dies on SIGSEGV, as llama-bench did on AMX hosts."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    tool.write_text("#!/bin/sh\nkill -SEGV $$\n")
    tool.chmod(0o755)
    return tool


def tools_with_bin(root: Path, bin_dir: Path | None, real: LlamaCppTools) -> LlamaCppTools:
    root.mkdir(parents=True, exist_ok=True)
    if bin_dir is not None:
        (root / "bin").symlink_to(bin_dir)
    return LlamaCppTools(root=root, version=real.version, revision=real.revision)


def test_every_quant_type_computes_through_llama_cpp_python_and_the_native_tool(tmp_path, llama_tools, smollm2_gguf):
    tools = tools_with_bin(tmp_path / "tools", llama_tools.bin_dir, llama_tools)
    record = run_probe(tools, smollm2_gguf, tmp_path / "work")
    rows = {(r["quant"], r["path"]): r for r in record["rows"]}
    assert set(rows) == {(q.value, p) for q in Quant for p in ("llama-cpp-python", "llama-bench")}
    assert all(r["status"] == "ok" for r in rows.values()), [r for r in rows.values() if r["status"] != "ok"]
    assert not record["crashed"] and load_probe(tools) == record
    assert probe_check(record).status == OK
    assert not list((tmp_path / "work").glob("*.gguf"))  # probe files are removed


def test_a_crashing_native_tool_is_recorded_as_a_crash(tmp_path, llama_tools, smollm2_gguf):
    tools = tools_with_bin(tmp_path / "tools", None, llama_tools)
    crashing_tool(tmp_path / "tools" / "bin")
    # the probe's files are made by the real llama-quantize; only the tool that computes with them crashes
    (tmp_path / "tools" / "bin" / "llama-quantize").symlink_to(llama_tools.tool("llama-quantize"))
    record = run_probe(tools, smollm2_gguf, tmp_path / "work", quants=[Quant.Q8_0])
    by_path = {r["path"]: r for r in record["rows"]}
    assert by_path["llama-bench"]["status"] == "crash" and by_path["llama-bench"]["detail"] == "SIGSEGV"
    assert by_path["llama-cpp-python"]["status"] == "ok"
    assert record["crashed"]
    check = probe_check(record)
    assert check.status == FAIL and "Q8_0 via llama-bench: crash (SIGSEGV)" in check.detail


def test_a_crash_in_the_python_path_is_recorded_and_a_refusal_is_an_error(tmp_path, tiny_gguf):
    crash = probe_runtime(tiny_gguf, engine=CRASHING_ENGINE)
    assert (crash.status, crash.detail) == ("crash", "SIGSEGV")
    broken = tmp_path / "broken-Q4_0.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:4096])
    refused = probe_runtime(broken)
    assert refused.status == "error" and "could not load" in refused.detail
    tool = crashing_tool(tmp_path / "bin")
    assert probe_native(tool, tiny_gguf).status == "crash"


def test_installed_llama_cpp_python_compiles_what_its_build_record_says():
    features = enabled_features(system_info())
    record = wheel_build_record()
    assert record is not None, "scripts/setup.sh installs the wheel by path with its build.json beside it"
    assert features and "REPACK" in features, features
    if platform.machine() == "x86_64":
        assert "-DGGML_NATIVE=OFF" in record["cmake_args"]
        cpu = cpu_flags()
        # AMX kernels only at the `host` level on a CPU with AMX; off after a crash, and never on a CPU without
        assert any(f.startswith("AMX") for f in features) == (record["choice"] == "host" and "amx_int8" in cpu)
        if record["choice"] != "portable":  # the CPU's own sets are compiled in: no speed given away
            assert ("AVX512" in features) == ("avx512f" in cpu) and "AVX2" in features
        assert record["cmake_args"] == list(build_flags(level=record["choice"]).cmake_args)


def test_native_tools_are_built_with_the_wheels_cpu_flags(llama_tools):
    build = json.loads((llama_tools.bin_dir / "build.json").read_text())
    record = wheel_build_record()
    assert record is not None
    for arg in record["cmake_args"]:
        assert arg in build["cmake_args"].split()


@pytest.mark.parametrize(("flags", "on", "off"), [
    ({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw",
      "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"}, {"GGML_AVX2", "GGML_AVX512", "GGML_AVX512_VNNI"},
     {"GGML_AVX512_BF16"}),
    ({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}, {"GGML_AVX2", "GGML_FMA"}, {"GGML_AVX512", "GGML_AMX_INT8"}),
    ({"sse4_2", "avx"}, {"GGML_AVX"}, {"GGML_AVX2", "GGML_FMA"}),
])
def test_flags_follow_the_cpu_and_amx_goes_first(flags, on, off):
    host = set(build_flags(flags, "x86_64").cmake_args)
    assert "-DGGML_NATIVE=OFF" in host
    assert {f"-D{o}=ON" for o in on} <= host and {f"-D{o}=OFF" for o in off} <= host
    amx = "amx_int8" in flags
    assert ("-DGGML_AMX_INT8=ON" in host) == amx
    no_amx = set(build_flags(flags, "x86_64", level="host-no-amx").cmake_args)
    assert "-DGGML_AMX_INT8=OFF" in no_amx and host - no_amx <= {f"-DGGML_AMX_{x}=ON" for x in ("TILE", "INT8", "BF16")}
    portable = set(build_flags(flags, "x86_64", level="portable").cmake_args)
    assert "-DGGML_AVX2=ON" in portable and "-DGGML_AVX512=OFF" in portable and "-DGGML_AMX_INT8=OFF" in portable
    assert build_flags(flags, "aarch64").cmake_args == ("-DGGML_NATIVE=ON",)
    # the fall-back order set-up walks: AMX off first (only where there is AMX to turn off), then portable
    assert next_level("host", flags) == ("host-no-amx" if amx else "portable")
    assert next_level("host-no-amx", flags) == "portable" and next_level("portable", flags) is None


def test_doctor_flags_a_wheel_built_for_another_cpu():
    from edgetune.doctor import WARN, flags_check

    here = build_flags()
    assert flags_check({**here.to_dict()}).status == OK
    other = build_flags({"sse4_2", "avx"}, "x86_64")
    moved = flags_check(other.to_dict())
    assert moved.status == (OK if other.cmake_args == here.cmake_args else WARN)
    assert flags_check(build_flags(level="portable").to_dict()).status == OK
    assert flags_check(None).status == WARN
