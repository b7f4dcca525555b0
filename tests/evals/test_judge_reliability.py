"""The judge's agreement with the task metric, counted by hand on small cases, and the embedded-judge warning
in the report's judge table."""

from __future__ import annotations

from edgetune.evals.judge_reliability import is_embedded_judge, metric_agreement, metric_outcome
from edgetune.report.sections import judge_table


def test_metric_outcome():
    assert (metric_outcome(1.0, 0.5), metric_outcome(0.2, 0.7), metric_outcome(0.4, 0.4)) == ("a", "b", "tie")


def test_agreement_counts_only_decided_items_with_scores():
    judged = [
        {"id": "1", "outcome": "a", "identical": False},  # metric: a (1.0 > 0.0) -> agrees
        {"id": "2", "outcome": "b", "identical": False},  # metric: a -> disagrees
        {"id": "3", "outcome": "tie", "identical": False},  # metric: tie -> agrees, not decisive
        {"id": "4", "outcome": "b", "identical": False},  # metric: b -> agrees
        {"id": "5", "outcome": "invalid", "identical": False},  # not decided: skipped
        {"id": "6", "outcome": "tie", "identical": True},  # identical answers: skipped
        {"id": "7", "outcome": "a", "identical": False},  # no score for b: skipped
    ]
    a = {"1": 1.0, "2": 0.9, "3": 0.5, "4": 0.0, "5": 1.0, "6": 1.0, "7": 1.0}
    b = {"1": 0.0, "2": 0.1, "3": 0.5, "4": 0.3, "5": 0.0, "6": 1.0}
    # all compared: items 1-4, 3 agree -> 3/4; decisive (metric prefers one): 1, 2, 4, 2 agree -> 2/3
    assert metric_agreement(judged, a, b) == {"n": 4, "agreement": 0.75, "n_decisive": 3,
                                              "agreement_decisive": 2 / 3}
    assert metric_agreement([], a, b) == {"n": 0, "agreement": None, "n_decisive": 0, "agreement_decisive": None}


def test_embedded_judge_is_the_local_fallback():
    assert is_embedded_judge({"local": "local-SmolLM2-135M-Instruct.Q4_1-abc"})
    assert not is_embedded_judge({"base_url": "http://127.0.0.1:8080/v1", "model": "judge"})


def _report(embedded: bool):
    judge = {"pairwise": {"win": 2, "tie": 5, "loss": 3, "position_flip_rate": 0.25},
             "reliability": {"metric": "json", "embedded_judge": embedded,
                             "metric_agreement": {"n": 8, "agreement": 0.5, "n_decisive": 4,
                                                  "agreement_decisive": 0.25}}}
    return {"builds": [{"name": "Q4_0", "kind": "GGUF", "judge": judge}]}


def test_judge_table_shows_agreement_and_warns_about_the_embedded_judge():
    table = judge_table(_report(embedded=True))
    col = table.columns.index("agrees with the metric")
    assert table.rows[0][col] == "25.0% (n=4)" and table.rows[0][-1] == "–"  # no pointwise ratings here
    assert table.note.startswith("Warning: the judge is the embedded SmolLM2-135M")
    assert "Warning" not in judge_table(_report(embedded=False)).note
