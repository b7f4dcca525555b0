"""What a report shows, independent of its format: summary lines and tables of formatted cells, which the
Markdown and HTML writers both render. Each section takes the report as report.schema's `Report` (a dict is
validated first, so the writers parse it once and pass the typed report down). Optional sections (fidelity,
judge, device) appear only when the report has them, either on each build row (`row.fidelity`) or top-level by
build name (`report.fidelity["Q4_0"]`). Reads and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgetune.constants import BASE_BUILD, GPU_BUILD
from edgetune.report.schema import BuildRow, DeviceRun, FlipDetail, Forgetting, Pairwise, Report, TaskMetric

ReportLike = Mapping[str, Any] | Report
T = TypeVar("T")

PREFIX_MIN_CHARS = 20  # a prompt prefix shared by every flipped item is shown once when at least this long


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    row_classes: list[str] = field(default_factory=list)  # "worse", "better", "fail", "" per row (HTML only)


# --- formatting ------------------------------------------------------------------------------------------

def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def signed_pts(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f} pts"


def pct_range(ci: Sequence[float] | None) -> str:
    return "–" if not ci else f"{pct(ci[0])} – {pct(ci[1])}"


def pts_range(ci: Sequence[float] | None) -> str:
    return "–" if not ci else f"{100 * ci[0]:+.1f} – {100 * ci[1]:+.1f} pts"


def mb(size_bytes: float | None) -> str:
    return f"{size_bytes / 1e6:.1f} MB" if size_bytes else "–"


def num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def share_or_count(x: Any) -> str:
    """Pairwise judge outcomes arrive as counts (int) or shares (float in [0, 1])."""
    return pct(x) if isinstance(x, float) and 0 <= x <= 1 else num(x)


# --- access ----------------------------------------------------------------------------------------------

def builds(report: ReportLike) -> list[BuildRow]:
    return list(Report.load(report).builds)


def per_build(on_rows: Mapping[str, T | None], top: Mapping[str, T] | None) -> dict[str, T]:
    """build name → an optional section, from the build rows (`on_rows`, build name → the row's section) or
    the report's top-level mapping by build name, in display order."""
    found = {name: v for name, v in on_rows.items() if v is not None}
    found.update({name: v for name, v in (top or {}).items() if name not in found})
    return found


def row_class(row: BuildRow | Forgetting) -> str:
    verdict = row.vs_gpu.verdict if isinstance(row, BuildRow) and row.vs_gpu is not None else None
    if verdict is not None:  # the task rows: shaded by the non-inferiority verdict
        return {"worse": "worse", "not worse": "better"}.get(verdict, "")
    p, delta = row.mcnemar_p, row.delta_vs_gpu
    if p is None or delta is None or p >= 0.05:
        return ""
    return "worse" if delta < 0 else "better"


# --- sections --------------------------------------------------------------------------------------------

def summary(report: ReportLike) -> list[tuple[str, str]]:
    rep = Report.load(report)
    b, g = rep.row(BASE_BUILD), rep.row(GPU_BUILD)
    out = []
    if rep.finetune is not None:
        pass  # the fine-tune section leads the report (report.finetune.headline)
    elif (b is not None and g is not None and b.accuracy is not None and g.accuracy is not None
          and b.ci95 and g.ci95):
        verdict = "beats" if g.ci95[0] > b.ci95[1] else "does not clearly beat"
        diff = signed_pts(g.accuracy - b.accuracy)
        change = f"{pct(b.accuracy)} → {pct(g.accuracy)} ({diff}, n={g.n})"
        out.append(("Fine-tune", f"the GPU build {verdict} the base on held-out items: {change}."))
    edge = [r for r in rep.builds if r.kind == "GGUF" and r.delta_vs_gpu is not None]
    if edge:
        out.append(("Lost to conversion and quantization (vs the GPU build)", ", ".join(
            f"{r.name} {signed_pts(r.delta_vs_gpu)}" for r in edge) + "."))
    forgot = [f"{SET_TITLES.get(s, s)} {signed_pts(f.delta_vs_base)}"
              for s, f in (forgetting_sets(g) if g is not None else {}).items() if f.delta_vs_base is not None]
    if forgot:
        out.append(("Forgetting (GPU build vs the base, acc)", ", ".join(forgot) + "."))
    if lengths := lengths_line(report):
        out.append(("Lengths", lengths))
    return out


def lengths_line(report: ReportLike) -> str | None:
    """How many training examples were shortened or dropped, and how many held-out items exceed the board's
    context (pipeline: train/lengths.py, evals/context.py); None for reports from before these checks."""
    lengths = Report.load(report).lengths
    if lengths is None:
        return None
    parts = []
    if (train := lengths.train) is not None:
        cut = [f"{train.shortened} shortened in the prompt (by up to {train.most_cut} tokens)" if train.shortened
               else "", f"{train.dropped} dropped" if train.dropped else ""]
        done = ", ".join(c for c in cut if c) or "none cut"
        parts.append(f"training examples up to {train.max_length} tokens ({train.why}): {done}")
    if lengths.context is not None:
        parts.append(lengths.context.summary)
    return "; ".join(parts) + "." if parts else None


def accuracy_table(report: ReportLike) -> Table | None:
    rep = Report.load(report)
    rows = [r for r in rep.builds if r.accuracy is not None]
    if not rows:
        return None
    cells = []
    for r in rows:
        flips = f"{len(r.flips_lost)} / {len(r.flips_gained or [])}" if r.flips_lost is not None else "–"
        p = f"{r.mcnemar_p:.3f}" if r.mcnemar_p is not None else "–"
        v = r.vs_gpu
        cells.append([r.name, r.kind or "–", mb(r.size_bytes), pct(r.accuracy),
                      pct_range(r.ci95), signed_pts(r.delta_vs_gpu),
                      pts_range(r.delta_vs_gpu_ci95), flips, p, v.verdict if v else "–",
                      pts_range(v.ci95 if v else None),
                      "–" if v is None or v.mdd is None else f"{100 * v.mdd:.1f} pts",
                      "–" if v is None or v.n_needed is None else f"{v.n_needed:,}"])
    margin = rep.margin
    return Table("accuracy", "Task accuracy (held-out)",
                 ["build", "kind", "size", "accuracy", "95% CI", "vs GPU build", "95% CI of the change",
                  "lost / gained", "McNemar p", "verdict vs GPU build"
                  + (f" (margin {100 * margin:.1f} pts)" if margin is not None else ""),
                  "verdict CI", "min. detectable", "n needed"], cells,
                 "Accuracy lost to conversion and quantization is the change against the GPU build (the "
                 "merged model in transformers), paired item by item on the same token ids. \"Lost\" counts "
                 "items the GPU build got right and this build got wrong; McNemar's exact test asks "
                 "whether the flips could be chance (p ≥ 0.05: no evidence of a loss). Accuracy CIs are "
                 "Wilson score intervals; the CI of the change is a paired bootstrap over items "
                 "(10,000 resamples, percentile). The verdict asks whether a build is no worse than the GPU "
                 "build by more than the margin (eval.margin): \"not worse\" when the verdict CI (Newcombe's "
                 "paired interval for 0/1 scores, a paired bootstrap for graded ones) lies above −margin, "
                 "\"worse\" when it lies below, \"inconclusive\" otherwise, with the held-out items that "
                 "would decide it at the rates seen. \"Min. detectable\" is the smallest true change this n "
                 "finds 80% of the time (5% two-sided).",
                 [row_class(r) for r in rows])


METRIC_SCORES = {"label": "label match", "exact": "exact match", "contains": "contains the reference",
                 "regex": "regex capture matches", "json": "JSON fields matching", "number": "final number matches",
                 "text": "chrF"}


def task_metric_table(report: ReportLike) -> Table | None:
    """Per build: the task metric's mean score, the strict accuracy and the answers cut off at the token budget
    (a truncated answer is a budget problem, not a model problem: raise eval.max_new_tokens)."""
    rep = Report.load(report)
    rows = [r for r in rep.builds if r.score is not None and r.metric is not None]
    if not rows:
        return None
    plan = rep.context.task_metric or TaskMetric()
    metric = rows[0].metric or ""
    cells = [[r.name, r.metric or "", f"{r.score:.3f}", pct(r.accuracy),
              f"{r.truncated if r.truncated is not None else 0} / {r.n if r.n is not None else '–'}"] for r in rows]
    how = f"Metric {metric} ({plan.why}); " if plan.why else f"Metric {metric}; "
    budget = (f"max_new_tokens {plan.max_new_tokens}"
              + (" (derived from the references' token lengths)" if plan.max_new_tokens_derived else "")
              + ". ") if plan.max_new_tokens else ""
    return Table("task-metric", "Task metric (held-out)",
                 ["build", "metric", f"score ({METRIC_SCORES.get(metric, metric)})", "accuracy (all correct)",
                  "truncated"], cells,
                 how + budget + "The score is the mean per-item value in [0, 1]; accuracy counts items fully "
                 "correct. Truncated answers stopped at the token budget without a stop token.")


SET_TITLES = {"mmlu": "MMLU", "arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge", "hellaswag": "HellaSwag",
              "piqa": "PIQA", "winogrande": "WinoGrande"}
FORGETTING_NOTE = ("Log-likelihood multiple choice on fixed, seeded subsets, every build on the same items and "
                   "token ids. acc picks the choice with the highest summed log-probability, acc_norm the highest "
                   "per character (WinoGrande scores one shared continuation, so both are equal). CIs are 95% "
                   "Wilson intervals; \"lost / gained\" are items the GPU build got right and this build wrong, "
                   "and the reverse, with McNemar's exact p.")


def forgetting_sets(row: BuildRow) -> dict[str, Forgetting]:
    """Set name → a build row's forgetting figures; a report from before the other sets keeps MMLU's under
    `row.mmlu`."""
    if row.forgetting is not None:
        return dict(row.forgetting)
    return {"mmlu": row.mmlu} if row.mmlu is not None else {}


def _set_names(report: Report) -> list[str]:
    return list(dict.fromkeys(name for r in report.builds for name in forgetting_sets(r)))


def _flips(f: Forgetting) -> str:
    return f"{len(f.flips_lost)} / {len(f.flips_gained or [])}" if f.flips_lost is not None else "–"


def forgetting_overview(report: ReportLike) -> Table | None:
    """acc on every set per build, with its change against the base: the whole forgetting check at a glance."""
    rep = Report.load(report)
    names = _set_names(rep)
    rows = [r for r in rep.builds if forgetting_sets(r)]
    if not rows:
        return None
    cells = []
    for r in rows:
        sets = forgetting_sets(r)
        cells.append([r.name] + [
            "–" if s not in sets else pct(sets[s].acc) + (
                f" ({signed_pts(sets[s].delta_vs_base)})" if sets[s].delta_vs_base is not None else "")
            for s in names])
    n = {s: next((forgetting_sets(r)[s].n for r in rows if s in forgetting_sets(r)), None) for s in names}
    return Table("forgetting", "Forgetting check (log-likelihood multiple choice; acc, change vs the base)",
                 ["build", *(f"{SET_TITLES.get(s, s)} (n={n[s]})" for s in names)], cells,
                 "Small subsets: a change is a finding only when its detail table below gives McNemar p < 0.05. "
                 + FORGETTING_NOTE)


def forgetting_tables(report: ReportLike) -> list[Table]:
    """One table per forgetting set: acc and acc_norm with CIs, change vs the base, paired flips and the
    change vs the GPU build."""
    rep = Report.load(report)
    tables = []
    for s in _set_names(rep):
        rows = [(r.name, forgetting_sets(r)[s]) for r in rep.builds if s in forgetting_sets(r)]
        cells = [[name, str(f.n), pct(f.acc), pct_range(f.ci95), pct(f.acc_norm),
                  pct_range(f.ci95_norm), signed_pts(f.delta_vs_base), signed_pts(f.delta_vs_gpu),
                  _flips(f), f"{f.mcnemar_p:.3f}" if f.mcnemar_p is not None else "–"] for name, f in rows]
        tables.append(Table(f"forgetting-{s}", f"Forgetting: {SET_TITLES.get(s, s)}",
                            ["build", "n", "acc", "95% CI", "acc_norm", "95% CI (norm)", "vs base", "vs GPU build",
                             "lost / gained", "McNemar p"], cells, "",
                            [row_class(f) for _, f in rows]))
    return tables


def forgetting_table(report: ReportLike) -> Table | None:
    """The overview (kept under its old name for callers that show one table)."""
    return forgetting_overview(report)


def subject_table(report: ReportLike, limit: int | None = None,
                  changed_only: bool = False) -> Table | None:
    """Per-subject MMLU accuracy of the base and each build's change against it, worst change first;
    `changed_only` leaves out subjects no build changed."""
    rep = Report.load(report)
    subjects_of = {r.name: mmlu.per_subject for r in rep.builds
                   if (mmlu := forgetting_sets(r).get("mmlu")) is not None and mmlu.per_subject is not None}
    base_subjects = subjects_of.get(BASE_BUILD)
    others = [r.name for r in rep.builds if r.name in subjects_of and r.name != BASE_BUILD]
    if base_subjects is None or not others:
        return None

    def deltas(subject: str) -> list[float | None]:
        return [s.delta_vs_base if (s := subjects_of[o].get(subject)) is not None else None for o in others]

    subjects = sorted(base_subjects, key=lambda s: (min((d for d in deltas(s) if d is not None), default=0.0), s))
    candidates = [s for s in subjects if any(deltas(s))] if changed_only else subjects
    shown = candidates if limit is None else candidates[:limit]
    cells = [[s, str(base_subjects[s].n), pct(base_subjects[s].acc)]
             + [signed_pts(d) for d in deltas(s)] for s in shown]
    note = "Per-subject changes rest on a handful of items each: read them as where to look, not as findings."
    if len(shown) < len(subjects):
        note += f" Showing {len(shown)} of {len(subjects)} subjects" + (
            ", those some build changed, largest drops first." if changed_only else ", largest drops first.")
    return Table("subjects", "Forgetting by MMLU subject (change vs the base)",
                 ["subject", "n", "base acc", *others], cells, note)


def fidelity_table(report: ReportLike) -> Table | None:
    rep = Report.load(report)
    fid = per_build({r.name: r.fidelity for r in rep.builds}, rep.fidelity)
    if not fid:
        return None
    cells, classes = [], []
    for name, f in fid.items():
        passed = f.gate.passed if f.gate is not None else None
        cells.append([name, num(f.kld_mean, 4), num(f.kld_p99, 4), pct(f.top1_agreement),
                      pct(f.greedy_agreement), pct(f.stop_agreement),
                      "–" if passed is None else ("passed" if passed else "FAILED"),
                      "; ".join(map(str, f.gate.reasons if f.gate is not None else [])) or "–"])
        classes.append("fail" if passed is False else "")
    return Table("fidelity", "Fidelity to the GPU build (same token ids)",
                 ["build", "KLD mean", "KLD p99", "top-1 agreement", "greedy agreement", "stop agreement",
                  "gate", "reasons"], cells,
                 "KL(GPU build ‖ this build) of next-token distributions over every position; agreement "
                 "shares of the top-1 token, the greedy continuation and where generation stops.", classes)


def judge_table(report: ReportLike) -> Table | None:
    rep = Report.load(report)
    judge = per_build({r.name: r.judge for r in rep.builds}, rep.judge)
    if not judge:
        return None
    cells = []
    for name, j in judge.items():
        pw = j.pairwise or Pairwise()
        agree = j.reliability.metric_agreement if j.reliability is not None else None
        vs = j.vs_gpu
        rho = j.metric_spearman
        cells.append([name, num(j.mean_score) + (f" (n={j.n_valid})" if j.n_valid else ""),
                      "–" if not j.ci95 else f"{num(j.ci95[0])} – {num(j.ci95[1])}",
                      "–" if vs is None or not vs.ci95 else
                      f"{vs.diff:+.2f} ({vs.ci95[0]:+.2f} – {vs.ci95[1]:+.2f})",
                      share_or_count(pw.win), share_or_count(pw.tie), share_or_count(pw.loss),
                      pct(pw.position_flip_rate),
                      f"{pct(agree.agreement_decisive)} (n={agree.n_decisive})"
                      if agree is not None and agree.agreement_decisive is not None else "–",
                      f"none: every rating {num(j.constant_rating)}" if j.constant_rating is not None
                      else "–" if rho is None else f"{rho:+.2f} (n={j.n_metric})"])
    note = ("Mean score: the pointwise judge's 1-10 rating of each build's answer against the reference (95% CI "
            "over items; Δ vs GPU: paired difference on the same items). Pairwise outcomes are against the GPU "
            "build; the position flip rate is how often the judge changed its verdict when the two answers "
            "swapped places (high: the verdicts are noise). \"Agrees with the metric\" is the share of items "
            "where the task metric prefers one build and the judge picks the same one (chance is about a third); "
            "\"rating ~ metric\" is the rank correlation of the pointwise ratings with the task metric's "
            "per-item scores (near 0: the ratings do not follow the reference metric; \"every rating N\": the judge "
            "gave every answer the same rating, so its scores say nothing about any build).")
    if any(j.reliability is not None and j.reliability.embedded_judge for j in judge.values()):
        note = ("Warning: the judge is the embedded SmolLM2-135M (no `judge:` endpoint configured), a smoke "
                "test, not evidence; set judge.base_url / judge.model to a capable model. ") + note
    return Table("judge", "LLM judge", ["build", "mean score", "95% CI", "Δ vs GPU (95% CI)", "win", "tie", "loss",
                                        "position flip rate", "agrees with the metric", "rating ~ metric"],
                 cells, note)


def device_runs(report: ReportLike) -> dict[str, DeviceRun]:
    """Device measurements by row name: on the build rows, or the report's top-level `device` mapping."""
    rep = Report.load(report)
    return per_build({r.name: r.device for r in rep.builds}, rep.device)


def device_table(report: ReportLike) -> Table | None:
    dev = device_runs(report)
    if not dev:
        return None

    def measured_vs_pred(m: float | None, p: float | None) -> str:
        return num(m, 3) + (f" / {num(p, 3)} ({m / p:.0%})" if m and p else "")

    def accuracy(d: DeviceRun) -> str:
        if d.accuracy is None:
            return "–"
        flips = f", lost/gained vs GPU {d.flips_lost}/{d.flips_gained}" if d.flips_lost is not None else ""
        return f"{pct(d.accuracy)} (n={d.n}{flips})"

    def bench(d: DeviceRun, kind: str) -> str:
        b = d.bench
        if b is None:
            return "–"
        if b.error and not (b.prompt_tps or b.gen_tps):
            return f"none: {b.error}"
        if kind == "pp":
            return f"pp{b.n_prompt}: " + measured_vs_pred(b.prompt_tps, b.predicted_prompt_tps)
        return f"tg{b.n_gen}: " + measured_vs_pred(b.gen_tps, b.predicted_gen_tps)

    return Table("device", "On the device",
                 ["build", "accuracy", "prompt tok/s (measured / predicted)",
                  "generation tok/s (measured / predicted)", "llama-bench prompt (measured / predicted)",
                  "llama-bench generation (measured / predicted)", "TTFT p50", "TTFT p95", "peak RSS"],
                 [[name, accuracy(d), measured_vs_pred(d.prompt_tps, d.predicted_prompt_tps),
                   measured_vs_pred(d.gen_tps, d.predicted_gen_tps), bench(d, "pp"), bench(d, "tg"),
                   f"{num(d.ttft_p50_s)} s" if d.ttft_p50_s is not None else "–",
                   f"{num(d.ttft_p95_s)} s" if d.ttft_p95_s is not None else "–",
                   f"{num(d.peak_rss_mb, 4)} MB" if d.peak_rss_mb is not None else "–"]
                  for name, d in dev.items()])


def _common_prefix(texts: Sequence[str]) -> str:
    if len(texts) < 2:
        return ""
    first, last = min(texts), max(texts)
    n = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    cut = max(first.rfind(" ", 0, n + 1), first.rfind("\n", 0, n + 1)) + 1
    return first[:cut] if cut >= PREFIX_MIN_CHARS else ""


def flip_tables(report: ReportLike, limit: int = 20) -> tuple[str, list[Table]]:
    """Per build and direction, the flipped items against the GPU build, with text and outputs when the
    report holds them. Returns the prompt prefix every shown item shares (shown once, cut from each) and the
    tables."""
    rep = Report.load(report)
    details = [d for r in rep.builds for side in ("lost", "gained")
               for d in (r.flipped_items or {}).get(side, [])]
    prefix = _common_prefix([d.text for d in details if d.text is not None])
    tables = []
    for r in rep.builds:
        for side, label in (("lost", "right on the GPU build, wrong here"),
                            ("gained", "wrong on the GPU build, right here")):
            ids = (r.flips_lost if side == "lost" else r.flips_gained) or []
            if not ids:
                continue
            shown = (r.flipped_items or {}).get(side) or [FlipDetail(id=i) for i in ids[:limit]]
            shown = shown[:limit]
            rest = len(ids) - len(shown)
            more = ", ".join(ids[len(shown):len(shown) + 50]) + (" …" if rest > 50 else "")
            tables.append(Table(
                f"flips-{r.name}-{side}", f"{r.name}: {len(ids)} {side} ({label})",
                ["item", "text", "reference", "GPU build said", "this build said"],
                [[d.id, d.text[len(prefix):] if d.text is not None else "–", num(d.reference),
                  num(d.gpu_output), num(d.output)] for d in shown],
                f"…and {rest} more: {more}" if rest > 0 else "",
                ["worse" if side == "lost" else "better"] * len(shown)))
    return prefix, tables
