"""The recommendation rules, on report dicts whose statistics are computed from flip counts (so they stay
consistent with what `build_report` writes)."""

from __future__ import annotations

import pytest

from edgetune.report.recommend import COMPUTED, resolve
from edgetune.report.render import complete
from edgetune.report.stats import mcnemar_exact_p

N = 200


def row(name: str, size_mb: float, lost: int = 0, gained: int = 0, kind: str = "GGUF", gpu_right: int = 170,
        **extra) -> dict:
    return {"name": name, "kind": kind, "size_bytes": int(size_mb * 1e6),
            "accuracy": (gpu_right - lost + gained) / N, "n": N,
            "flips_lost": [f"i{k}" for k in range(lost)], "flips_gained": [f"g{k}" for k in range(gained)],
            "delta_vs_gpu": (gained - lost) / N, "mcnemar_p": mcnemar_exact_p(lost, gained), **extra}


def report(*rows: dict, **top) -> dict:
    gpu = {"name": "gpu", "kind": "GPU build (HF fp32, merged)", "size_bytes": 538_000_000,
           "accuracy": 170 / N, "n": N}
    base = {"name": "base", "kind": "base (HF fp32)", "size_bytes": 10_000_000, "accuracy": 0.1, "n": N}
    return {"title": "t", "context": {}, "builds": [base, gpu, *rows], **top}


def test_smallest_build_that_is_not_significantly_worse_wins():
    r = report(row("F16", 270), row("Q8_0", 145, lost=2), row("Q4_0", 92, lost=17, gained=5))
    assert mcnemar_exact_p(17, 5) < 0.05 <= mcnemar_exact_p(2, 0)  # the premise of this test
    rec = resolve(r)
    assert rec["quant"] == "Q8_0" and rec["source"] == COMPUTED
    assert set(rec["excluded"]) == {"Q4_0"} and "significantly worse" in rec["excluded"]["Q4_0"]
    assert "smallest" in rec["rule"] and "McNemar" in rec["rule"]


def test_a_significant_gain_is_not_excluded_and_non_gguf_builds_are_never_chosen():
    r = report(row("Q8_0", 145), row("Q4_0", 92, lost=0, gained=12))
    assert mcnemar_exact_p(0, 12) < 0.05
    assert resolve(r)["quant"] == "Q4_0"  # the base (10 MB, not GGUF) is smaller but not a candidate


def test_failed_or_missing_fidelity_gates_exclude_once_fidelity_is_measured():
    r = report(row("Q8_0", 145, fidelity={"kld_mean": 0.001, "gate": {"passed": True, "reasons": []}}),
               row("Q4_0", 92, fidelity={"kld_mean": 0.09,
                                         "gate": {"passed": False, "reasons": ["KLD 0.09 > 0.05"]}}),
               row("Q2_K", 60))
    rec = resolve(r)
    assert rec["quant"] == "Q8_0"
    assert "KLD 0.09 > 0.05" in rec["excluded"]["Q4_0"]
    assert rec["excluded"]["Q2_K"] == "no fidelity gate result"
    assert "fidelity gate passed" in rec["reason"]


def test_top_level_fidelity_by_build_name_counts_too():
    r = report(row("Q8_0", 145), row("Q4_0", 92),
               fidelity={"Q8_0": {"gate": {"passed": True}}, "Q4_0": {"gate": {"passed": False}}})
    assert resolve(r)["quant"] == "Q8_0"


def test_without_fidelity_gates_are_not_required():
    assert resolve(report(row("Q8_0", 145), row("Q4_0", 92)))["quant"] == "Q4_0"


def test_nothing_eligible_says_so():
    rec = resolve(report(row("Q4_0", 92, lost=30)))
    assert rec["quant"] is None and "no GGUF build meets the rule" in rec["reason"]
    assert resolve(report())["reason"] == "the report has no GGUF builds"


def test_a_build_without_a_paired_comparison_is_not_eligible():
    lonely = {"name": "Q4_0", "kind": "GGUF", "size_bytes": 92_000_000, "accuracy": 0.8, "n": N}
    rec = resolve(report(lonely))
    assert rec["quant"] is None and "no paired accuracy comparison" in rec["excluded"]["Q4_0"]


def test_a_recommendation_in_the_report_is_shown_as_is_and_a_computed_one_is_recomputed():
    given = {"quant": "Q4_0", "reason": "the device budget is 100 MB"}
    r = report(row("Q8_0", 145), row("Q4_0", 92, lost=30), recommendation=given)
    assert resolve(r) == {"source": "report", **given}
    assert complete(r)["recommendation"] == given  # complete() leaves a stage's recommendation alone
    stale = report(row("Q8_0", 145), row("Q4_0", 92, lost=30),
                   recommendation={"quant": "Q4_0", "reason": "old", "source": COMPUTED})
    assert resolve(stale)["quant"] == "Q8_0"
    assert complete(stale)["recommendation"]["quant"] == "Q8_0"


@pytest.mark.parametrize("lost", [0, 3, 8, 12])
def test_rule_follows_the_mcnemar_threshold(lost):
    rec = resolve(report(row("Q8_0", 145), row("Q4_0", 92, lost=lost)))
    assert rec["quant"] == ("Q4_0" if mcnemar_exact_p(lost, 0) >= 0.05 else "Q8_0")
