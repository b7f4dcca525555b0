"""Locating cross-built llama.cpp runtimes by arch, -mcpu and llama-cpp-python version: the real build in the cache
(scripts/cross-build-llama.sh, through the cross_runtime fixture), and the choice among several builds over folders
shaped exactly as the script writes them. find_runtime reads only build.json, the stamp and whether each binary
exists, so those folders hold stand-in files: the real binaries are checked in test_the_cached_build_is_real."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from edgetune import runtime_build
from edgetune.errors import ToolError

VERSION = "0.3.36"


def fake_cross_build(home: Path, mcpu: str = "cortex-a76", *, key: str = "abc123", recipe: int = runtime_build.RECIPE,
                     version: str = VERSION, stamp: bool = True, binaries=runtime_build.BINARIES) -> Path:
    """A folder like the script's: bin/<tools> (tiny stand-ins), build.json, and .stamp written last."""
    root = home / "cross" / f"{version}-{key}"
    (root / "bin").mkdir(parents=True)
    for name in binaries:
        (root / "bin" / name).write_bytes(b"\x7fELF stand-in for " + name.encode())
    (root / "build.json").write_text(json.dumps({
        "recipe": recipe, "llama-cpp-python": version, "llama.cpp": "0c1e570", "arch": "aarch64", "mcpu": mcpu,
        "arm_features": ["DOTPROD", "FMA", "FP16_VECTOR_ARITHMETIC"], "compiler": "aarch64-linux-gnu-g++ 12.2.0",
        "cmake_flags": ["-DGGML_NATIVE=OFF", f"-DCMAKE_C_FLAGS=-mcpu={mcpu}", "-DCMAKE_EXE_LINKER_FLAGS=-static"],
        "static": True, "binaries": list(binaries), "build_seconds": 1}))
    if stamp:
        (root / ".stamp").touch()
    return root


EM_AARCH64, PT_INTERP = 183, 3


def elf_machine_and_interp(path: Path) -> tuple[int, bool]:
    """(e_machine, whether it has a PT_INTERP program header, i.e. is dynamically linked) of a 64-bit LE ELF."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path} is not a 64-bit little-endian ELF"
    machine = struct.unpack_from("<H", data, 18)[0]
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return machine, PT_INTERP in types


def test_the_cached_build_is_real(cross_runtime, edgetune_home, llama_tools):
    found = runtime_build.find_runtime(edgetune_home, "aarch64", "cortex-a76", llama_tools.version)
    assert found.root == cross_runtime.root and set(found.binaries) == set(runtime_build.BINARIES)
    for name, path in found.binaries.items():  # what a Pi 5 can run: aarch64, static (no loader, no libs)
        assert elf_machine_and_interp(path) == (EM_AARCH64, False), name
    assert "-DCMAKE_C_FLAGS=-mcpu=cortex-a76" in found.build_flags and "-DGGML_NATIVE=OFF" in found.build_flags
    entry = found.manifest_entry()
    assert entry["mcpu"] == "cortex-a76" and entry["static"] is True and entry["llama-cpp-python"] == llama_tools.version
    assert entry["llama.cpp"].startswith(llama_tools.revision[:7])  # the same llama.cpp as the host's tools
    # the host's own x86 llama-server, for contrast: the check above can tell the two apart
    assert elf_machine_and_interp(llama_tools.tool("llama-server")) == (62, True)


def test_finds_the_build_for_arch_and_mcpu(tmp_path):
    a76 = fake_cross_build(tmp_path, "cortex-a76", key="a76")
    fake_cross_build(tmp_path, "cortex-a72", key="a72")
    found = runtime_build.find_runtime(tmp_path, "aarch64", "cortex-a76", VERSION)
    assert found.root == a76
    assert found.binaries == {n: a76 / "bin" / n for n in runtime_build.BINARIES}
    assert "-DCMAKE_C_FLAGS=-mcpu=cortex-a76" in found.build_flags
    entry = found.manifest_entry()
    assert entry["mcpu"] == "cortex-a76" and entry["static"] is True and entry["llama.cpp"] == "0c1e570"


def test_newest_stamp_wins(tmp_path):
    old = fake_cross_build(tmp_path, key="old")
    new = fake_cross_build(tmp_path, key="new")
    os.utime(old / ".stamp", (1, 1))
    assert runtime_build.find_runtime(tmp_path, "aarch64", "cortex-a76", VERSION).root == new


@pytest.mark.parametrize("kwargs", [
    {"mcpu": "cortex-a72"},
    {"version": "0.3.35"},
    {"recipe": runtime_build.RECIPE - 1},
    {"stamp": False},  # a build still in progress (or killed) is never used
], ids=["other-mcpu", "other-version", "old-recipe", "no-stamp"])
def test_missing_build_names_the_script(tmp_path, kwargs):
    fake_cross_build(tmp_path, **kwargs)
    with pytest.raises(ToolError) as exc:
        runtime_build.find_runtime(tmp_path, "aarch64", "cortex-a76", VERSION)
    assert exc.value.message == \
        f"no aarch64 llama.cpp runtime is built for -mcpu=cortex-a76 (llama-cpp-python {VERSION})"
    assert exc.value.hint.startswith("run `scripts/cross-build-llama.sh cortex-a76`")
    assert exc.value.exit_code == 9


def test_deleted_binary_is_reported(tmp_path):
    root = fake_cross_build(tmp_path)
    (root / "bin" / "llama-cli").unlink()
    with pytest.raises(ToolError, match="lacks llama-cli"):
        runtime_build.find_runtime(tmp_path, "aarch64", "cortex-a76", VERSION)


def test_x86_targets_have_no_cross_build(tmp_path):
    with pytest.raises(ToolError, match="only for aarch64, not x86_64"):
        runtime_build.find_runtime(tmp_path, "x86_64", "x86-64-v3", VERSION)


def test_runner_source_is_package_data():
    path = runtime_build.runner_source()
    assert path.name == "edgetune_runner.py" and path.read_text().startswith("#!/usr/bin/env python3")
