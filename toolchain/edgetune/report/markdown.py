"""The Markdown report: the same sections as the HTML page, as GitHub-flavoured Markdown tables. Pure."""

from __future__ import annotations

from typing import Any

from edgetune.report import finetune, sections
from edgetune.report.bench_section import standard_benchmarks_table
from edgetune.report.recommend import COMPUTED, recommendation
from edgetune.report.schema import Context, Recommendation, Report
from edgetune.report.sections import ReportLike, Table
from edgetune.report.winback import winback_table

SUBJECT_ROWS = 20  # the Markdown report lists the subjects with the largest drops; the HTML page lists all
TEXT_CHARS = 160


def cell(text: str, max_chars: int | None = None) -> str:
    text = " ".join(str(text).split())
    if max_chars and len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text.replace("|", "\\|")


def table(t: Table, *, heading: str = "##", max_chars: int | None = TEXT_CHARS) -> list[str]:
    lines = [f"{heading} {t.title}", "", "| " + " | ".join(map(cell, t.columns)) + " |",
             "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(cell(c, max_chars) for c in row) + " |" for row in t.rows]
    return lines + ([""] + [t.note] if t.note else []) + [""]


def recommendation_lines(rec: Recommendation | None) -> list[str]:
    if rec is None:
        return []
    lines = [f"**Recommended build: {rec.quant or 'none'}.** {rec.reason or ''}".rstrip()]
    if rec.source == COMPUTED:
        lines.append(f"Rule: {rec.rule}.")
        lines += [f"- {name}: {why}" for name, why in (rec.excluded or {}).items()]
    return lines + [""]


def context_items(context: Context) -> list[tuple[str, Any]]:
    """The context's plain values in the report's order (sections such as task_metric are shown elsewhere)."""
    shown = context.model_dump(by_alias=True, exclude_unset=True)
    return [(k, v) for k, v in shown.items() if not isinstance(v, (dict, list))]


def finetune_lines(report: Report) -> list[str]:
    """The report's first section: did the fine-tune work (report.finetune)."""
    ft = report.finetune
    if ft is None:
        return []
    lines = ["## Did the fine-tune work?", "", f"**{finetune.headline(ft)}**", ""]
    if ft.causes:
        lines += ["Likely causes (the tutorial's checklist, with this run's evidence):", ""]
        lines += [f"{k}. {cell(c)}" for k, c in enumerate(ft.causes, 1)] + [""]
    for t in (finetune.examples_table(ft), finetune.forms_table(report), finetune.curve_table(ft)):
        if t is not None:
            lines += table(t, heading="###")
    if (loss := finetune.loss_line(ft)) is not None:
        lines += [loss, ""]
    return lines


def to_markdown(report: ReportLike) -> str:
    """The whole Markdown report for a report (a dict is validated by report.schema once, here)."""
    report = Report.load(report)
    lines = [f"# {report.title}", ""]
    lines += finetune_lines(report)
    lines += [f"- **{k}**: {v}" for k, v in context_items(report.context)]
    lines.append("")
    lines += recommendation_lines(recommendation(report))
    for label, text in sections.summary(report):
        lines += [f"**{label}:** {text}", ""]
    for make in (sections.accuracy_table, sections.task_metric_table, sections.forgetting_overview):
        if (t := make(report)) is not None:
            lines += table(t)
    for t in sections.forgetting_tables(report):
        lines += table(t, heading="###")
    if (t := sections.subject_table(report, limit=SUBJECT_ROWS, changed_only=True)) is not None:
        lines += table(t, heading="###")
    for make in (standard_benchmarks_table, sections.fidelity_table, winback_table, sections.judge_table,
                 sections.device_table):
        if (t := make(report)) is not None:
            lines += table(t)
    prefix, flips = sections.flip_tables(report)
    if flips:
        lines += ["## Flipped items (vs the GPU build)", ""]
        if prefix:
            lines += [f"Every item's text starts with “{cell(prefix)}”; shown without it.", ""]
        for t in flips:
            lines += table(t, heading="###")
    return "\n".join(lines)
