"""The HTML report: one self-contained page. CSS is inline, plots are inline base64 PNGs, and a
Content-Security-Policy forbids every fetch, so the page makes no request of any kind (no fonts, scripts or
images from anywhere). Pure: returns a string.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from html import escape

from edgetune.report import finetune, plots, sections
from edgetune.report.bench_section import standard_benchmarks_table
from edgetune.report.markdown import context_items
from edgetune.report.recommend import COMPUTED, recommendation
from edgetune.report.schema import Context, Recommendation, Report
from edgetune.report.sections import ReportLike, Table
from edgetune.report.winback import winback_table

# Only inline styles and data: images; no scripts, fonts, frames, connections or form targets.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.text{max-width:36rem}
tr.worse td{background:#ffebe9}tr.better td{background:#dafbe1}tr.fail td{background:#ffebe9}
.note{color:#57606a;font-size:.85rem;max-width:60rem}
.rec{border:2px solid #2da44e;border-radius:6px;padding:.6rem 1rem;background:#f6fff8;margin:1rem 0}
.rec.none{border-color:#cf222e;background:#fff8f8}
dl.ctx{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;font-size:.9rem}
dl.ctx dt{font-weight:600}dl.ctx dd{margin:0}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:.85rem}details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
"""


def table_html(t: Table, *, heading: str = "h2") -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    text_col = t.columns.index("text") if "text" in t.columns else -1
    body = []
    for i, row in enumerate(t.rows):
        cls = t.row_classes[i] if i < len(t.row_classes) and t.row_classes[i] else ""
        cells = "".join(f'<td class="text">{escape(c)}</td>' if j == text_col else f"<td>{escape(c)}</td>"
                        for j, c in enumerate(row))
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    title = f"<{heading}>{escape(t.title)}</{heading}>" if heading else ""
    return (f'<section id="{escape(t.key)}">{title}<table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>{note}</section>")


def img_html(png: bytes | None, alt: str, caption: str = "") -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def page(title: str, parts: Iterable[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(p for p in parts if p) + "</body></html>\n")


def context_html(context: Context) -> str:
    items = context_items(context)
    if not items:
        return ""
    return '<dl class="ctx">' + "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>"
                                       for k, v in items) + "</dl>"


def recommendation_html(rec: Recommendation | None) -> str:
    if rec is None:
        return ""
    chosen = rec.quant
    parts = [f'<div class="rec{"" if chosen else " none"}" id="recommendation">',
             (f"<strong>Recommended build: {escape(str(chosen or 'none'))}.</strong> "
              f"{escape(str(rec.reason or ''))}")]
    if rec.source == COMPUTED:
        parts.append(f'<p class="note">Chosen by edgetune\'s rule: {escape(rec.rule or "")}.</p>')
        excluded = rec.excluded or {}
        if excluded:
            parts.append("<ul class=\"note\">" + "".join(f"<li>{escape(n)}: {escape(w)}</li>"
                                                         for n, w in excluded.items()) + "</ul>")
    else:
        parts.append('<p class="note">As recorded in the report.</p>')
    return "".join(parts) + "</div>"


def finetune_html(report: Report) -> str:
    """The page's first section: did the fine-tune work (report.finetune)."""
    ft = report.finetune
    if ft is None:
        return ""
    cls = "rec" if ft.worked else "rec none"
    parts = [f'<section id="finetune"><h2>Did the fine-tune work?</h2><div class="{cls}">'
             f"<strong>{escape(finetune.headline(ft))}</strong></div>"]
    if ft.causes:
        parts.append("<p>Likely causes (the tutorial's checklist, with this run's evidence):</p><ol>"
                     + "".join(f"<li>{escape(c)}</li>" for c in ft.causes) + "</ol>")
    parts += [table_html(t, heading="h3") for t in (finetune.examples_table(ft), finetune.forms_table(report),
                                                     finetune.curve_table(ft)) if t is not None]
    parts.append(img_html(plots.training_curve(ft), "training loss and held-out exact match by step",
                          "Training loss by optimizer step; dots: held-out exact match after each epoch."))
    return "".join(parts) + "</section>"


def to_html(report: ReportLike) -> str:
    """The whole report page for a report (as `render.complete` returns it; a dict is validated by report.schema
    once, here)."""
    report = Report.load(report)
    parts = [f"<h1>{escape(report.title)}</h1>", finetune_html(report), context_html(report.context),
             recommendation_html(recommendation(report))]
    parts += [f"<p><strong>{escape(label)}:</strong> {escape(text)}</p>"
              for label, text in sections.summary(report)]
    if (t := sections.accuracy_table(report)) is not None:
        parts += [table_html(t), img_html(plots.accuracy_vs_size(report), "accuracy vs size per build",
                                          "Task accuracy per build against its size; error bars are 95% "
                                          "Wilson intervals, the band is the GPU build's.")]
    if (t := sections.fidelity_table(report)) is not None:
        parts += [table_html(t), img_html(plots.kld_per_build(report), "KL divergence per build")]
        pareto = plots.pareto_rows(report)
        # only where a build tries to win back quantization's cost (a searched mix, a recovery adapter): the
        # default report keeps its figures
        if any(r["kind"] in ("searched mix", "recovery adapter") for r in pareto):
            parts.append(img_html(plots.pareto(pareto), "accuracy and KLD vs file size",
                                  "Each GGUF's held-out accuracy (left) and mean KLD to the GPU build (right) "
                                  "against its file size; the step line is the Pareto front (no smaller file "
                                  "does better)."))
    for make in (sections.task_metric_table, winback_table, sections.judge_table, standard_benchmarks_table):
        if (t := make(report)) is not None:
            parts.append(table_html(t))
    if (t := sections.device_table(report)) is not None:
        parts += [table_html(t), img_html(plots.measured_vs_predicted(report),
                                          "measured vs predicted tokens per second")]
    if (t := sections.forgetting_overview(report)) is not None:
        parts.append(table_html(t))
    parts += [f"<details><summary>{escape(t.title)}</summary>{table_html(t, heading='')}</details>"
              for t in sections.forgetting_tables(report)]
    if (t := sections.subject_table(report)) is not None:
        parts.append(f"<details><summary>{escape(t.title)}</summary>{table_html(t, heading='')}</details>")
    prefix, flips = sections.flip_tables(report)
    if flips:
        parts.append('<section id="flips"><h2>Flipped items (vs the GPU build)</h2>')
        if prefix:
            parts.append(f'<p class="note">Every item\'s text starts with “{escape(prefix)}”; '
                         "shown without it.</p>")
        parts += [f"<details><summary>{escape(t.title)}</summary>{table_html(t, heading='')}</details>"
                  for t in flips]
        parts.append("</section>")
    return page(report.title, parts)
