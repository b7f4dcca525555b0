"""Judge throughput on the local llama.cpp judge (embedded SmolLM2) at several concurrency levels.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judge_throughput.py [--items 8] [--concurrency 1 4]
       [--threads 1] [--gguf PATH] [--baseline-ref REF] [--rounds 1]
With --baseline-ref, the same benchmark from git revision REF (its toolchain and this script as they were then,
exported with `git archive` into a temp folder) runs in a child process before this checkout's, round after
round, so the old and the new judge path are measured side by side under the same load (the ref before issue 21
serves the judge with llama-cpp-python's server, which then needs `llama-cpp-python[server]` installed).
Prints a table, then one JSON line. Every run uses a fresh verdict cache, so every verdict is a real call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

QA = [
    ("What is the capital of France?", "Paris."),
    ("What is 7 times 8?", "56"),
    ("Name a primary colour.", "Blue."),
    ("What gas do plants absorb?", "Carbon dioxide."),
    ("How many legs does a spider have?", "Six."),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees."),
    ("Who wrote Hamlet?", "Charles Dickens."),
    ("What is the largest planet in the solar system?", "Jupiter."),
]


def measure(args: argparse.Namespace) -> dict:
    """This checkout's judge path: start the local judge, warm it up, judge `items` at each concurrency."""
    from edgetune.assets import smollm2_gguf
    from edgetune.evals.judge import JudgeItem, judge_single
    from edgetune.evals.judge_server import local_judge_server
    from edgetune.evals.suites import load_rubric

    gguf = args.gguf or smollm2_gguf()
    pairs = [QA[i % len(QA)] for i in range(args.items)]
    items = [JudgeItem(f"q{i}", q) for i, (q, _) in enumerate(pairs)]
    answers = [a for _, a in pairs]
    rubric = load_rubric("helpfulness")
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        local_judge_server(gguf, n_ctx=1024, n_threads=args.threads) as srv,
    ):
        judge_single(srv.config(), rubric, items[:1], answers[:1], Path(tmp) / "warmup")
        for concurrency in args.concurrency:
            result = judge_single(
                srv.config(concurrency=concurrency), rubric, items, answers, Path(tmp) / f"c{concurrency}"
            )
            rows.append(
                {
                    "concurrency": concurrency,
                    "calls": result.calls,
                    "elapsed_s": round(result.elapsed_s, 2),
                    "verdicts_per_s": round(result.calls / result.elapsed_s, 3),
                    "valid": result.n_valid,
                    "mean_rating": result.mean_rating,
                    "ratings": [i.rating for i in result.items],
                }
            )
    return {"benchmark": "judge_throughput", "model": gguf.name, "threads": args.threads, "runs": rows}


def baseline(ref: str, argv: list[str], work: Path) -> dict:
    """Run REF's version of this benchmark (its own toolchain) in a child process; its JSON line."""
    tree = work / ref.replace("/", "_")
    if not tree.is_dir():
        archive = work / "ref.tar"
        subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), ref, "toolchain", "benchmarks"],
                       check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="data")
    env = {**os.environ, "PYTHONPATH": str(tree / "toolchain")}
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / "judge_throughput.py"), *argv], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--baseline-ref", default=None, help="git revision whose judge path to measure first")
    parser.add_argument("--rounds", type=int, default=1, help="baseline + this checkout, this many times")
    args = parser.parse_args()
    child_argv = ["--items", str(args.items), "--concurrency", *map(str, args.concurrency),
                  "--threads", str(args.threads), *(["--gguf", str(args.gguf)] if args.gguf else [])]
    results = []
    load_before = os.getloadavg()  # the machine may be shared: compare paths within one run, not across runs
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-judge-") as work:
        for rnd in range(1, args.rounds + 1):
            if args.baseline_ref:
                results.append({"path": f"baseline {args.baseline_ref}", "round": rnd,
                                **baseline(args.baseline_ref, child_argv, Path(work))})
            results.append({"path": "this checkout", "round": rnd, **measure(args)})
    print(f"{'path':>22} {'round':>5} {'concurrency':>11} {'calls':>5} {'elapsed_s':>9} {'verdicts/s':>10} "
          f"{'valid':>5} {'mean':>5}", file=sys.stderr)
    for res in results:
        for r in res["runs"]:
            print(f"{res['path']:>22} {res['round']:>5} {r['concurrency']:>11} {r['calls']:>5} {r['elapsed_s']:>9} "
                  f"{r['verdicts_per_s']:>10} {r['valid']:>5} {r['mean_rating']!s:>5}", file=sys.stderr)
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    print(f"load average (1, 5, 15 min) before {load['before']}, after {load['after']}; {os.cpu_count()} CPUs",
          file=sys.stderr)
    print(json.dumps({"benchmark": "judge_throughput", "threads": args.threads, "cpus": os.cpu_count(),
                      "load_average": load, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
