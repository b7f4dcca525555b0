"""Print a task-shape run's headline table (docs/task-metrics.md) from its committed report.json: per build the
task metric's score, the share fully correct, truncations, the paired verdict against the GPU build, and the
pointwise judge's mean rating where the run has one. tests/test_docs_numbers.py checks the doc holds this output.

  python scripts/task_table.py docs/runs/arith-number-rpi5/report.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgetune.report.schema import BuildRow, Report


def pts(x: float, scale: float) -> str:
    return f"{x * scale:+.1f}" if scale == 100 else f"{x:+.3f}"


def verdict(row: BuildRow, scale: float) -> str:
    v = row.vs_gpu
    if v is None or v.ci95 is None or v.diff is None:
        return "–"
    lo, hi = v.ci95
    needed = f"; ~{v.n_needed:,} items would decide" if v.n_needed else ""
    return f"{pts(v.diff, scale)} [{pts(lo, scale)}, {pts(hi, scale)}]: **{v.verdict}**{needed}"


def judge(row: BuildRow) -> str:
    j = row.judge
    if j is None or j.mean_score is None:
        return "–"
    if j.constant_rating is not None:  # the judge rated every answer alike: no information
        return f"{j.mean_score:.2f} (every answer rated {j.constant_rating:g})"
    vs = j.vs_gpu
    delta = (f", Δ {vs.diff:+.2f} [{vs.ci95[0]:+.2f}, {vs.ci95[1]:+.2f}]"
             if vs is not None and vs.ci95 and vs.diff is not None else "")
    return f"{j.mean_score:.2f}{delta}"


def table(report: Report) -> str:
    rows = report.builds
    metric = next(r.metric for r in rows if r.metric)
    n = next(r.n for r in rows if r.n)
    # label-like metrics (0/1 per item) read in points; graded ones (json fields, chrF) in metric units
    graded = any(r.score is not None and r.accuracy is not None and r.score != r.accuracy for r in rows)
    scale, unit = (1.0, "metric units") if graded else (100.0, "pts")
    has_judge = any(r.judge is not None and r.judge.mean_score is not None for r in rows)
    head = ["build", "size", f"{metric} score (n={n})", "fully correct", "truncated",
            f"vs GPU build ({unit}, 95% CI, verdict)"] + (["judge 1-10 (Δ vs GPU, 95% CI)"] if has_judge else [])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.score is None or r.accuracy is None:
            raise ValueError(f"build {r.name}: no task score in this report")
        size = f"{r.size_bytes / 1e6:.0f} MB" if r.size_bytes else "–"
        label = f"GGUF {r.name}" if r.kind == "GGUF" else r.kind
        cells = [label, size, f"{r.score:.3f}", f"{100 * r.accuracy:.1f}%", f"{r.truncated or 0}/{r.n}",
                 verdict(r, scale)] + ([judge(r)] if has_judge else [])
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    ft = report.finetune
    rec = report.recommendation
    majority = ft.vs_majority if ft else None
    worked = ("worked" if ft and ft.worked else f"not shown to work (vs always {majority.label!r}: "
              f"{majority.verdict})" if majority and majority.verdict != "beats" else "not shown to work")
    out += ["", f"Fine-tune vs base: **{ft.verdict if ft else '–'}**, {worked}. "
                f"Recommendation: **{(rec.quant if rec else None) or 'none'}**."]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    print(table(Report.load(json.loads(Path(argv[0]).read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
