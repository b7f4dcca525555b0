"""What a llama.cpp build choice costs: host-side eval time of the default build with two llama-cpp-python wheels.

The workload is the default build's own: every GGUF in its bundle, the bundle's held-out suite (the same token
ids the evals use) decoded greedily to each row's max_tokens, and a multiple-choice scoring pass over the same
prompts (two 3-token continuations each, as the forgetting sets score choices). Each wheel is installed into its
own folder and run in its own process (`PYTHONPATH`), alternating wheels for `--repeats` rounds; the median is
reported. Prints a table and one JSON line.

  python benchmarks/llama_build_speed.py --wheel before=PATH.whl --wheel after=PATH.whl \\
      [--run edgetune-out/runs/rpi5-8gb] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(ggufs: list[Path], suite: Path, threads: int) -> dict:
    """Runs inside one wheel's process: seconds per (gguf, workload), and llama.cpp's compiled-in features."""
    import llama_cpp

    from edgetune.runtimes.llamacpp import LlamaCppEngine

    rows = [json.loads(line) for line in suite.read_text().splitlines() if line.strip()]
    out: dict = {"system_info": llama_cpp.llama_print_system_info().decode().strip(), "seconds": {}}
    for gguf in ggufs:
        with LlamaCppEngine(gguf, n_ctx=1024, n_threads=threads) as engine:
            t0 = time.perf_counter()
            for row in rows:
                engine.generate(row["prompt_ids"], row.get("max_tokens", 4), stop_ids=[])
            t1 = time.perf_counter()
            requests = []
            for row in rows:
                ids = row["prompt_ids"]
                requests += [(ids[:-6], ids[-3:]), (ids[:-6], ids[-6:-3])]
            engine.loglikelihood(requests)
            t2 = time.perf_counter()
        out["seconds"][gguf.name] = {"generate": t1 - t0, "score": t2 - t1}
    return out


def install(wheel: Path, label: str, root: Path) -> Path:
    target = root / label
    stamp = target / ".wheel"
    if not (stamp.is_file() and stamp.read_text() == str(wheel)):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target",
                        str(target), str(wheel)], check=True)
        stamp.write_text(str(wheel))
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", action="append", default=[], metavar="LABEL=PATH", help="two or more wheels")
    ap.add_argument("--run", type=Path, default=Path("edgetune-out/runs/rpi5-8gb"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        suite, *ggufs = map(Path, args.worker)
        print(json.dumps(worker(ggufs, suite, args.threads)))
        return 0

    run = json.loads((args.run / "run.json").read_text())
    bundle = next(Path(p) for k, p in run["stages"].items() if k == "bundle")
    bundle = next(d for d in bundle.iterdir() if d.is_dir() and (d / "manifest.json").is_file())
    ggufs = sorted((bundle / "models").glob("*.gguf"))
    suite = bundle / "suite" / "heldout.jsonl"
    wheels = dict(w.split("=", 1) for w in args.wheel)
    targets = {label: install(Path(path), label, Path("/tmp/edgetune-bench-wheels")) for label, path in wheels.items()}
    results: dict[str, list[dict]] = {label: [] for label in wheels}
    for _ in range(args.repeats):
        for label, target in targets.items():
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(Path("toolchain").resolve())]),
                   "OMP_WAIT_POLICY": "PASSIVE"}
            done = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--worker", str(suite),
                                   *map(str, ggufs)], capture_output=True, text=True, env=env, check=True)
            results[label].append(json.loads(done.stdout.strip().splitlines()[-1]))

    labels = list(wheels)
    median = {label: {g.name: {w: statistics.median(r["seconds"][g.name][w] for r in results[label])
                               for w in ("generate", "score")} for g in ggufs} for label in labels}
    print(f"host-side eval time of the default build's GGUFs ({len(ggufs)} files, suite {suite}), "
          f"median of {args.repeats}, {args.threads} thread(s)")
    for label in labels:
        print(f"  {label}: {results[label][0]['system_info']}")
    head = f"{'gguf':<40} {'workload':<9}" + "".join(f"{lb + ' s':>16}" for lb in labels)
    head += f"{labels[-1] + '/' + labels[0]:>28}"
    print(head)
    totals = {label: 0.0 for label in labels}
    for g in ggufs:
        for w in ("generate", "score"):
            vals = [median[lb][g.name][w] for lb in labels]
            for lb, v in zip(labels, vals):
                totals[lb] += v
            print(f"{g.name:<40} {w:<9}" + "".join(f"{v:>16.2f}" for v in vals) + f"{vals[-1] / vals[0]:>28.3f}")
    print(f"{'total':<50}" + "".join(f"{totals[lb]:>16.2f}" for lb in labels)
          + f"{totals[labels[-1]] / totals[labels[0]]:>28.3f}")
    print(json.dumps({"benchmark": "llama_build_speed", "threads": args.threads, "repeats": args.repeats,
                      "median_s": median, "total_s": totals,
                      "ratio_total": totals[labels[-1]] / totals[labels[0]],
                      "system_info": {lb: results[lb][0]["system_info"] for lb in labels}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
