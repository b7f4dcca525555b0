"""The set-up probe: does this machine's llama.cpp compute with every quant type edgetune writes?

A llama.cpp build can load a file and still die the first time it multiplies with it (the AMX path on some x86
hosts: NOTES.md). So set-up writes one small GGUF per `Quant` (requantized from the embedded SmolLM2, whose
feed-forward rows are multiples of 256, so K-quant kernels run too) and computes with each through both ways
edgetune runs llama.cpp on the host: llama-cpp-python (in a child process, `LlamaCppRuntime`) and a native tool
(`llama-bench`, the same kernels as llama-quantize/imatrix/server). Each (quant, path) is ok, crash (a signal)
or error (a refusal). The record, `probe.json` beside the tools, is what `edgetune doctor` shows.

Reads the source GGUF and the native tools; writes the probe files under `work` (removed by the caller) and
`probe.json`. Raises ToolError when the tools are not set up.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edgetune.artifacts import atomic_write_text
from edgetune.constants import Quant
from edgetune.cpu import cpu_flags, has_amx
from edgetune.errors import EdgetuneError, NativeCrash
from edgetune.llamacpp import LlamaCppTools
from edgetune.proc import signal_name

log = logging.getLogger(__name__)

PROBE_FILE = "probe.json"
NATIVE_TOOL = "llama-bench"
# A few real SmolLM2 token ids (a short English sentence): the content does not matter, the kernels do.
PROMPT_IDS = [1, 504, 3137, 282, 4649, 314, 253, 1345, 30]


@dataclass(frozen=True)
class ProbeRow:
    quant: str
    path: str  # "llama-cpp-python" or the native tool's name
    status: str  # "ok", "crash" or "error"
    detail: str


ENGINE = "edgetune.runtimes.llamacpp:LlamaCppEngine"


def probe_runtime(gguf: Path, threads: int = 1, engine: str = ENGINE) -> ProbeRow:
    """Generate and score with `gguf` through llama-cpp-python (`engine`) in a child process."""
    from edgetune.runtimes.child import ChildRuntime

    quant = gguf.stem.rsplit("-", 1)[-1]
    try:
        with ChildRuntime(engine, gguf, n_ctx=128, n_threads=threads, subject=str(gguf)) as runtime:
            new = runtime.generate(PROMPT_IDS, 2, stop_ids=[])
            (lp, _), = runtime.loglikelihood([(PROMPT_IDS[:4], PROMPT_IDS[4:])])
    except NativeCrash as exc:
        return ProbeRow(quant, "llama-cpp-python", "crash", exc.signal_name)
    except EdgetuneError as exc:
        return ProbeRow(quant, "llama-cpp-python", "error", str(exc))
    return ProbeRow(quant, "llama-cpp-python", "ok", f"generated {len(new)} tokens, log-likelihood {lp:.3f}")


def probe_native(tool: Path, gguf: Path, threads: int = 1, timeout_s: float = 300) -> ProbeRow:
    """Run `llama-bench` on `gguf` (a prompt of 8 and 2 generated tokens, one repetition, default repacking)."""
    quant = gguf.stem.rsplit("-", 1)[-1]
    argv = [str(tool), "-m", str(gguf), "-p", "8", "-n", "2", "-r", "1", "-t", str(threads), "-o", "json"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return ProbeRow(quant, tool.name, "error", f"timed out after {timeout_s:.0f} s")
    if done.returncode < 0:
        return ProbeRow(quant, tool.name, "crash", signal_name(done.returncode))
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-2:])
        return ProbeRow(quant, tool.name, "error", f"exit {done.returncode}: {tail}")
    return ProbeRow(quant, tool.name, "ok", "prompt and generation ran")


def system_info() -> str:
    """llama.cpp's own list of compiled-in CPU features ("AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 ..."), read
    in a child process so that even loading a broken library cannot take this one down."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return f"unavailable ({signal_name(done.returncode)}): {done.stderr.strip()[-200:]}"
    return done.stdout.strip()


def enabled_features(info: str) -> set[str]:
    """The features llama.cpp's system-info string reports as on: {"AVX2", "AVX512", "REPACK", ...}."""
    out = set()
    for part in info.replace("\n", "|").split("|"):
        name, _, value = part.partition("=")
        name = name.split(":")[-1].strip()
        if name and value.strip() == "1":
            out.add(name)
    return out


def run_probe(tools: LlamaCppTools, source_gguf: Path, work: Path, *, quants: Sequence[Quant] = tuple(Quant),
              threads: int = 1, on_row: Callable[[ProbeRow], None] | None = None) -> dict:
    """Quantize `source_gguf` to each of `quants` in `work`, run each through both paths, and record the
    result in `tools.root / probe.json`. Returns the record ("crashed": whether any path crashed)."""
    from edgetune.export.quantize import quantize_gguf

    native = tools.tool(NATIVE_TOOL)
    started = time.time()
    rows: list[ProbeRow] = []
    work.mkdir(parents=True, exist_ok=True)
    # one requantization (logged as a warning) to F16, then every type from F16, as the export does
    f16 = quantize_gguf(source_gguf, work / "source-F16.gguf", Quant.F16, tools, nthread=threads,
                        quality_matters=False)
    for quant in quants:
        gguf = quantize_gguf(f16, work / f"probe-{quant.value}.gguf", quant, tools, nthread=threads)
        for row in (probe_runtime(gguf, threads), probe_native(native, gguf, threads)):
            log.info("probe %s via %s: %s (%s)", row.quant, row.path, row.status, row.detail)
            rows.append(row)
            if on_row is not None:
                on_row(row)
        gguf.unlink(missing_ok=True)
    f16.unlink(missing_ok=True)
    flags = cpu_flags()
    info = system_info()
    record = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.time() - started, 1),
        "machine": platform.machine(),
        "cpu_amx": has_amx(flags),
        "system_info": info,
        "features": sorted(enabled_features(info)),
        "llama_cpp_python": tools.version,
        "llama_cpp": tools.revision,
        "rows": [asdict(r) for r in rows],
        "crashed": any(r.status == "crash" for r in rows),
    }
    atomic_write_text(tools.root / PROBE_FILE, json.dumps(record, indent=2) + "\n")
    return record


def load_probe(tools: LlamaCppTools) -> dict | None:
    """The last probe record for these tools, or None when set-up has not probed them."""
    path = tools.root / PROBE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
