"""The host CPU's features and the llama.cpp (ggml) build flags edgetune compiles with for it.

Standard library only: `scripts/setup.sh` runs this file directly (`python toolchain/edgetune/cpu.py cmake-args`)
before edgetune is installed, so the llama-cpp-python wheel and the native tools are built with one set of flags.

Why not ggml's own `-march=native`: on x86-64 CPUs with AMX (Sapphire/Granite Rapids, often virtualised) a
native build compiles ggml's AMX "extra buffer" kernels, which crash (SIGSEGV) the first time they compute
with Q8_0/Q4_0/K-quant weights (llama.cpp issue 20824, ollama issue 17249). So edgetune builds with
`GGML_NATIVE=OFF` and turns on, one by one, the instruction sets this CPU reports, except AMX, which stays off.
The rest of what native gives (AVX2, AVX-512, VNNI, BF16, and the x86 repack kernels for Q4_0/IQ4_NL/Q4_K)
is kept. `portable` gives the x86-64-v3 baseline (AVX2, FMA, F16C, BMI2) that runs on any recent x86-64 CPU:
set-up falls back to it when the probe (`edgetune.llama_probe`) still sees a crash.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# ggml option -> the /proc/cpuinfo flags that must all be present to turn it on (x86-64).
X86_OPTIONS: dict[str, tuple[str, ...]] = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
# Never built, whatever the CPU says: the crashing path.
X86_DISABLED = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
# The x86-64-v3 baseline for a wheel that must run on other machines.
X86_PORTABLE = ("GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2")
AMX_REASON = ("AMX off: ggml's AMX kernels crash (SIGSEGV) on quantized weights on virtualised AMX hosts "
              "(llama.cpp issue 20824)")


@dataclass(frozen=True)
class BuildFlags:
    """The ggml flags for one build: `cmake_args` go to CMake; `choice` and `reason` are recorded."""

    machine: str
    choice: str  # "host-isa" (this CPU's instruction sets, AMX off), "portable" or "native" (non-x86)
    cmake_args: tuple[str, ...]
    reason: str
    enabled: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        """Short hash of the flags: names the cache folder of a build made with them."""
        return hashlib.sha256(" ".join(self.cmake_args).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo ("flags" on x86, "Features" on ARM); empty if none."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def has_amx(flags: set[str]) -> bool:
    return any(f.startswith("amx") for f in flags)


def build_flags(flags: set[str] | None = None, machine: str | None = None, portable: bool = False) -> BuildFlags:
    """The ggml flags for a CPU with `flags` (default: this host's). On x86-64: GGML_NATIVE=OFF with each
    instruction set the CPU has (or the portable baseline) and AMX always off. Elsewhere: ggml's native build
    (no crash of this kind is known there)."""
    machine = machine or platform.machine()
    flags = cpu_flags() if flags is None else flags
    if machine not in ("x86_64", "AMD64"):
        return BuildFlags(machine, "native", ("-DGGML_NATIVE=ON",), "not x86-64: ggml's native build")
    if portable:
        on = list(X86_PORTABLE)
        reason = f"portable x86-64-v3 baseline (a crash was seen with this CPU's own instruction sets); {AMX_REASON}"
        choice = "portable"
    else:
        on = [opt for opt, need in X86_OPTIONS.items() if all(f in flags for f in need)]
        reason = f"this CPU's instruction sets; {AMX_REASON}"
        choice = "host-isa"
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-D{opt}={'ON' if opt in on else 'OFF'}" for opt in X86_OPTIONS]
    args += [f"-D{opt}=OFF" for opt in X86_DISABLED]
    return BuildFlags(machine, choice, tuple(args), reason, tuple(on))


def main(argv: list[str]) -> int:
    """`cpu.py cmake-args [--portable]` prints the CMake flags on one line; `cpu.py json [--portable]` the record."""
    if not argv or argv[0] not in ("cmake-args", "json", "key"):
        print("usage: cpu.py cmake-args|json|key [--portable]", file=sys.stderr)
        return 2
    flags = build_flags(portable="--portable" in argv[1:])
    if argv[0] == "cmake-args":
        print(" ".join(flags.cmake_args))
    elif argv[0] == "key":
        print(flags.key)
    else:
        print(json.dumps(flags.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
