"""Export: edgetune's convert + quantize vs llama.cpp's own CLI tools on the same files, and the KLD / top-1
table per quant with and without the importance matrix, side by side in one run.

Needs a finished `edgetune build` (its merged model, held-out prompts and training text are read through the
run's run.json) and llama.cpp's native tools (scripts/build-llama-tools.sh). Prints a table and a JSON line.

  python benchmarks/export.py [--run edgetune-out/runs/rpi5-8gb] [--prompts 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANTS = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "IQ4_NL", "Q3_K_M", "Q2_K"]


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("edgetune-out/runs/rpi5-8gb"))
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-only", action="store_true", help="skip the KLD table")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from edgetune import data
    from edgetune.constants import Quant
    from edgetune.evals.fidelity import compare, references
    from edgetune.evals.stage import stop_ids, task_items
    from edgetune.export.convert import convert_to_gguf
    from edgetune.export.imatrix import calibration_text, compute_imatrix, quantize_with_imatrix
    from edgetune.export.quantize import quantize_gguf
    from edgetune.home import edgetune_home
    from edgetune.llamacpp import load_tools
    from edgetune.runtimes import HFRuntime, LlamaCppRuntime

    stages = json.loads((args.run / "run.json").read_text())["stages"]
    merged = Path(stages["merge"]) / "model"
    tools = load_tools(edgetune_home())
    work = Path(tempfile.mkdtemp(prefix="edgetune-bench-export-"))
    tok = AutoTokenizer.from_pretrained(merged)

    # 1. speed: edgetune's wrappers vs llama.cpp's own CLI on the same inputs
    f16 = work / "f16.gguf"
    ours_convert = timed(lambda: convert_to_gguf(merged, f16, tools, outtype="f16"), args.repeats)
    theirs_convert = timed(lambda: subprocess.run(
        [sys.executable, str(tools.converter), str(merged), "--outfile", str(work / "cli-f16.gguf"), "--outtype", "f16"],
        env=tools.env(), check=True, capture_output=True), args.repeats)
    speed = [("convert F16", ours_convert, theirs_convert)]
    for q in ("Q8_0", "Q4_K_M"):
        ours = timed(lambda: quantize_gguf(f16, work / f"ours-{q}.gguf", Quant(q), tools, nthread=args.threads),
                     args.repeats)
        theirs = timed(lambda: subprocess.run([str(tools.tool("llama-quantize")), str(f16), str(work / f"cli-{q}.gguf"),
                                               q, str(args.threads)], check=True, capture_output=True), args.repeats)
        speed.append((f"quantize {q}", ours, theirs))

    rows: list[dict] = []
    if args.speed_only:
        return _print(speed, rows, tools, 0)
    # 2. fidelity per quant, with and without an imatrix from the fine-tune's own training text
    calib = work / "calibration.txt"
    calib.write_text(calibration_text(data.read_examples(Path(stages["data"]) / "train.jsonl"), tok))
    imatrix = compute_imatrix(f16, calib, work / "imatrix.gguf", tools, threads=args.threads)
    items = task_items(data.read_examples(Path(stages["data"]) / "heldout.jsonl"), tok)[: args.prompts]
    stops = stop_ids(tok)
    with HFRuntime(merged) as ref:
        refs = references(ref, [(i.id, i.prompt_ids) for i in items], n_tokens=64, stop_ids=stops)
        for q in QUANTS:
            for use_imatrix in (False, True):
                out = work / f"{q}-{'im' if use_imatrix else 'plain'}.gguf"
                if use_imatrix:
                    quantize_with_imatrix(f16, out, Quant(q), imatrix, tools, threads=args.threads)
                else:
                    quantize_gguf(f16, out, Quant(q), tools, nthread=args.threads)
                with LlamaCppRuntime(out, n_ctx=1024, n_threads=args.threads) as edge:
                    r = compare(ref, edge, refs, stop_ids=stops)
                rows.append({"quant": q, "imatrix": use_imatrix, "size_mb": out.stat().st_size / 1e6,
                             **{k: v for k, v in r.summary().items()}})
                out.unlink()

    return _print(speed, rows, tools, len(items))


def _print(speed, rows, tools, n_prompts) -> int:
    print(f"{'step':<18} {'edgetune s':>10} {'llama.cpp CLI s':>15} {'ratio':>6}")
    for name, ours, theirs in speed:
        print(f"{name:<18} {ours:>10.2f} {theirs:>15.2f} {ours / theirs:>6.2f}")
    print(f"\n{'quant':<8} {'imatrix':<8} {'MB':>7} {'KLD mean':>9} {'top-1':>7} {'greedy':>7} {'stop':>6}")
    for r in rows:
        print(f"{r['quant']:<8} {str(r['imatrix']):<8} {r['size_mb']:>7.1f} {r['kld_mean']:>9.4f} "
              f"{r['top1_agreement']:>7.1%} {r['greedy_agreement']:>7.1%} {r['stop_agreement']:>6.0%}")
    gain = {}
    for q in QUANTS if rows else []:
        plain, im = [next(r for r in rows if r["quant"] == q and r["imatrix"] is b) for b in (False, True)]
        gain[q] = 1 - im["kld_mean"] / plain["kld_mean"] if plain["kld_mean"] else None
    if gain:
        print("\nKLD reduction from the imatrix: " + ", ".join(f"{q} {g:+.0%}" for q, g in gain.items() if g is not None))
    print(json.dumps({"benchmark": "export", "date": time.strftime("%Y-%m-%d"), "llama.cpp": tools.revision,
                      "speed": [{"step": n, "edgetune_s": o, "llama_cpp_cli_s": t, "ratio": o / t} for n, o, t in speed],
                      "fidelity": rows, "imatrix_kld_reduction": gain, "prompts": n_prompts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
