"""Run-to-run noise of a build's reported figures: the same config built from scratch several times (fresh out
dirs, one run with a different thread count), then every figure README's table shows compared across the runs.

What it builds: the tests' small real pipeline (a 2-layer Llama with SmolLM2's tokenizer, the 42-row colour task,
8 LoRA steps, F16/Q8_0/Q4_0 GGUFs, gates in warn mode, MMLU/ARC-E/WinoGrande subsets; no judge), because the embedded default takes
15+ minutes a build on 2 shared cores. The model's init range is widened so greedy answers are decided by real
logit gaps, as a trained model's are (at the default range near-ties flip between correct kernels). It measures
which figures can move between runs at all and how far; the magnitude on the real default can differ.

  python benchmarks/report_noise.py [--runs 1,1,2] [--target rpi5]   (threads per run; log: results-report-noise-*.log)
  python benchmarks/report_noise.py --reports A/report.json B/report.json   (compare existing reports)

Prints one line per figure (values per run, spread) and a JSON line: per figure class, the largest spread seen.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.conftest's model and task builders
sys.path.insert(0, str(ROOT / "scripts"))


def raw_figures(report: Any) -> dict[str, Any]:
    """The table's figures at full precision (readme_table.metrics rounds them as printed)."""
    out: dict[str, Any] = {}
    for r in report.builds:
        out[f"{r.name}.size_mb"] = r.size_bytes / 1e6 if r.size_bytes else None
        out[f"{r.name}.accuracy"] = r.accuracy
        if r.vs_gpu is not None:
            out[f"{r.name}.vs_gpu"] = r.vs_gpu.diff
            out[f"{r.name}.lost"], out[f"{r.name}.gained"] = r.vs_gpu.lost, r.vs_gpu.gained
            out[f"{r.name}.verdict"] = r.vs_gpu.verdict
        if r.fidelity is not None:
            out[f"{r.name}.kld"], out[f"{r.name}.top1"] = r.fidelity.kld_mean, r.fidelity.top1_agreement
        for suite, fg in (r.forgetting or {}).items():
            out[f"{r.name}.forgetting.{suite}"] = fg.acc
    out["recommendation"] = report.recommendation.quant if report.recommendation else None
    return out


def build_runs(threads: list[int], work: Path, target: str = "rpi5") -> list[tuple[str, Path, float]]:
    from edgetune.config import (BuildConfig, DataConfig, EvalConfig, ExportConfig, GateConfig, ModelConfig,
                                 TrainConfig)
    from edgetune.constants import Quant
    from edgetune.home import edgetune_home
    from edgetune.pipeline import build
    from transformers import AutoTokenizer

    from edgetune.assets import smollm2_gguf
    from tests.conftest import make_tiny_llama, write_colour_task

    gguf = smollm2_gguf()  # SmolLM2's tokenizer, as the tests take it
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(work / "tokenizer")
    model = make_tiny_llama(work / "model", work / "tokenizer", initializer_range=0.2)
    task = write_colour_task(work / "colours.jsonl")
    runs = []
    for i, n in enumerate(threads):
        cfg = BuildConfig(target=target, out_dir=work / f"out-{i}", threads=n, model=ModelConfig(source=str(model)),
                          data=DataConfig(source=str(task), heldout_size=10, train_size=32),
                          train=TrainConfig(method="lora", r=8, alpha=16, max_steps=8, batch_size=8,
                                            learning_rate=1e-2, warmup_ratio=0.0),
                          export=ExportConfig(quants=[Quant.Q8_0, Quant.Q4_0], gates=GateConfig(mode="warn")),
                          eval=EvalConfig(forgetting={"mmlu": 8, "arc_easy": 4, "winogrande": 4}, max_new_tokens=4,
                                          judge_items=0))
        started = time.monotonic()
        result = build(cfg, edgetune_home())
        runs.append((f"run{i} threads={n}", Path(result.report_json), time.monotonic() - started))
    return runs


def compare(reports: list[tuple[str, Path, float | None]]) -> dict[str, Any]:
    from readme_table import metrics, tolerance

    from edgetune.report.schema import Report

    loaded = [Report.load(json.loads(p.read_text())) for _, p, _ in reports]
    raw = [raw_figures(r) for r in loaded]
    shown = [metrics(r) for r in loaded]
    spread: dict[str, float | str] = {}
    print(f"{'figure':<32} {'spread':>10} {'table differs':>13}  values per run")
    for name in sorted(set().union(*raw)):
        values = [r.get(name) for r in raw]
        nums = [v for v in values if isinstance(v, (int, float))]
        gap: float | str = (max(nums) - min(nums)) if len(nums) == len(values) else \
            ("same" if len({str(v) for v in values}) == 1 else "differs")
        differs = len({str(s.get(name)) for s in shown}) > 1
        cls = name.split(".")[1] if "." in name else name
        prev = spread.get(cls, 0.0)
        if isinstance(gap, float) or isinstance(gap, int):
            spread[cls] = max(float(gap), prev) if isinstance(prev, float) else prev
        elif gap == "differs":
            spread[cls] = "differs"
        print(f"{name:<32} {gap if isinstance(gap, str) else f'{gap:.6g}':>10} {str(differs):>13}  "
              + " | ".join("–" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in values))
    times = {label: round(t, 1) for label, _, t in reports if t is not None}
    if times:
        print("build seconds (wall, this shared machine):", times)
    return {"bench": "report_noise", "runs": [label for label, _, _ in reports], "max_spread": spread,
            "tolerance": {cls: tolerance(f"x.{cls}") if cls != "recommendation" else tolerance(cls) for cls in spread},
            "build_seconds": times}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="1,1,2", help="threads of each fresh build, comma-separated")
    p.add_argument("--reports", nargs="+", type=Path, help="compare these report.json files instead of building")
    p.add_argument("--target", default="rpi5", help="the build's target; it changes the bundle (an aarch64 one needs "
                   "the cross-built runtime), not a figure of the table: every eval runs on this host's llama.cpp")
    args = p.parse_args()
    if args.reports:
        result = compare([(str(r), r, None) for r in args.reports])
    else:
        with tempfile.TemporaryDirectory(prefix="report-noise-") as tmp:
            result = compare(build_runs([int(t) for t in args.runs.split(",")], Path(tmp), args.target))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
