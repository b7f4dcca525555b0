"""lm-evaluation-harness through edgetune's runtimes: speed against llama.cpp's own scorer, agreement with the
harness's own `hf` model class, and the cost of the harness path against the hand-built forgetting sets.

Usage: OMP_NUM_THREADS=1 python benchmarks/harness_bench.py throughput [--items 40] [--threads 1] [--repeats 3]
       OMP_NUM_THREADS=1 python benchmarks/harness_bench.py agreement [--limit 10] [--mmlu-limit 1] [--hf DIR]

throughput: the harness's `hellaswag` task (offline copy, first N docs) as harness requests: (1) through
  `EdgetuneLM` over `LlamaCppRuntime` (the requests' `loglikelihood`, after load and a warm-up), against
  (2) `llama-perplexity --hellaswag` on the same docs and text (each doc's query and its four endings, as the
  harness builds them; llama-perplexity joins them with one space as the harness's target delimiter does),
  timed from its "calculating hellaswag score" log line (model load and tokenisation excluded), interleaved per
  repeat. Requests/s = 4 x docs / scoring seconds on both sides. Then, on the same HellaSwag docs (the
  forgetting set's seeded subset of validation, given to the harness as its `samples`), (3) the whole harness
  path (task built from disk, requests, scoring, metrics) against (4) the whole hand-built forgetting-set path
  (`mc_sets.mc_items` + `run_multiple_choice`), interleaved, --repeats runs each: the issue keeps the
  hand-built sets only if they are faster for the same items.
agreement: every offline task (--limit docs each; MMLU --mmlu-limit per subject, 57 subjects) on the embedded SmolLM2 dequantized to fp32 HF,
  through `EdgetuneLM` over `HFRuntime` and through the harness's `hf` class (`HFLM`), on the same requests.
  Prints each task's accuracies from both and the largest per-request log-likelihood difference.
Prints a table on stderr, then one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _mc_throughput():
    spec = importlib.util.spec_from_file_location("mc_throughput", HERE / "mc_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def hellaswag_instances(n_docs: int):
    """The harness's hellaswag task on the offline copy: its first n_docs docs and their 4 requests each."""
    from edgetune.harness.tasks import build_tasks

    task = build_tasks(["hellaswag"], num_fewshot=0)["hellaswag"][0]
    task.build_all_requests(limit=n_docs, rank=0, world_size=1)
    return task, sorted(task.instances, key=lambda i: (i.doc_id, i.idx))


def perplexity_task_file(task, instances, path: Path) -> None:
    lines = []
    for doc_id in sorted({i.doc_id for i in instances}):
        reqs = [i for i in instances if i.doc_id == doc_id]
        ctx = reqs[0].args[0]
        endings = [r.args[1] for r in reqs]
        if not all(e.startswith(" ") for e in endings) or any("\n" in t for t in (ctx, *endings)):
            raise SystemExit(f"doc {doc_id}: cannot be written in llama-perplexity's 6-lines-per-task format")
        lines += [ctx, str(task.doc_to_target(reqs[0].doc)), *[e[1:] for e in endings]]
    path.write_text("\n".join(lines) + "\n")


def throughput(args) -> dict:
    import llama_cpp
    from transformers import AutoTokenizer

    from edgetune.assets import smollm2_gguf
    from edgetune.evals.forgetting import run_multiple_choice
    from edgetune.evals.mc_sets import _rank, load_split, mc_items
    from edgetune.harness.bench import evaluate
    from edgetune.harness.lm import EdgetuneLM
    from edgetune.home import edgetune_home
    from edgetune.llamacpp import load_tools
    from edgetune.runtimes import LlamaCppRuntime

    mct = _mc_throughput()
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tools = load_tools(edgetune_home())
    task, instances = hellaswag_instances(args.items)
    tasks_file = Path(tempfile.mkdtemp(prefix="edgetune-harness-bench-")) / "hellaswag.txt"
    perplexity_task_file(task, instances, tasks_file)
    n_req = len(instances)
    et_s, lp_runs = [], []
    with LlamaCppRuntime(gguf, n_ctx=1024, n_threads=args.threads) as rt:
        lm = EdgetuneLM(rt, tok, max_length=1024)
        lm.loglikelihood(instances[:8], disable_tqdm=True)  # warm-up: the scoring context is made on first use
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            scores = lm.loglikelihood(instances, disable_tqdm=True)
            et_s.append(time.perf_counter() - t0)
            lp_runs.append(mct.run_perplexity(tools.tool("llama-perplexity"), gguf, tasks_file, args.items,
                                              args.threads, []))
        # per-token acc_norm (llama-perplexity's rule) from edgetune's answers, to check both scored the same text
        right = 0
        for doc_id in sorted({i.doc_id for i in instances}):
            idx = [k for k, i in enumerate(instances) if i.doc_id == doc_id]
            norm = [scores[k][0] / len(lm._encode_pair(*instances[k].args)[1]) for k in idx]
            right += max(range(len(idx)), key=lambda j: (norm[j], -j)) == task.doc_to_target(instances[idx[0]].doc)
        acc_norm_tok = right / args.items
        # whole paths on the same docs: the forgetting set's seeded rows, handed to the harness as `samples`
        rows = sorted(range(len(load_split("hellaswag"))), key=lambda r: _rank(0, "hellaswag", r))[:args.items]
        harness_s, mc_s = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            harness = evaluate(lm, ["hellaswag"], samples={"hellaswag": rows})["hellaswag"]
            harness_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            mc = run_multiple_choice(rt, mc_items("hellaswag", tok, n_items=args.items, seed=0))
            mc_s.append(time.perf_counter() - t0)
        assert sorted(int(k.split("/")[1]) for k in harness.acc) == sorted(rows)
    et, lp = statistics.median(et_s), statistics.median(r["score_s"] for r in lp_runs)
    pair = [(n_req / e) / (n_req / p["score_s"]) for e, p in zip(et_s, lp_runs)]
    rows = [
        {"scorer": "harness via edgetune (LlamaCppRuntime)", "requests": n_req, "score_s": round(et, 2),
         "req_per_s": round(n_req / et, 2), "acc_norm_per_token": acc_norm_tok},
        {"scorer": "llama-perplexity --hellaswag", "requests": n_req, "score_s": round(lp, 2),
         "req_per_s": round(n_req / lp, 2), "acc_norm_per_token": lp_runs[0]["acc_norm_per_token"]},
    ]
    print(f"{'scorer':<40} {'requests':>8} {'score_s':>8} {'req/s':>7} {'acc_norm/token':>14}", file=sys.stderr)
    for r in rows:
        print(f"{r['scorer']:<40} {r['requests']:>8} {r['score_s']:>8} {r['req_per_s']:>7} "
              f"{r['acc_norm_per_token']:>14.3f}", file=sys.stderr)
    ratio = rows[0]["req_per_s"] / rows[1]["req_per_s"]
    print(f"edgetune / llama-perplexity: {ratio:.2f}x on medians, {statistics.median(pair):.2f}x median of "
          f"per-repeat ratios {[round(r, 2) for r in pair]} (target >= 0.9x)", file=sys.stderr)
    h_s, f_s = statistics.median(harness_s), statistics.median(mc_s)
    print(f"whole path, the same {args.items} HellaSwag docs (medians of {args.repeats}): harness task {h_s:.2f} s "
          f"(acc_norm {sum(harness.acc_norm.values()) / args.items:.3f}), hand-built forgetting set {f_s:.2f} s "
          f"(acc_norm {mc.acc_norm:.3f}): the forgetting set is {h_s / f_s:.2f}x as fast", file=sys.stderr)
    return {"benchmark": "harness_throughput", "task": "hellaswag", "items": args.items, "threads": args.threads,
            "repeats": args.repeats, "model": gguf.name, "llama_cpp_python": llama_cpp.__version__,
            "llama_cpp": tools.revision[:12], "runs": rows, "ratio": round(ratio, 3),
            "ratio_per_repeat": [round(r, 3) for r in pair], "edgetune_score_s_all": [round(s, 2) for s in et_s],
            "perplexity_score_s_all": [round(r["score_s"], 2) for r in lp_runs],
            "whole_path_s": {"harness": round(h_s, 2), "forgetting_set": round(f_s, 2),
                             "harness_all": [round(x, 2) for x in harness_s],
                             "forgetting_set_all": [round(x, 2) for x in mc_s]},
            "whole_path_acc_norm": {"harness": round(sum(harness.acc_norm.values()) / args.items, 4),
                                    "forgetting_set": round(mc.acc_norm, 4)},
            "forgetting_set_speedup": round(h_s / f_s, 3)}


def dequantized_smollm2(out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from edgetune.assets import smollm2_gguf

    if (out / "config.json").is_file():
        return out
    g = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name,
                                                 quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name).save_pretrained(out)
    return out


def agreement(args) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from edgetune.harness.bench import evaluate
    from edgetune.harness.lm import EdgetuneLM
    from edgetune.harness.tasks import OFFLINE_TASKS
    from edgetune.runtimes import HFRuntime

    hf_dir = dequantized_smollm2(args.hf or Path(tempfile.gettempdir()) / "edgetune-smollm2-fp32")
    names = list(OFFLINE_TASKS)
    def run(lm) -> dict:  # MMLU at its own (per-subject) limit, the rest at --limit
        return {**evaluate(lm, [n for n in names if n != "mmlu"], limit=args.limit),
                **evaluate(lm, ["mmlu"], limit=args.mmlu_limit)}

    t0 = time.perf_counter()
    with HFRuntime(hf_dir) as rt:
        ours = run(EdgetuneLM(rt, AutoTokenizer.from_pretrained(hf_dir)))
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = run(HFLM(pretrained=str(hf_dir), device="cpu", batch_size=8, dtype="float32"))
    theirs_s = time.perf_counter() - t0
    rows = []
    for n in names:
        a, b = ours[n], theirs[n]
        rows.append({"task": n, "n": len(a.acc), "acc_edgetune": _mean(a.acc), "acc_hf": _mean(b.acc),
                     "acc_norm_edgetune": _mean(a.acc_norm), "acc_norm_hf": _mean(b.acc_norm),
                     "items_differ": sum(a.acc[k] != b.acc[k] for k in a.acc)
                     + sum(a.acc_norm[k] != b.acc_norm[k] for k in a.acc_norm)})
    worst = max(max(abs(r["acc_edgetune"] - r["acc_hf"]), abs(r["acc_norm_edgetune"] - r["acc_norm_hf"]))
                for r in rows)
    print(f"{'task':<14} {'n':>5} {'acc edgetune':>12} {'acc hf':>8} {'acc_norm edgetune':>17} {'acc_norm hf':>11}"
          f" {'differ':>6}", file=sys.stderr)
    for r in rows:
        print(f"{r['task']:<14} {r['n']:>5} {r['acc_edgetune']:>12.4f} {r['acc_hf']:>8.4f} "
              f"{r['acc_norm_edgetune']:>17.4f} {r['acc_norm_hf']:>11.4f} {r['items_differ']:>6}", file=sys.stderr)
    print(f"largest accuracy difference {worst:.4f} (must be <= 0.001); edgetune {ours_s:.0f} s, hf {theirs_s:.0f} s",
          file=sys.stderr)
    return {"benchmark": "harness_agreement", "model": "SmolLM2-135M-Instruct (embedded GGUF, dequantized fp32)",
            "lm_eval": lm_eval.__version__, "limit": args.limit, "mmlu_limit": args.mmlu_limit, "rows": rows,
            "max_acc_diff": worst, "seconds": {"edgetune": round(ours_s, 1), "hf": round(theirs_s, 1)}}


def _mean(d: dict) -> float:
    return round(sum(d.values()) / len(d), 4) if d else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--items", type=int, default=40)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--repeats", type=int, default=3)
    a = sub.add_parser("agreement")
    a.add_argument("--limit", type=int, default=10)
    a.add_argument("--mmlu-limit", type=int, default=1, help="items per MMLU subject (57 subjects)")
    a.add_argument("--hf", type=Path, default=None, help="SmolLM2 fp32 HF folder (default: made in /tmp)")
    args = ap.parse_args()
    print(json.dumps(throughput(args) if args.mode == "throughput" else agreement(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
