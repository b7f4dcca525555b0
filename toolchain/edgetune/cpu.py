"""The host CPU's features and the llama.cpp (ggml) build flags edgetune compiles with for it.

Standard library only: `scripts/setup.sh` runs this file directly (`python toolchain/edgetune/cpu.py cmake-args`)
before edgetune is installed, so the llama-cpp-python wheel and the native tools are built with one set of flags.

Three levels, tried in order by set-up until the probe (`edgetune.llama_probe`) sees no crash:
- `host`: GGML_NATIVE=OFF with each instruction set this CPU reports turned on, AMX included when present.
  Where ggml's AMX kernels work they pay off in prompt speed (measured in docs/benchmarks.md, "llama.cpp
  build levels"). Explicit flags instead of `-march=native` so the levels below differ from it only in
  what they turn off.
- `host-no-amx`: the same without AMX. On some x86-64 hosts with AMX (virtualised Sapphire/Granite Rapids) the
  AMX kernels crash (SIGSEGV) the first time they compute with quantized weights (llama.cpp issue 20824).
- `portable`: the x86-64-v3 baseline (AVX2, FMA, F16C, BMI2), for a wheel that moves to other machines.
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
# ggml's AMX kernels (the path that crashes on some hosts): built at the `host` level only.
X86_AMX: dict[str, tuple[str, ...]] = {
    "GGML_AMX_TILE": ("amx_tile",),
    "GGML_AMX_INT8": ("amx_int8",),
    "GGML_AMX_BF16": ("amx_bf16",),
}
LEVELS = ("host", "host-no-amx", "portable")
# The x86-64-v3 baseline for a wheel that must run on other machines.
X86_PORTABLE = ("GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2")
AMX_OFF = ("AMX off: ggml's AMX kernels crash (SIGSEGV) on quantized weights on some virtualised AMX hosts "
           "(llama.cpp issue 20824)")
REASONS = {
    "host": "this CPU's instruction sets",
    "host-no-amx": f"this CPU's instruction sets; {AMX_OFF}, and the probe saw a crash with them on",
    "portable": "portable x86-64-v3 baseline (the probe saw a crash with this CPU's own instruction sets)",
}


@dataclass(frozen=True)
class BuildFlags:
    """The ggml flags for one build: `cmake_args` go to CMake; `choice` and `reason` are recorded."""

    machine: str
    choice: str  # a level of LEVELS, or "native" (not x86-64: ggml's own -march/-mcpu)
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


def next_level(level: str, flags: set[str] | None = None) -> str | None:
    """The level set-up tries after `level` crashed (None: nothing left). `host-no-amx` is skipped on a CPU
    without AMX, where it would build the same thing again."""
    flags = cpu_flags() if flags is None else flags
    rest = LEVELS[LEVELS.index(level) + 1:]
    if rest and rest[0] == "host-no-amx" and not has_amx(flags):
        rest = rest[1:]
    return rest[0] if rest else None


def build_flags(flags: set[str] | None = None, machine: str | None = None, level: str = "host") -> BuildFlags:
    """The ggml flags for a CPU with `flags` (default: this host's) at `level` (see the module docstring). Not
    x86-64: ggml's native build (no crash of this kind is known there)."""
    machine = machine or platform.machine()
    flags = cpu_flags() if flags is None else flags
    if level not in LEVELS:
        raise ValueError(f"unknown build level {level!r}; use one of {', '.join(LEVELS)}")
    if machine not in ("x86_64", "AMD64"):
        return BuildFlags(machine, "native", ("-DGGML_NATIVE=ON",), "not x86-64: ggml's native build")
    if level == "portable":
        on = list(X86_PORTABLE)
    else:
        on = [opt for opt, need in X86_OPTIONS.items() if all(f in flags for f in need)]
        if level == "host":
            on += [opt for opt, need in X86_AMX.items() if all(f in flags for f in need)]
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-D{opt}={'ON' if opt in on else 'OFF'}" for opt in [*X86_OPTIONS, *X86_AMX]]
    reason = REASONS[level]
    if level == "host" and not has_amx(flags):
        reason += " (no AMX on this CPU)"
    return BuildFlags(machine, level, tuple(args), reason, tuple(on))


def main(argv: list[str]) -> int:
    """`cpu.py cmake-args|json|key [LEVEL]` prints the CMake flags on one line, the record, or its key;
    `cpu.py next LEVEL` the level to try after LEVEL crashed (nothing, exit 1, when none is left)."""
    if len(argv) not in (1, 2) or argv[0] not in ("cmake-args", "json", "key", "next"):
        print("usage: cpu.py cmake-args|json|key [LEVEL] | next LEVEL   (levels: " + ", ".join(LEVELS) + ")",
              file=sys.stderr)
        return 2
    level = argv[1] if len(argv) == 2 else "host"
    if level not in LEVELS:
        print(f"error: unknown level {level!r} (levels: {', '.join(LEVELS)})", file=sys.stderr)
        return 2
    if argv[0] == "next":
        after = next_level(level)
        if after is None:
            return 1
        print(after)
        return 0
    flags = build_flags(level=level)
    if argv[0] == "cmake-args":
        print(" ".join(flags.cmake_args))
    elif argv[0] == "key":
        print(flags.key)
    else:
        print(json.dumps(flags.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
