"""`edgetune doctor`: what this machine has, how llama.cpp was built for it, and what to fix.

Each check gives one `Check` (OK / WARN / FAIL, a detail line and the fix). Reads the CPU's features, the
llama-cpp-python wheel's build record (found through pip's direct_url.json, written by scripts/setup.sh), the
native tools' build.json, the set-up probe's probe.json, the cross-built device runtimes, torch/CUDA and
bitsandbytes, which training fast paths are active (fastpaths.py), free disk space and, when given, a judge
endpoint. Writes nothing; loads no model.
"""

from __future__ import annotations

import json
import platform
import shutil
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from edgetune.cpu import build_flags, cpu_flags, has_amx
from edgetune.errors import EdgetuneError

OK, WARN, FAIL = "OK", "WARN", "FAIL"
OFF = "OFF"  # a fast path that cannot apply on this machine (no GPU): nothing to fix here
LOW_DISK_BYTES = 5 * 1024**3  # a 1B model's fp32 merge, F16 GGUF and quants
NO_DISK_BYTES = 1024**3


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def cpu_check() -> Check:
    flags = cpu_flags()
    model = _cpu_model()
    isa = [name for name, present in (("AVX2", "avx2" in flags), ("AVX-512", "avx512f" in flags),
                                      ("AMX", has_amx(flags)), ("NEON", "asimd" in flags)) if present]
    detail = f"{platform.machine()} {model}: {', '.join(isa) or 'no SIMD flags read'}"
    if has_amx(flags):
        detail += " (ggml's AMX kernels are built, and turned off if the set-up probe sees them crash)"
    return Check("cpu", OK, detail)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.split(":")[0].strip() in ("model name", "Model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def wheel_build_record() -> dict | None:
    """The build.json scripts/setup.sh wrote beside the llama-cpp-python wheel that is installed, or None."""
    try:
        direct = metadata.distribution("llama-cpp-python").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not direct:
        return None
    url = json.loads(direct).get("url", "")
    if not url.startswith("file://"):
        return None
    record = Path(url.removeprefix("file://")).parent / "build.json"
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def llama_cpp_python_check(system_info: str, probe: dict | None) -> Check:
    from edgetune.llama_probe import enabled_features

    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return Check("llama-cpp-python", FAIL, "not installed", "run scripts/setup.sh")
    on = enabled_features(system_info)
    record = wheel_build_record()
    how = f"{record['choice']} build ({record['reason']})" if record else "build flags not recorded"
    detail = f"{version}, {how}; compiled in: {' '.join(sorted(on)) or system_info}"
    if any(f.startswith("AMX") for f in on) and (probe is None or probe.get("crashed")):
        return Check("llama-cpp-python", WARN if probe is None else FAIL,
                     detail + "; ggml's AMX kernels crash on quantized weights on some hosts and "
                     + ("the probe has not checked this one" if probe is None else "the probe saw a crash"),
                     "run scripts/setup.sh: it probes and rebuilds without AMX when they crash")
    if record is None:
        return Check("llama-cpp-python", WARN, detail, "reinstall with scripts/setup.sh to record the build")
    return Check("llama-cpp-python", OK, detail)


def flags_check(record: dict | None) -> Check:
    """Was the installed wheel built for this CPU? A cache moved from another machine may hold one that uses
    instructions this CPU lacks (SIGILL) or misses ones it has (slower)."""
    here = build_flags()
    if record is None:
        return Check("build flags", WARN, f"unknown; set-up would build {here.choice} here",
                     "re-run scripts/setup.sh")
    if record["choice"] == "portable" or list(record["cmake_args"]) == list(here.cmake_args):
        return Check("build flags", OK, f"the wheel's flags ({record['choice']}) match this CPU")
    return Check("build flags", WARN, f"the wheel was built for another CPU ({record['key']}); this one "
                                      f"would get {here.key}", "re-run scripts/setup.sh to build for this CPU")


def native_tools_check(home: Path) -> list[Check]:
    from edgetune.llamacpp import load_tools
    from edgetune.llama_probe import load_probe

    try:
        tools = load_tools(home)
    except EdgetuneError as exc:
        return [Check("llama.cpp tools", FAIL, exc.message, exc.hint or "")]
    checks = [Check("converter", OK, f"llama.cpp {tools.revision[:12]} (llama-cpp-python {tools.version}) in "
                                     f"{tools.root}")]
    build = tools.bin_dir / "build.json"
    if not build.is_file():
        checks.append(Check("native tools", FAIL, f"not built in {tools.bin_dir}", "run scripts/build-llama-tools.sh"))
    else:
        args = json.loads(build.read_text()).get("cmake_args", "")
        # ggml's -march=native: set-up's flags were not used, so the probe-and-fall-back never applied to these
        native = "GGML_NATIVE=OFF" not in args
        status = WARN if native else OK
        checks.append(Check("native tools", status, f"{tools.bin_dir}: {_isa_summary(args)}",
                            "" if status == OK else "rebuild with scripts/setup.sh"))
    probe = load_probe(tools)
    if probe is None:
        checks.append(Check("probe", WARN, "every quant type has not been run through llama.cpp on this machine",
                            "run `edgetune doctor --probe`"))
    else:
        checks.append(probe_check(probe))
    return checks


def probe_check(probe: dict) -> Check:
    rows = probe.get("rows", [])
    bad = [r for r in rows if r["status"] != "ok"]
    quants = sorted({r["quant"] for r in rows})
    when = probe.get("created_at", "?")
    if not bad:
        return Check("probe", OK, f"{len(quants)} quant types computed through llama-cpp-python and "
                                  f"{', '.join(sorted({r['path'] for r in rows} - {'llama-cpp-python'}))} ({when})")
    worst = FAIL if any(r["status"] == "crash" for r in bad) else WARN
    said = "; ".join(f"{r['quant']} via {r['path']}: {r['status']} ({r['detail']})" for r in bad[:4])
    return Check("probe", worst, said, "re-run scripts/setup.sh: it rebuilds llama.cpp for the portable "
                                       "baseline when a quant type crashes")


def _isa_summary(cmake_args: str) -> str:
    on = [a.removeprefix("-DGGML_").removesuffix("=ON") for a in cmake_args.split() if a.endswith("=ON")
          and a.startswith("-DGGML_") and a != "-DGGML_NATIVE=ON"]
    native = "GGML_NATIVE=OFF" not in cmake_args
    return ("ggml -march=native" if native else "GGML_NATIVE=OFF") + (f", on: {' '.join(on)}" if on else "")


def cross_check(home: Path) -> list[Check]:
    builds = sorted((home / "cross").glob("*/build.json"))
    found = []
    for path in builds:
        try:
            info = json.loads(path.read_text())
        except ValueError:
            continue
        found.append(f"{info.get('mcpu', '?')} ({path.parent.name})")
    compiler = shutil.which("aarch64-linux-gnu-g++")
    checks = [Check("cross compiler", OK if compiler else WARN, compiler or "aarch64-linux-gnu-g++ not found",
                    "" if compiler else "apt-get install g++-aarch64-linux-gnu (scripts/cross-build-llama.sh "
                                        "does it as root)")]
    checks.append(Check("device runtimes", OK if found else WARN, ", ".join(found) or "none built",
                        "" if found else "run scripts/cross-build-llama.sh MCPU (setup.sh builds cortex-a76)"))
    return checks


def gpu_check() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("torch", FAIL, "not installed", "run scripts/setup.sh")]
    if not torch.cuda.is_available():
        return [Check("gpu", WARN, f"torch {torch.__version__}: no CUDA device; training runs on the CPU "
                                   "(fp32 LoRA)", "on a GPU host install a CUDA torch (README, GPU host)")]
    name = torch.cuda.get_device_name(0)
    checks = [Check("gpu", OK, f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
                               f"{torch.cuda.device_count()} x {name}")]
    try:
        version = metadata.version("bitsandbytes")
        checks.append(Check("bitsandbytes", OK, f"{version}: QLoRA (NF4) available"))
    except metadata.PackageNotFoundError:
        checks.append(Check("bitsandbytes", WARN, "not installed: QLoRA falls back to LoRA",
                            "pip install 'edgetune[cuda]'"))
    return checks


def fast_path_checks() -> list[Check]:
    """One line per training fast path (fastpaths.py): OK when active; on a CUDA host an inactive one is a WARN
    with its fix; without CUDA they are OFF, with the reason."""
    from edgetune.fastpaths import fast_paths

    paths = fast_paths()
    cuda = paths[0].active  # "CUDA torch" comes first
    return [Check(f"fast path: {p.name}", OK if p.active else WARN if cuda else OFF,
                  ("active: " if p.active else "inactive: ") + p.detail, p.fix) for p in paths]


def disk_check(name: str, folder: Path) -> Check:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    status = FAIL if free < NO_DISK_BYTES else WARN if free < LOW_DISK_BYTES else OK
    return Check(f"disk ({name})", status, f"{free / 1024**3:.1f} GiB free for {folder}",
                 "" if status == OK else "free space or point it at a larger disk")


def judge_check(base_url: str | None, timeout_s: float = 5) -> Check:
    if not base_url:
        return Check("judge", WARN, "no endpoint given: builds start a local llama.cpp judge on the embedded "
                                    "135M model, a smoke test only", "set judge.base_url (or --judge-url here)")
    url = base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (the user's own endpoint)
            return Check("judge", OK, f"{url} answered {resp.status}")
    except urllib.error.HTTPError as exc:  # reachable; 401 means a key is needed, which builds send
        return Check("judge", OK if exc.code in (401, 403) else WARN, f"{url} answered {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        return Check("judge", FAIL, f"{url} unreachable: {getattr(exc, 'reason', exc)}",
                     "check judge.base_url and that the server is running")


def run_checks(home: Path, out_dir: Path, judge_url: str | None = None) -> list[Check]:
    from edgetune.llama_probe import load_probe, system_info
    from edgetune.llamacpp import load_tools

    try:
        probe = load_probe(load_tools(home))
    except EdgetuneError:
        probe = None
    checks = [cpu_check(), llama_cpp_python_check(system_info(), probe)]
    checks += native_tools_check(home)
    checks.append(flags_check(wheel_build_record()))
    checks += cross_check(home)
    checks += gpu_check()
    checks += fast_path_checks()
    checks += [disk_check("cache", home), disk_check("output", out_dir), judge_check(judge_url)]
    return checks
