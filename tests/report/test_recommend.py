"""The recommendation rules, on report dicts whose verdicts are derived from flip counts (so they stay consistent
with what `build_report` writes). Since the non-inferiority verdict (issue 14), only builds shown "not worse" than
the GPU build are eligible: the McNemar rule these tests once pinned let an untested loss through."""

from __future__ import annotations

import pytest

from edgetune.report.recommend import COMPUTED, NOTHING_YET, resolve
from edgetune.report.render import complete

from .test_verdict import independent_newcombe_paired

N = 200
GPU_RIGHT = 170


def row(name: str, size_mb: float, lost: int = 0, gained: int = 0, kind: str = "GGUF", **extra) -> dict:
    return {"name": name, "kind": kind, "size_bytes": int(size_mb * 1e6),
            "accuracy": (GPU_RIGHT - lost + gained) / N, "n": N,
            "flips_lost": [f"i{k}" for k in range(lost)], "flips_gained": [f"g{k}" for k in range(gained)],
            "delta_vs_gpu": (gained - lost) / N, **extra}


def report(*rows: dict, **top) -> dict:
    gpu = {"name": "gpu", "kind": "GPU build (HF fp32, merged)", "size_bytes": 538_000_000,
           "accuracy": GPU_RIGHT / N, "n": N}
    base = {"name": "base", "kind": "base (HF fp32)", "size_bytes": 10_000_000, "accuracy": 0.1, "n": N}
    return {"title": "t", "context": {}, "builds": [base, gpu, *rows], **top}


def expected_verdict(lost: int, gained: int, margin: float = 0.02) -> str:
    both = GPU_RIGHT - lost
    lo, hi = independent_newcombe_paired(both, gained, lost, N - both - lost - gained)
    return "not worse" if lo > -margin else ("worse" if hi < -margin else "inconclusive")


def test_smallest_build_shown_not_worse_wins_and_inconclusive_ones_are_excluded():
    assert (expected_verdict(0, 0), expected_verdict(2, 0), expected_verdict(25, 0)) == \
        ("not worse", "inconclusive", "worse")  # the premise of this test
    rec = resolve(report(row("F16", 270), row("Q8_0", 145, lost=2), row("Q4_0", 92, lost=25)))
    assert rec["quant"] == "F16" and rec["source"] == COMPUTED
    assert rec["excluded"]["Q8_0"].startswith("inconclusive vs the GPU build") and "items would decide" in \
        rec["excluded"]["Q8_0"]
    assert rec["excluded"]["Q4_0"].startswith("worse vs the GPU build")
    assert '"not worse"' in rec["rule"] and '"not worse"' in rec["reason"] and "margin" in rec["reason"]


def test_a_gain_is_not_excluded_and_non_gguf_builds_are_never_chosen():
    r = report(row("Q8_0", 145), row("Q4_0", 92, lost=0, gained=12))
    assert resolve(r)["quant"] == "Q4_0"  # the base (10 MB, not GGUF) is smaller but not a candidate


def test_a_wider_margin_admits_a_small_loss():
    assert expected_verdict(2, 0, 0.05) == "not worse"
    assert resolve(report(row("F16", 270), row("Q4_0", 92, lost=2), margin=0.05))["quant"] == "Q4_0"
    assert resolve(report(row("F16", 270), row("Q4_0", 92, lost=2)))["quant"] == "F16"


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
    no_items = row("Q8_0", 145, n_paired=0)
    rec = resolve(report(no_items))
    assert rec["quant"] is None and "no paired accuracy comparison" in rec["excluded"]["Q8_0"]
    assert "delta_vs_gpu_ci95" not in complete(report(no_items))["builds"][2]  # never a (0, 0) interval


@pytest.mark.parametrize("verdict", ["does not beat", "inconclusive"])
def test_a_fine_tune_that_does_not_beat_the_base_ships_nothing(verdict):
    ft = {"verdict": verdict, "worked": False}
    rec = resolve(report(row("F16", 270), row("Q4_0", 92), finetune=ft))
    assert rec["quant"] is None and rec["reason"].startswith(NOTHING_YET)
    assert set(rec["excluded"]) == {"F16", "Q4_0"}
    assert resolve(report(row("F16", 270), finetune={"verdict": "beats", "worked": True}))["quant"] == "F16"


def test_a_recommendation_in_the_report_is_shown_as_is_and_a_computed_one_is_recomputed():
    given = {"quant": "Q4_0", "reason": "the device budget is 100 MB"}
    r = report(row("Q8_0", 145), row("Q4_0", 92, lost=30), recommendation=given)
    assert resolve(r) == {"source": "report", **given}
    assert complete(r)["recommendation"] == given  # complete() leaves a stage's recommendation alone
    stale = report(row("Q8_0", 145), row("Q4_0", 92, lost=30),
                   recommendation={"quant": "Q4_0", "reason": "old", "source": COMPUTED})
    assert resolve(stale)["quant"] == "Q8_0"
    assert complete(stale)["recommendation"]["quant"] == "Q8_0"


@pytest.mark.parametrize(("lost", "gained"), [(0, 0), (1, 0), (3, 0), (8, 0), (12, 0), (3, 3), (0, 4)])
def test_rule_follows_the_independent_verdict(lost, gained):
    rec = resolve(report(row("Q8_0", 145), row("Q4_0", 92, lost=lost, gained=gained)))
    assert rec["quant"] == ("Q4_0" if expected_verdict(lost, gained) == "not worse" else "Q8_0")


def test_in_warn_mode_a_failed_gate_is_stated_not_disqualifying():
    failed = {"kld_mean": 0.0085, "gate": {"passed": False, "reasons": ["KLD 0.0085 > 0.002"]}}
    r = report(row("F16", 270, lost=1, fidelity={"gate": {"passed": True, "reasons": []}}),
               row("Q8_0", 145, fidelity=failed), row("Q4_0", 92, lost=30, fidelity=failed))
    blocking = resolve(r)
    assert blocking["quant"] is None and "Q8_0: fidelity gate failed" in blocking["reason"]
    r["context"]["gate_mode"] = "warn"
    warned = resolve(r)
    assert warned["quant"] == "Q8_0", warned
    assert "fidelity gate failed: KLD 0.0085 > 0.002 (gates in warn mode" in warned["reason"]
    assert warned["excluded"]["Q4_0"].startswith("worse vs the GPU build")  # the task verdict still rules
    assert warned["excluded"]["F16"].startswith("inconclusive")
