"""Which build to ship: the report's own `recommendation` when a stage wrote one, else edgetune's rule.

The rule (`RULE`): among GGUF builds, take the smallest file that fits the target (when the planner ran), whose
fidelity gate passed (only when fidelity was measured) and whose task accuracy is not significantly worse than the GPU build's (exact McNemar
p ≥ 0.05, or a change that is not a loss). Every excluded build is listed with the reason. Reads and writes
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetune.report.sections import builds, mb, pct, per_build, signed_pts

COMPUTED = "computed"
ALPHA = 0.05
RULE = ("smallest GGUF build that fits the target's usable RAM (when planned), whose fidelity gate passed (when "
        "fidelity was measured) and whose task accuracy is not significantly worse than the GPU build's (exact "
        f"McNemar p ≥ {ALPHA})")


def resolve(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recommendation to show: the report's own (source "report"), or the computed one. A recommendation
    this module computed earlier (source "computed") is computed again, so it never goes stale."""
    given = report.get("recommendation")
    if isinstance(given, Mapping) and given.get("source") != COMPUTED:
        return {"source": "report", **given}
    return recommend(report)


def _why_not(row: Mapping[str, Any], fidelity: Mapping[str, Mapping[str, Any]]) -> str | None:
    if not row.get("size_bytes"):
        return "size unknown"
    plan = row.get("plan")
    if isinstance(plan, Mapping) and plan.get("status") not in (None, "fits"):
        return f"does not fit the target ({plan['status']}: needs {mb(plan.get('need_bytes') or 0)})"
    if fidelity:
        gate = (fidelity.get(row["name"]) or {}).get("gate")
        if not isinstance(gate, Mapping) or "passed" not in gate:
            return "no fidelity gate result"
        if not gate["passed"]:
            return "fidelity gate failed" + (f": {'; '.join(map(str, gate.get('reasons') or []))}"
                                             if gate.get("reasons") else "")
    if "mcnemar_p" not in row or "delta_vs_gpu" not in row:
        return "no paired accuracy comparison with the GPU build"
    if row["mcnemar_p"] < ALPHA and row["delta_vs_gpu"] < 0:
        return (f"significantly worse than the GPU build ({signed_pts(row['delta_vs_gpu'])}, "
                f"McNemar p={row['mcnemar_p']:.3f})")
    return None


def recommend(report: Mapping[str, Any]) -> dict[str, Any]:
    """{"quant": name or None, "reason", "rule", "source": "computed", "excluded": {name: why}}."""
    fidelity = per_build(report, "fidelity")
    candidates = [r for r in builds(report) if r.get("kind") == "GGUF"]
    excluded = {r["name"]: why for r in candidates if (why := _why_not(r, fidelity)) is not None}
    eligible = sorted((r for r in candidates if r["name"] not in excluded), key=lambda r: r["size_bytes"])
    out: dict[str, Any] = {"rule": RULE, "source": COMPUTED, "excluded": excluded}
    if not candidates:
        return {**out, "quant": None, "reason": "the report has no GGUF builds"}
    if not eligible:
        return {**out, "quant": None, "reason": "no GGUF build meets the rule; see the excluded builds"}
    best = eligible[0]
    gate = " and its fidelity gate passed" if fidelity else ""
    reason = (f"{best['name']} is the smallest eligible build ({mb(best['size_bytes'])}): accuracy "
              f"{pct(best.get('accuracy'))}, {signed_pts(best['delta_vs_gpu'])} vs the GPU build "
              f"(McNemar p={best['mcnemar_p']:.3f}, not a significant loss){gate}")
    return {**out, "quant": best["name"], "reason": reason}
