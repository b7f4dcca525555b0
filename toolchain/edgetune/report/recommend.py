"""Which build to ship: the report's own `recommendation` when a stage wrote one, else edgetune's rule.

First the fine-tune itself: when the report's `finetune` check says the GPU build does not beat the base (or
cannot tell), there is nothing to ship yet (quant None), whatever the quants do. Otherwise the rule (`RULE`):
among GGUF builds, take the smallest file that fits the target (when the planner ran), whose fidelity gate
passed (only when fidelity was measured and the gates block: in `warn` mode, as the embedded 135M demo runs its
7B-calibrated gates, a failed gate is stated beside the pick, not disqualifying) and whose non-inferiority verdict against the GPU build is "not worse"
(report.verdict: the 95% CI of the paired difference lies above −margin). An "inconclusive" build is excluded
too: absence of evidence of a loss is not evidence of no loss. Every excluded build is listed with the reason.
Reads the report through its schema (report.schema); reads and writes nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetune.constants import GPU_BUILD
from edgetune.report.schema import BuildRow, Gate, Recommendation, Report, Verdict
from edgetune.report.sections import mb, pct, pts_range, signed_pts
from edgetune.report.verdict import DEFAULT_MARGIN, NOT_WORSE, verdict_from_row

COMPUTED = "computed"
NOTHING_YET = "nothing to ship yet"
RULE = ("only when the GPU build beats the base: the smallest GGUF build that fits the target's usable RAM (when "
        "planned), whose fidelity gate passed (when fidelity was measured and gates block; in warn mode a failed "
        "gate is reported, not disqualifying) and whose task score is \"not worse\" than the GPU build's (the 95% "
        "CI of the paired difference lies above −margin)")

ReportLike = Mapping[str, Any] | Report


def resolve(report: ReportLike) -> dict[str, Any] | None:
    """The recommendation to show: the report's own (source "report"), or the computed one. A recommendation
    this module computed earlier (source "computed") is computed again, so it never goes stale."""
    rep = Report.load(report)
    given = rep.recommendation
    if given is not None and given.source != COMPUTED:
        return {"source": "report", **given.model_dump(mode="json", by_alias=True, exclude_unset=True)}
    return recommend(rep)


def recommendation(report: ReportLike) -> Recommendation | None:
    """`resolve` as report.schema's Recommendation, for the writers."""
    rec = resolve(report)
    return None if rec is None else Recommendation.model_validate(rec)


def vs_gpu(report: Report, row: BuildRow) -> Verdict | None:
    """A row's verdict against the GPU build: stored, or derived from the flip counts of an older report."""
    if row.vs_gpu is not None:
        return row.vs_gpu
    gpu = next((r for r in report.builds if r.name == GPU_BUILD and r.n is not None and r.accuracy is not None),
               None)
    if gpu is None or row.flips_lost is None:
        return None
    margin = report.margin if report.margin is not None else DEFAULT_MARGIN
    return Verdict.model_validate(verdict_from_row(row.model_dump(exclude_unset=True),
                                                   gpu.model_dump(exclude_unset=True), margin))


def _gates(report: Report) -> dict[str, Gate | None]:
    """build name → its fidelity gate (None: fidelity measured without a gate result), for the builds whose
    fidelity was measured: on the build rows, or in a top-level `fidelity` section keyed by build name."""
    found: dict[str, Gate | None] = {r.name: r.fidelity.gate for r in report.builds if r.fidelity is not None}
    found.update({name: f.gate for name, f in (report.fidelity or {}).items() if name not in found})
    return found


def _gate_failure(row: BuildRow, gates: Mapping[str, Gate | None]) -> str | None:
    """Why the row's fidelity gate did not pass, or None when it passed (or fidelity was not measured)."""
    if not gates:
        return None
    gate = gates.get(row.name)
    if gate is None:
        return "no fidelity gate result"
    if gate.passed:
        return None
    return "fidelity gate failed" + (f": {'; '.join(map(str, gate.reasons))}" if gate.reasons else "")


def _why_not(row: BuildRow, gates: Mapping[str, Gate | None], v: Verdict | None, gates_block: bool) -> str | None:
    if not row.size_bytes:
        return "size unknown"
    plan = row.plan
    if plan is not None and plan.status not in (None, "fits"):
        return f"does not fit the target ({plan.status}: needs {mb(plan.need_bytes or 0)})"
    gate = _gate_failure(row, gates)
    if gate is not None and gates_block:
        return gate
    if v is None or not v.ci95:
        return "no paired accuracy comparison with the GPU build"
    if v.verdict != NOT_WORSE:
        need = f"; about {v.n_needed:,} held-out items would decide it" if v.n_needed else ""
        return (f"{v.verdict} vs the GPU build: {signed_pts(v.diff)}, 95% CI {pts_range(v.ci95)}, "
                f"margin {100 * (v.margin or 0):.1f} pts (n={v.n}{need})")
    return None


def recommend(report: ReportLike) -> dict[str, Any]:
    """{"quant": name or None, "reason", "rule", "source": "computed", "excluded": {name: why}}."""
    rep = Report.load(report)
    gates = _gates(rep)
    candidates = [r for r in rep.builds if r.kind == "GGUF"]
    out: dict[str, Any] = {"rule": RULE, "source": COMPUTED,
                           "margin": rep.margin if rep.margin is not None else DEFAULT_MARGIN}
    ft = rep.finetune
    if ft is not None and not ft.worked:
        why = f"the fine-tune did not beat the base ({ft.verdict})"
        return {**out, "quant": None, "excluded": {r.name: why for r in candidates},
                "reason": f"{NOTHING_YET}: the GPU build does not beat the base on the held-out task "
                          f"({ft.verdict}); fix the fine-tune before choosing a quant"}
    verdicts = {r.name: vs_gpu(rep, r) for r in candidates}
    gates_block = rep.context.gate_mode != "warn"
    excluded = {r.name: why_not for r in candidates
                if (why_not := _why_not(r, gates, verdicts[r.name], gates_block)) is not None}
    eligible = sorted((r for r in candidates if r.name not in excluded), key=lambda r: r.size_bytes or 0)
    out["excluded"] = excluded
    if not candidates:
        return {**out, "quant": None, "reason": "the report has no GGUF builds"}
    if not eligible:
        return {**out, "quant": None, "reason": "no GGUF build meets the rule: " + "; ".join(
            f"{name}: {why.split(':')[0]}" for name, why in excluded.items())}
    best = eligible[0]
    v = verdicts[best.name]
    assert v is not None and v.ci95 is not None  # _why_not excludes a build without a paired comparison
    failed = _gate_failure(best, gates)
    gate = "" if not gates else (" and its fidelity gate passed" if failed is None else
                                 f"; its {failed} (gates in warn mode: reported, not disqualifying)")
    reason = (f"{best.name} is the smallest build shown \"not worse\" than the GPU build "
              f"({mb(best.size_bytes)}): accuracy {pct(best.accuracy)}, {signed_pts(v.diff)} vs the "
              f"GPU build (95% CI {pts_range(v.ci95)}, above the −{100 * (v.margin or 0):.1f} pts margin, "
              f"n={v.n}){gate}")
    return {**out, "quant": best.name, "reason": reason}
