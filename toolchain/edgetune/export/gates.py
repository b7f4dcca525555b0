"""Fidelity gates: whether an edge build is close enough to the GPU build to ship.

Default thresholds: Q8_0 (KLD ≤ 0.002, top-1 ≥ 97.5%) and Q4_K_M (KLD ≤ 0.035, top-1 ≥ 91%) are the points
from llama.cpp's published KL-divergence table; the other types are edgetune's own interpolation between and
beyond those two points by bits per weight, not published figures. Every threshold is configurable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edgetune.constants import Quant

DEFAULT_KLD_MAX: dict[Quant, float] = {
    Quant.F16: 0.0005, Quant.Q8_0: 0.002, Quant.Q6_K: 0.006, Quant.Q5_K_M: 0.015, Quant.Q5_0: 0.02,
    Quant.Q4_K_M: 0.035, Quant.IQ4_NL: 0.05, Quant.Q4_0: 0.06, Quant.Q3_K_M: 0.1, Quant.Q2_K: 0.3,
}
DEFAULT_TOP1_MIN: dict[Quant, float] = {
    Quant.F16: 0.995, Quant.Q8_0: 0.975, Quant.Q6_K: 0.96, Quant.Q5_K_M: 0.945, Quant.Q5_0: 0.94,
    Quant.Q4_K_M: 0.91, Quant.IQ4_NL: 0.895, Quant.Q4_0: 0.89, Quant.Q3_K_M: 0.86, Quant.Q2_K: 0.78,
}


@dataclass(frozen=True)
class GateVerdict:
    quant: str
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"quant": self.quant, "passed": self.passed, "reasons": self.reasons}


def check(quant: Quant, summary: Mapping[str, float], *, kld_max: Mapping[Quant, float],
          top1_min: Mapping[Quant, float], stop_min: float, greedy_min: float, name: str | None = None) -> GateVerdict:
    """Compare a fidelity summary (see edgetune.outputs.FidelitySummary.summary) with `quant`'s thresholds; `name`:
    the build's own name where it is not `quant` (a searched mix, held to its budget type's thresholds)."""
    reasons = []
    kmax, tmin = kld_max[quant], top1_min[quant]
    if summary["kld_mean"] > kmax:
        reasons.append(f"mean KLD {summary['kld_mean']:.4f} > {kmax}")
    if summary["top1_agreement"] < tmin:
        reasons.append(f"top-1 agreement {summary['top1_agreement']:.1%} < {tmin:.1%}")
    if summary["stop_agreement"] < stop_min:
        reasons.append(f"stops where the GPU build stops on {summary['stop_agreement']:.0%} of prompts < {stop_min:.0%}"
                       " (chat template or EOS damaged?)")
    if summary["greedy_agreement"] < greedy_min:
        reasons.append(f"greedy agreement {summary['greedy_agreement']:.1%} < {greedy_min:.1%}")
    return GateVerdict(name or quant.value, not reasons, reasons)
