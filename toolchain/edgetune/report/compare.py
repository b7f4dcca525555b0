"""Two runs side by side (two fine-tunes, or one fine-tune on two targets): for every build name both reports
hold, accuracy in A and in B with 95% Wilson CIs and the change B − A with its 95% CI.

The change is paired when both runs scored the very same item ids and the per-item results were found
(`paired`): exact McNemar p and a paired-bootstrap CI, as within a report. Otherwise the two accuracies are
treated as independent (Newcombe's hybrid score interval), which is conservative for shared items.
Pure: `compare_reports` reads both reports through report.schema and builds a dict (compare.json); `to_markdown`
and `to_html` render that dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetune.report import plots
from edgetune.report.html import img_html, page, table_html
from edgetune.report.markdown import table
from edgetune.report.schema import BuildRow, Report
from edgetune.report.sections import (
    ReportLike,
    Table,
    forgetting_sets,
    mb,
    pct,
    pct_range,
    pts_range,
    signed_pts,
)
from edgetune.report.stats import (
    mcnemar_exact_p,
    newcombe_diff_interval,
    paired_bootstrap_diff_ci,
    paired_flips,
    wilson_interval,
)

PAIRED, UNPAIRED = "paired bootstrap", "Newcombe (unpaired)"


def _side(row: BuildRow, accuracy: float, n: int) -> dict[str, Any]:
    mmlu = forgetting_sets(row).get("mmlu")
    return {"accuracy": accuracy, "n": n, "ci95": row.ci95 or list(wilson_interval(round(accuracy * n), n)),
            "size_bytes": row.size_bytes, "mmlu_acc": mmlu.acc if mmlu is not None else None}


def _sides(report: Report) -> dict[str, dict[str, Any]]:
    """build name → its side of the comparison, for the rows with a task accuracy."""
    return {r.name: _side(r, r.accuracy, r.n or 0) for r in report.builds if r.accuracy is not None}


def compare_reports(a: ReportLike, b: ReportLike, *, label_a: str, label_b: str,
                    paired: Mapping[str, tuple[Mapping[str, bool], Mapping[str, bool]]] | None = None
                    ) -> dict[str, Any]:
    """`paired`: build name → (item id → correct in A, item id → correct in B), where both are known."""
    paired = paired or {}
    rep_a, rep_b = Report.load(a), Report.load(b)
    rows_a, rows_b = _sides(rep_a), _sides(rep_b)
    rows = []
    for name in [n for n in rows_a if n in rows_b]:
        sa, sb = rows_a[name], rows_b[name]
        row: dict[str, Any] = {"name": name, "a": sa, "b": sb, "diff": sb["accuracy"] - sa["accuracy"]}
        ca, cb = paired.get(name, ({}, {}))
        if ca and set(ca) == set(cb):
            lost, gained = paired_flips(ca, cb)
            row.update(method=PAIRED, n_paired=len(ca), lost=len(lost), gained=len(gained),
                       mcnemar_p=mcnemar_exact_p(len(lost), len(gained)),
                       diff_ci95=list(paired_bootstrap_diff_ci(len(ca), len(lost), len(gained))))
        else:
            hits_a, hits_b = round(sa["accuracy"] * sa["n"]), round(sb["accuracy"] * sb["n"])
            ci = newcombe_diff_interval(hits_a, sa["n"], hits_b, sb["n"])
            row.update(method=UNPAIRED, diff_ci95=list(ci))
        if sa["mmlu_acc"] is not None and sb["mmlu_acc"] is not None:
            row["mmlu_diff"] = sb["mmlu_acc"] - sa["mmlu_acc"]
        rows.append(row)
    return {"title": f"edgetune comparison: {label_a} vs {label_b}",
            "a": {"label": label_a, "title": rep_a.title, "context": _context(rep_a)},
            "b": {"label": label_b, "title": rep_b.title, "context": _context(rep_b)},
            "builds": rows, "only_in_a": [n for n in rows_a if n not in rows_b],
            "only_in_b": [n for n in rows_b if n not in rows_a]}


def _context(report: Report) -> dict[str, Any]:
    return report.context.model_dump(mode="json", by_alias=True, exclude_unset=True)


def comparison_table(cmp: Mapping[str, Any]) -> Table:
    cells, classes = [], []
    for r in cmp["builds"]:
        significant = r["diff_ci95"][0] > 0 or r["diff_ci95"][1] < 0
        cells.append([r["name"], mb(r["a"]["size_bytes"]), mb(r["b"]["size_bytes"]),
                      f"{pct(r['a']['accuracy'])} ({pct_range(r['a']['ci95'])}, n={r['a']['n']})",
                      f"{pct(r['b']['accuracy'])} ({pct_range(r['b']['ci95'])}, n={r['b']['n']})",
                      signed_pts(r["diff"]), pts_range(r["diff_ci95"]),
                      r["method"] + (f", {r['lost']} lost / {r['gained']} gained, "
                                     f"McNemar p={r['mcnemar_p']:.3f}" if r["method"] == PAIRED else ""),
                      signed_pts(r.get("mmlu_diff"))])
        classes.append(("worse" if r["diff"] < 0 else "better") if significant else "")
    return Table("comparison", "Task accuracy per build, A vs B",
                 ["build", "size A", "size B", "accuracy A (95% CI)", "accuracy B (95% CI)", "B − A",
                  "95% CI of B − A", "method", "MMLU B − A"], cells,
                 "A change is shaded when its 95% CI excludes zero. Paired: both runs scored the same item "
                 "ids (paired bootstrap CI, exact McNemar p). Unpaired: Newcombe's hybrid score interval.",
                 classes)


def _who(cmp: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = [(f"A: {cmp['a']['label']}", str(cmp["a"].get("title") or "")),
           (f"B: {cmp['b']['label']}", str(cmp["b"].get("title") or ""))]
    if cmp["only_in_a"]:
        out.append(("Only in A", ", ".join(cmp["only_in_a"])))
    if cmp["only_in_b"]:
        out.append(("Only in B", ", ".join(cmp["only_in_b"])))
    return out


def to_markdown(cmp: Mapping[str, Any]) -> str:
    lines = [f"# {cmp['title']}", ""] + [f"- **{k}**: {v}" for k, v in _who(cmp)] + [""]
    if not cmp["builds"]:
        return "\n".join(lines + ["No build name appears in both reports with a task accuracy.", ""])
    return "\n".join(lines + table(comparison_table(cmp)))


def to_html(cmp: Mapping[str, Any]) -> str:
    from html import escape

    who = "".join(f"<li><strong>{escape(k)}</strong>: {escape(v)}</li>" for k, v in _who(cmp))
    parts = [f"<h1>{escape(cmp['title'])}</h1>", f"<ul>{who}</ul>"]
    if cmp["builds"]:
        parts += [table_html(comparison_table(cmp)),
                  img_html(plots.compare_accuracy(cmp["builds"], cmp["a"]["label"], cmp["b"]["label"]),
                           "accuracy per build, A vs B")]
    else:
        parts.append("<p>No build name appears in both reports with a task accuracy.</p>")
    return page(cmp["title"], parts)
