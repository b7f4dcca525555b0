"""The report's "Standard benchmarks" table: lm-evaluation-harness scores per build (report.schema's
StandardBenchmarks, written by `edgetune bench` or by `build` with eval.lm_eval_tasks)."""

from __future__ import annotations

from edgetune.report.schema import Report
from edgetune.report.sections import ReportLike, Table, pct, signed_pts


def standard_benchmarks_table(report: ReportLike) -> Table | None:
    """One row per build, one column per task: the task's metric, its change against the reference build and
    the paired verdict (the task eval's rule and margin)."""
    sb = Report.load(report).standard_benchmarks
    if sb is None or not sb.scores:
        return None
    builds = list(sb.builds) or list(next(iter(sb.scores.values())))
    rows, classes = [], []
    for b in builds:
        cells, worse = [b], False
        for task in sb.tasks:
            s = sb.scores.get(task, {}).get(b)
            if s is None:
                cells.append("–")
                continue
            text = pct(s.score)
            if s.verdict is not None:
                text += f" ({signed_pts(s.verdict.diff)} vs {s.reference}: {s.verdict.verdict})"
                worse = worse or s.verdict.verdict == "worse"
            cells.append(text)
        rows.append(cells)
        classes.append("worse" if worse else "")
    cols = ["build"] + [f"{t} {next(iter(sb.scores[t].values())).metric} (n={next(iter(sb.scores[t].values())).n})"
                        for t in sb.tasks]
    shots = "each task's default few-shot" if sb.num_fewshot is None else f"{sb.num_fewshot}-shot"
    where = f"GGUFs on {sb.device} over SSH" if sb.device else "every build on the build host"
    notes = "; ".join(f"{t}: {n}" for t, n in sb.notes.items())
    note = (f"{sb.harness}, {shots}" + (f", limit {sb.limit} per task" if sb.limit else "") + f"; {where}. "
            f"Verdicts pair each build with the GPU build (the GPU build with the base) item by item, at margin "
            f"{sb.margin}." + (f" Offline data: {notes}." if notes else ""))
    return Table("standard-benchmarks", "Standard benchmarks (lm-evaluation-harness)", cols, rows, note, classes)
