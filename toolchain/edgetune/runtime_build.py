"""The device runtime a bundle ships: llama.cpp cross-built for the target's CPU, and the stdlib-only runner.

Reads `$EDGETUNE_HOME/cross/<llama-cpp-python version>-<hash of flags>/` folders written by
scripts/cross-build-llama.sh (`bin/llama-server`, `bin/llama-cli`, `bin/llama-bench`, `build.json`, `.stamp`)
and the runner's source, package data at `edgetune/device_runner/edgetune_runner.py`. Writes nothing.
Raises ToolError (exit 9) naming the script to run when the binaries for a target are not built.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.errors import ToolError
from edgetune.llamacpp import installed_version

log = logging.getLogger(__name__)

CROSS_SCRIPT = "scripts/cross-build-llama.sh"
# Must equal RECIPE in scripts/cross-build-llama.sh: a build made by an older recipe is not used.
RECIPE = 1
BUILD_RECORD = "build.json"
STAMP = ".stamp"
SERVER = "llama-server"
BINARIES = ("llama-server", "llama-cli", "llama-bench")
RUNNER_FILE = "edgetune_runner.py"
CROSS_ARCHES = ("aarch64",)


@dataclass(frozen=True)
class RuntimeBinaries:
    """One finished cross-build: its folder and the build.json the script wrote beside the binaries."""

    root: Path
    info: dict[str, Any]

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def binaries(self) -> dict[str, Path]:
        return {name: self.bin_dir / name for name in self.info["binaries"]}

    @property
    def build_flags(self) -> list[str]:
        return list(self.info["cmake_flags"])

    def manifest_entry(self) -> dict[str, Any]:
        """What a bundle manifest records about these binaries (paths are filled in by the bundle)."""
        keep = ("arch", "mcpu", "arm_features", "compiler", "static", "llama-cpp-python", "llama.cpp")
        return {**{k: self.info.get(k) for k in keep}, "build_flags": self.build_flags}


def cross_builds(home: Path) -> list[RuntimeBinaries]:
    """Every finished cross-build under `home`/cross (a folder without its stamp is a build in progress)."""
    found = []
    for record in sorted((Path(home) / "cross").glob(f"*/{BUILD_RECORD}")):
        root = record.parent
        if not (root / STAMP).is_file():
            continue
        try:
            info = json.loads(record.read_text())
        except ValueError:
            log.warning("ignoring %s: not readable JSON", record)
            continue
        if isinstance(info, dict) and {"binaries", "cmake_flags", "mcpu", "arch"} <= info.keys():
            found.append(RuntimeBinaries(root, info))
    return found


def find_runtime(home: Path, arch: str, mcpu: str, version: str | None = None) -> RuntimeBinaries:
    """The cross-built llama.cpp for `arch` and `-mcpu` at the installed llama-cpp-python's version.

    Raises ToolError naming scripts/cross-build-llama.sh when none is built (or a binary has gone missing)."""
    if arch not in CROSS_ARCHES:
        raise ToolError(f"edgetune cross-builds the device runtime only for {', '.join(CROSS_ARCHES)}, not {arch}",
                        "bundle this target without runtime binaries (runtime=False)")
    version = version or installed_version()
    matches = [b for b in cross_builds(home) if b.info.get("recipe") == RECIPE and b.info["arch"] == arch
               and b.info["mcpu"] == mcpu and b.info.get("llama-cpp-python") == version]
    hint = f"run `{CROSS_SCRIPT} {mcpu}` (5-12 min on 2 cores; cached in {Path(home) / 'cross'})"
    if not matches:
        raise ToolError(f"no {arch} llama.cpp runtime is built for -mcpu={mcpu} (llama-cpp-python {version})", hint)
    newest = max(matches, key=lambda b: (b.root / STAMP).stat().st_mtime)
    missing = [name for name, path in newest.binaries.items() if not path.is_file()]
    if missing or SERVER not in newest.binaries:
        raise ToolError(f"the {arch} runtime in {newest.root} lacks {', '.join(missing) or SERVER}", hint)
    return newest


def runner_source() -> Path:
    """The on-device runner script (stdlib only), shipped in every bundle as runner/edgetune_runner.py."""
    path = Path(__file__).resolve().parent / "device_runner" / RUNNER_FILE
    if not path.is_file():
        raise ToolError(f"the device runner {path} is missing from this edgetune install", "reinstall edgetune")
    return path
