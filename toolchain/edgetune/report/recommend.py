"""Which build to ship: the report's own `recommendation` when a stage wrote one, else edgetune's rule.

First the fine-tune itself: when the report's `finetune` check says the GPU build does not beat the base (or
cannot tell), there is nothing to ship yet (quant None), whatever the quants do. Otherwise the rule (`RULE`):
among GGUF builds, take the smallest file that fits the target (when the planner ran), whose fidelity gate
passed (only when fidelity was measured and the gates block: in `warn` mode, as the embedded 135M demo runs its
7B-calibrated gates, a failed gate is stated beside the pick, not disqualifying) and whose non-inferiority verdict against the GPU build is "not worse"
(report.verdict: the 95% CI of the paired difference lies above −margin). An "inconclusive" build is excluded
too: absence of evidence of a loss is not evidence of no loss. Every excluded build is listed with the reason.
Reads and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetune.report.sections import builds, mb, pct, per_build, pts_range, signed_pts
from edgetune.constants import GPU_BUILD
from edgetune.report.verdict import DEFAULT_MARGIN, NOT_WORSE, verdict_from_row

COMPUTED = "computed"
NOTHING_YET = "nothing to ship yet"
RULE = ("only when the GPU build beats the base: the smallest GGUF build that fits the target's usable RAM (when "
        "planned), whose fidelity gate passed (when fidelity was measured and gates block; in warn mode a failed "
        "gate is reported, not disqualifying) and whose task score is \"not worse\" than the GPU build's (the 95% "
        "CI of the paired difference lies above −margin)")


def resolve(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recommendation to show: the report's own (source "report"), or the computed one. A recommendation
    this module computed earlier (source "computed") is computed again, so it never goes stale."""
    given = report.get("recommendation")
    if isinstance(given, Mapping) and given.get("source") != COMPUTED:
        return {"source": "report", **given}
    return recommend(report)


def vs_gpu(report: Mapping[str, Any], row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A row's verdict against the GPU build: stored, or derived from the flip counts of an older report."""
    if isinstance(row.get("vs_gpu"), Mapping):
        return row["vs_gpu"]
    gpu = next((r for r in builds(report) if r["name"] == GPU_BUILD and "n" in r and "accuracy" in r), None)
    if gpu is None or "flips_lost" not in row:
        return None
    return verdict_from_row(row, gpu, report.get("margin", DEFAULT_MARGIN))


def _gate_failure(row: Mapping[str, Any], fidelity: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why the row's fidelity gate did not pass, or None when it passed (or fidelity was not measured)."""
    if not fidelity:
        return None
    gate = (fidelity.get(row["name"]) or {}).get("gate")
    if not isinstance(gate, Mapping) or "passed" not in gate:
        return "no fidelity gate result"
    if gate["passed"]:
        return None
    return "fidelity gate failed" + (f": {'; '.join(map(str, gate.get('reasons') or []))}"
                                     if gate.get("reasons") else "")


def _why_not(row: Mapping[str, Any], fidelity: Mapping[str, Mapping[str, Any]],
             v: Mapping[str, Any] | None, gates_block: bool) -> str | None:
    if not row.get("size_bytes"):
        return "size unknown"
    plan = row.get("plan")
    if isinstance(plan, Mapping) and plan.get("status") not in (None, "fits"):
        return f"does not fit the target ({plan['status']}: needs {mb(plan.get('need_bytes') or 0)})"
    gate = _gate_failure(row, fidelity)
    if gate is not None and gates_block:
        return gate
    if not isinstance(v, Mapping) or not v.get("ci95"):
        return "no paired accuracy comparison with the GPU build"
    if v["verdict"] != NOT_WORSE:
        need = f"; about {v['n_needed']:,} held-out items would decide it" if v.get("n_needed") else ""
        return (f"{v['verdict']} vs the GPU build: {signed_pts(v['diff'])}, 95% CI {pts_range(v['ci95'])}, "
                f"margin {100 * v['margin']:.1f} pts (n={v['n']}{need})")
    return None


def recommend(report: Mapping[str, Any]) -> dict[str, Any]:
    """{"quant": name or None, "reason", "rule", "source": "computed", "excluded": {name: why}}."""
    fidelity = per_build(report, "fidelity")
    candidates = [r for r in builds(report) if r.get("kind") == "GGUF"]
    out: dict[str, Any] = {"rule": RULE, "source": COMPUTED, "margin": report.get("margin", DEFAULT_MARGIN)}
    ft = report.get("finetune")
    if isinstance(ft, Mapping) and not ft.get("worked"):
        why = f"the fine-tune did not beat the base ({ft.get('verdict')})"
        return {**out, "quant": None, "excluded": {r["name"]: why for r in candidates},
                "reason": f"{NOTHING_YET}: the GPU build does not beat the base on the held-out task "
                          f"({ft.get('verdict')}); fix the fine-tune before choosing a quant"}
    verdicts = {r["name"]: vs_gpu(report, r) for r in candidates}
    gates_block = (report.get("context") or {}).get("gate_mode") != "warn"
    excluded = {r["name"]: why for r in candidates
                if (why := _why_not(r, fidelity, verdicts[r["name"]], gates_block)) is not None}
    eligible = sorted((r for r in candidates if r["name"] not in excluded), key=lambda r: r["size_bytes"])
    out["excluded"] = excluded
    if not candidates:
        return {**out, "quant": None, "reason": "the report has no GGUF builds"}
    if not eligible:
        return {**out, "quant": None, "reason": "no GGUF build meets the rule: " + "; ".join(
            f"{name}: {why.split(':')[0]}" for name, why in excluded.items())}
    best = eligible[0]
    v = verdicts[best["name"]]
    failed = _gate_failure(best, fidelity)
    gate = "" if not fidelity else (" and its fidelity gate passed" if failed is None else
                                    f"; its {failed} (gates in warn mode: reported, not disqualifying)")
    reason = (f"{best['name']} is the smallest build shown \"not worse\" than the GPU build "
              f"({mb(best['size_bytes'])}): accuracy {pct(best.get('accuracy'))}, {signed_pts(v['diff'])} vs the "
              f"GPU build (95% CI {pts_range(v['ci95'])}, above the −{100 * v['margin']:.1f} pts margin, "
              f"n={v['n']}){gate}")
    return {**out, "quant": best["name"], "reason": reason}
