"""Quantization through llama-quantize vs the in-process ctypes call it replaced (issue 21): same bytes?

Usage: PYTHONPATH=toolchain .venv/bin/python benchmarks/quantize_identity.py F16.gguf [F16.gguf ...]
       [--quants Q8_0 Q4_0] [--threads 1]
For each F16 GGUF and quant type: the old path (llama-cpp-python's `llama_model_quantize`, called here the way
export/quantize.py called it before) and the new one (`edgetune.export.quantize.quantize_gguf`, which runs the
native `llama-quantize` built from the same llama.cpp revision) write a file each; their SHA-256s are compared.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from edgetune.artifacts import sha256_file
from edgetune.constants import Quant
from edgetune.export.quantize import quantize_gguf
from edgetune.home import edgetune_home
from edgetune.llamacpp import load_tools

_QUIET = None  # kept alive: llama.cpp holds a raw pointer to the log callback


def ctypes_quantize(src: Path, dst: Path, quant: Quant, nthread: int) -> None:
    global _QUIET
    import llama_cpp

    if _QUIET is None:
        @llama_cpp.llama_log_callback
        def _quiet(level, text, user_data):
            pass

        _QUIET = _quiet
        llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = quant.file_type
    params.nthread = nthread
    params.allow_requantize = False
    rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed on {src} ({rc})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("f16", type=Path, nargs="+")
    ap.add_argument("--quants", nargs="+", default=["Q8_0", "Q4_0"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tools = load_tools(edgetune_home())
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetune-quant-identity-") as tmp:
        work = Path(tmp)
        for n, f16 in enumerate(args.f16):
            for q in map(Quant, args.quants):
                old, new = work / f"{n}-old-{q.value}.gguf", work / f"{n}-new-{q.value}.gguf"
                t0 = time.perf_counter()
                ctypes_quantize(f16, old, q, args.threads)
                t1 = time.perf_counter()
                quantize_gguf(f16, new, q, tools, nthread=args.threads)
                t2 = time.perf_counter()
                old_sha, new_sha = sha256_file(old), sha256_file(new)
                rows.append({"f16": str(f16), "f16_sha256": sha256_file(f16), "quant": q.value,
                             "bytes": new.stat().st_size, "ctypes_sha256": old_sha, "llama_quantize_sha256": new_sha,
                             "identical": old_sha == new_sha, "ctypes_s": round(t1 - t0, 2),
                             "llama_quantize_s": round(t2 - t1, 2)})
                old.unlink()
                new.unlink()
    print(f"{'f16 (sha256)':>14} {'quant':>5} {'bytes':>10} {'ctypes sha256':>14} {'llama-quantize':>14} "
          f"{'same':>5} {'ctypes s':>8} {'tool s':>7}", file=sys.stderr)
    for r in rows:
        print(f"{r['f16_sha256'][:14]:>14} {r['quant']:>5} {r['bytes']:>10} {r['ctypes_sha256'][:14]:>14} "
              f"{r['llama_quantize_sha256'][:14]:>14} {r['identical']!s:>5} {r['ctypes_s']:>8} "
              f"{r['llama_quantize_s']:>7}", file=sys.stderr)
    print(json.dumps({"benchmark": "quantize_identity", "llama.cpp": tools.revision, "threads": args.threads,
                      "rows": rows}))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
