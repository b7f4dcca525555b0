"""Judge throughput on the local llama.cpp judge (embedded SmolLM2) at several concurrency levels.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judge_throughput.py [--items 8] [--concurrency 1 4]
       [--threads 1] [--gguf PATH]
Prints a table, then one JSON line. Every run uses a fresh verdict cache, so every verdict is a real call.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from edgetune.assets import smollm2_gguf
from edgetune.evals.judge import JudgeItem, judge_single
from edgetune.evals.judge_server import local_judge_server
from edgetune.evals.suites import load_rubric

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gguf", type=Path, default=None)
    args = parser.parse_args()
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
                }
            )
    print(
        f"{'concurrency':>11} {'calls':>5} {'elapsed_s':>9} {'verdicts/s':>10} {'valid':>5}", file=sys.stderr
    )
    for r in rows:
        print(
            f"{r['concurrency']:>11} {r['calls']:>5} {r['elapsed_s']:>9} {r['verdicts_per_s']:>10} {r['valid']:>5}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {"benchmark": "judge_throughput", "model": gguf.name, "threads": args.threads, "runs": rows}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
