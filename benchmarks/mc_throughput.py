"""Multiple-choice scoring throughput: edgetune's forgetting scorer (llama.cpp runtime) vs llama.cpp's own
`llama-perplexity --hellaswag`, on the same GGUF, the same HellaSwag items and text, the same thread count,
interleaved in one run.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mc_throughput.py [--items 40] [--threads 1]
       [--repeats 3] [--gguf PATH] [--tokenizer DIR] [--perplexity-args "-np 8"]

Items are edgetune's seeded HellaSwag subset (`mc_sets.mc_items`). llama-perplexity gets the same text: each
item's context and endings decoded from edgetune's token ids, in its 6-lines-per-task format; it re-tokenises
them (and adds BOS when the model asks for it). Throughput is "item tokens per second" on each side's own
tokens: per item, the prefix the four endings share counted once plus every ending's own tokens (what
llama-perplexity calls required_tokens), over the scoring time. edgetune's time is `run_multiple_choice`
after the model is loaded and warmed up; llama-perplexity's is its wall time after the log line that starts
the scoring (model load and tokenisation excluded). Each side's accuracy is printed too: acc_norm by the mean
log-prob per token (llama-perplexity's rule) should agree up to kernel rounding, since the text is the same.
Prints a table on stderr, then one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def shared_prefix(seqs: list[list[int]]) -> int:
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


def item_tokens(seqs: list[list[int]]) -> int:
    """Shared prefix once plus each sequence's own tail (llama-perplexity's required_tokens)."""
    cp = shared_prefix(seqs)
    return cp + sum(len(s) - cp for s in seqs)


def task_file(items, tokenizer, path: Path) -> list[tuple[str, list[str]]]:
    texts = []
    lines = []
    for it in items:
        ctx = tokenizer.decode(it.context_ids)
        endings = [tokenizer.decode(c) for c in it.choice_ids]
        if not all(e.startswith(" ") for e in endings):
            raise SystemExit(f"{it.id}: an ending does not start with a space; cannot hand it to llama-perplexity")
        endings = [e[1:] for e in endings]  # llama-perplexity joins context + " " + ending
        if any("\n" in t for t in (ctx, *endings)):
            raise SystemExit(f"{it.id}: a newline in the text would break the 6-lines-per-task format")
        lines += [ctx, str(it.answer), *endings]
        texts.append((ctx, endings))
    path.write_text("\n".join(lines) + "\n")
    return texts


def perplexity_tokens(gguf: Path, texts: list[tuple[str, list[str]]]) -> int:
    """Tokens llama-perplexity feeds for these items, tokenised as it does (common_tokenize, add special)."""
    from llama_cpp import Llama

    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        return sum(item_tokens([llm.tokenize(f"{ctx} {e}".encode(), add_bos=True, special=False)
                                for e in endings]) for ctx, endings in texts)
    finally:
        llm.close()


STAMP = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+) ")


def run_perplexity(tool: Path, gguf: Path, tasks: Path, n: int, threads: int, extra: list[str]) -> dict:
    cmd = [str(tool), "-m", str(gguf), "-f", str(tasks), "--hellaswag", "--hellaswag-tasks", str(n),
           "-t", str(threads), "-tb", str(threads), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"llama-perplexity failed ({proc.returncode}): {out[-2000:]}")
    start_s = None
    for line in out.splitlines():
        m = STAMP.match(line)
        if m and "calculating hellaswag score" in line:
            mins, secs, ms, us = map(int, m.groups())
            start_s = mins * 60 + secs + ms / 1e3 + us / 1e6
    final = re.findall(rf"^{n}\t([0-9.]+)%", out, flags=re.MULTILINE)
    if start_s is None or not final:
        raise SystemExit(f"could not read llama-perplexity's log: {out[-2000:]}")
    return {"score_s": wall_s - start_s, "wall_s": wall_s, "acc_norm_per_token": float(final[-1]) / 100,
            "command": shlex.join(cmd)}


def run_edgetune(runtime, items) -> dict:
    from edgetune.evals.forgetting import run_multiple_choice

    t0 = time.perf_counter()
    result = run_multiple_choice(runtime, items)
    score_s = time.perf_counter() - t0
    per_token = [max(range(len(it.choice_ids)), key=lambda i, r=r, it=it: (r.logprobs[i] / len(it.choice_ids[i]), -i))
                 for r, it in zip(result.items, items, strict=True)]
    return {"score_s": score_s, "acc": result.acc, "acc_norm_per_char": result.acc_norm,
            "acc_norm_per_token": sum(p == it.answer for p, it in zip(per_token, items)) / len(items)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gguf", type=Path, default=None, help="default: the embedded SmolLM2-135M-Instruct Q4_1")
    ap.add_argument("--tokenizer", type=Path, default=None, help="HF tokenizer folder (default: from the GGUF)")
    ap.add_argument("--perplexity-args", default="", help="extra llama-perplexity flags, e.g. '-np 8'")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import llama_cpp
    from edgetune.assets import smollm2_gguf
    from edgetune.evals.mc_sets import mc_items
    from edgetune.home import edgetune_home
    from edgetune.llamacpp import load_tools
    from edgetune.runtimes import LlamaCppRuntime
    from transformers import AutoTokenizer

    gguf = args.gguf or smollm2_gguf()
    tok = (AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer
           else AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    tools = load_tools(edgetune_home())
    perplexity = tools.tool("llama-perplexity")
    items = mc_items("hellaswag", tok, n_items=args.items, seed=args.seed)
    tasks = Path(tempfile.mkdtemp(prefix="edgetune-mc-bench-")) / "hellaswag.txt"
    texts = task_file(items, tok, tasks)
    tokens_et = sum(item_tokens([c + x for c, x in it.requests()]) for it in items)
    tokens_lp = perplexity_tokens(gguf, texts)

    et_runs, lp_runs = [], []
    with LlamaCppRuntime(gguf, n_ctx=1024, n_threads=args.threads) as rt:
        run_edgetune(rt, items[:2])  # warm-up: the scoring context is made on first use
        for _ in range(args.repeats):
            et_runs.append(run_edgetune(rt, items))
            lp_runs.append(run_perplexity(perplexity, gguf, tasks, args.items, args.threads,
                                          shlex.split(args.perplexity_args)))
    et_s = statistics.median(r["score_s"] for r in et_runs)
    lp_s = statistics.median(r["score_s"] for r in lp_runs)
    rows = [
        {"scorer": "edgetune (LlamaCppRuntime)", "tokens": tokens_et, "score_s": round(et_s, 2),
         "tok_per_s": round(tokens_et / et_s, 1), "acc_norm_per_token": et_runs[0]["acc_norm_per_token"],
         "acc": et_runs[0]["acc"], "acc_norm_per_char": et_runs[0]["acc_norm_per_char"]},
        {"scorer": "llama-perplexity --hellaswag", "tokens": tokens_lp, "score_s": round(lp_s, 2),
         "tok_per_s": round(tokens_lp / lp_s, 1), "acc_norm_per_token": lp_runs[0]["acc_norm_per_token"]},
    ]
    ratio = rows[0]["tok_per_s"] / rows[1]["tok_per_s"]
    # each repeat runs both back to back, so a ratio per repeat cancels most of the drift in machine load
    pair_ratios = [(tokens_et / e["score_s"]) / (tokens_lp / p["score_s"]) for e, p in zip(et_runs, lp_runs)]
    print(f"{'scorer':<30} {'tokens':>7} {'score_s':>8} {'tok/s':>8} {'acc_norm/token':>14}", file=sys.stderr)
    for r in rows:
        print(f"{r['scorer']:<30} {r['tokens']:>7} {r['score_s']:>8} {r['tok_per_s']:>8} "
              f"{r['acc_norm_per_token']:>14.3f}", file=sys.stderr)
    print(f"edgetune / llama-perplexity: {ratio:.2f}x on medians, {statistics.median(pair_ratios):.2f}x median "
          f"of per-repeat ratios {[round(r, 2) for r in pair_ratios]} (target >= 0.9x)", file=sys.stderr)
    print(json.dumps({"benchmark": "mc_throughput", "set": "hellaswag", "items": args.items,
                      "threads": args.threads, "repeats": args.repeats, "model": gguf.name,
                      "llama_cpp_python": llama_cpp.__version__, "llama_cpp": tools.revision[:12],
                      "runs": rows, "ratio": round(ratio, 3),
                      "ratio_per_repeat": [round(r, 3) for r in pair_ratios],
                      "edgetune_score_s_all": [round(r["score_s"], 2) for r in et_runs],
                      "perplexity_score_s_all": [round(r["score_s"], 2) for r in lp_runs],
                      "perplexity_command": lp_runs[0]["command"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
