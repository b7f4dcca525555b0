"""The report's first question, "did the fine-tune work?", over real eval artifacts written through the Store: the
superiority verdict of the GPU build over the base (checked against the independent interval of test_verdict),
near-miss answer forms, the headline, the causes and examples, and "nothing to ship yet" when it failed."""

from __future__ import annotations

import json

import pytest

from edgetune.artifacts import Store
from edgetune.evals.stage import KIND_TASK
from edgetune.labels import LABEL_ELSEWHERE, NO_LABEL, STARTS_WITH_LABEL, STRICT, answer_form
from edgetune.report.finetune import label_set, training_curve
from edgetune.report.html import to_html
from edgetune.report.markdown import to_markdown
from edgetune.report.recommend import NOTHING_YET
from edgetune.report.render import build_report, complete

from .conftest import _artifact
from .test_verdict import independent_newcombe_paired

N = 60


def task_run(tmp_path, outputs: dict[str, list[str]], refs: list[str], *, scores=None, training=None,
             margin=0.02) -> dict:
    """A report over task artifacts whose per-item outputs are given (correct = strict label match)."""
    from edgetune.labels import label_matches

    store = Store(tmp_path / "store")
    task = {}
    for name, outs in outputs.items():
        rows = [{"id": f"i{k}", "output": o, "reference": refs[k], "correct": label_matches(o, refs[k])}
                for k, o in enumerate(outs)]
        if scores and name in scores:
            for r, s in zip(rows, scores[name]):
                r["score"] = s
        task[name] = _artifact(store, KIND_TASK, name, 0, rows, {})
    builds = [{"name": n, "kind": "GGUF" if n not in ("base", "gpu") else n, "size_bytes": 1_000_000 * (k + 1)}
              for k, n in enumerate(outputs)]
    texts = {f"i{k}": f"Premise {k}. Does the hypothesis follow?" for k in range(len(refs))}
    return complete(build_report(title="t", builds=builds, task=task, forgetting={}, context={},
                                 item_text=texts, training=training, margin=margin, max_new_tokens=4))


REFS = ["yes" if k % 3 else "no" for k in range(N)]


def test_answer_forms_count_near_misses_next_to_the_strict_rule():
    labels = ["yes", "no"]
    assert [answer_form(o, labels) for o in ("No.", "no, the premise says", "Yes it does", "I'd say yes",
                                             "not sure", "nope", "")] == \
        [STRICT, STARTS_WITH_LABEL, STARTS_WITH_LABEL, LABEL_ELSEWHERE, NO_LABEL, NO_LABEL, NO_LABEL]
    assert label_set(REFS) == ["no", "yes"]
    assert label_set([f"free text answer {k}" for k in range(40)]) is None


def test_a_failed_fine_tune_leads_the_report_and_ships_nothing(tmp_path):
    # the case: every build answers "No, the premise ..." and scores 0 under the strict rule
    outs = ["No, the premise does not say so."] * N
    history = [{"step": s, "loss": 2.0 - 0.01 * s} for s in range(1, 11)]
    training = training_curve({"epochs": [{"epoch": 1.0, "step": 10, "eval_loss": 1.9, "accuracy": 0.0, "n": 16}],
                               "loss_check": {"judged": True, "first": 2.0, "last": 1.9, "falling": True},
                               "steps": 10, "n_examples": 77}, history, 2e-4)
    report = task_run(tmp_path, {"base": outs, "gpu": outs, "F16": outs, "Q4_0": outs}, REFS, training=training)
    ft = report["finetune"]
    lo, hi = independent_newcombe_paired(0, 0, 0, N)
    # 60 items cannot rule out a 2-point gain: the verdict is inconclusive, with the n that would decide it
    assert ft["ci95"] == pytest.approx([lo, hi], abs=1e-7) and hi > 0.02 and ft["verdict"] == "inconclusive"
    assert ft["n_needed"] > N
    assert ft["worked"] is False and (ft["base_score"], ft["gpu_score"]) == (0.0, 0.0)
    rows = {r["name"]: r for r in report["builds"]}
    for name in ("base", "gpu", "F16", "Q4_0"):
        assert rows[name]["answer_forms"] == {STRICT: 0, STARTS_WITH_LABEL: N, LABEL_ELSEWHERE: 0, NO_LABEL: 0,
                                              "n": N}
    assert len(ft["examples"]) == 3 and ft["examples"][0]["gpu_output"] == outs[0]
    assert ft["causes"][0].startswith("too few steps: 10 optimizer steps on 77 examples")
    assert any(c.startswith("answers not in the expected form: 60 of 60") for c in ft["causes"])
    rec = report["recommendation"]
    assert rec["quant"] is None and rec["reason"].startswith(NOTHING_YET)
    md = to_markdown(report)
    assert md.index("## Did the fine-tune work?") < md.index("**Recommended build: none.**")
    assert "The fine-tune is not shown to work" in md and "Nothing to ship yet." in md
    assert "| gpu | 0 / 60 | 60 | 0 | 0 |" in md and "| Q4_0 | 0 / 60 | 60 | 0 | 0 |" in md
    assert "### Example answers (held-out)" in md and "Training loss by step: 1: 1.990" in md
    page = to_html(report)
    assert page.index('id="finetune"') < page.index('id="recommendation"')
    assert "Likely causes" in page and "The fine-tune is not shown to work" in page
    section = page.split('id="finetune"')[1].split('id="recommendation"')[0]
    assert section.count("<img ") == 1  # the training curve, inline


def test_a_working_fine_tune_is_followed_by_the_quant_verdicts(tmp_path):
    base = ["maybe"] * N
    gpu = list(REFS)
    q4 = list(REFS)
    for k in range(0, 12):  # Q4_0 loses 12 of 60 items
        q4[k] = "maybe"
    report = task_run(tmp_path, {"base": base, "gpu": gpu, "F16": list(REFS), "Q4_0": q4}, REFS)
    ft = report["finetune"]
    lo, _ = independent_newcombe_paired(0, N, 0, 0)  # GPU right everywhere, base nowhere
    assert ft["verdict"] == "beats" and ft["worked"] and ft["ci95"][0] == pytest.approx(lo, abs=1e-7)
    assert "causes" not in ft and "examples" not in ft
    rows = {r["name"]: r for r in report["builds"]}
    assert rows["Q4_0"]["vs_gpu"]["verdict"] == "worse" and rows["Q4_0"]["vs_gpu"]["lost"] == 12
    # 60 identical items are not enough to show "not worse" at 2 points: F16 is inconclusive, and nothing ships
    assert rows["F16"]["vs_gpu"]["verdict"] == "inconclusive" and rows["F16"]["vs_gpu"]["n_needed"] > N
    assert report["recommendation"]["quant"] is None
    wide = task_run(tmp_path / "wide", {"base": base, "gpu": gpu, "F16": list(REFS), "Q4_0": q4}, REFS,
                    margin=0.1)
    assert wide["recommendation"]["quant"] == "F16" and '"not worse"' in wide["recommendation"]["reason"]
    md = to_markdown(report)
    assert "The fine-tune worked" in md and "verdict vs GPU build (margin 2.0 pts)" in md
    q4_line = next(line for line in md.splitlines() if line.startswith("| Q4_0 | GGUF |"))
    assert "| worse |" in q4_line


def test_graded_scores_are_used_when_present(tmp_path):
    outs = list(REFS)
    graded = {"gpu": [0.9] * N, "F16": [0.85] * N, "base": [0.2] * N}
    report = task_run(tmp_path, {"base": ["x"] * N, "gpu": outs, "F16": outs}, REFS, scores=graded)
    rows = {r["name"]: r for r in report["builds"]}
    v = rows["F16"]["vs_gpu"]
    assert v["method"].startswith("paired bootstrap") and v["diff"] == pytest.approx(-0.05)
    assert v["verdict"] == "worse"  # every item 5 points lower: the bootstrap CI is a point at −0.05
    assert rows["F16"]["score"] == pytest.approx(0.85) and rows["F16"]["accuracy"] == 1.0  # strict stays
    assert report["finetune"]["verdict"] == "beats"


def test_report_json_carries_the_new_keys(tmp_path):
    outs = list(REFS)
    report = task_run(tmp_path, {"base": ["x"] * N, "gpu": outs, "F16": outs}, REFS)
    written = json.loads(json.dumps(report))
    assert set(written["builds"][2]["vs_gpu"]) >= {"verdict", "ci95", "margin", "n", "n_needed", "mdd", "method",
                                                   "diff"}
    assert written["margin"] == 0.02 and written["recommendation"]["margin"] == 0.02
    assert "vs_gpu" not in written["builds"][0]  # the base is judged by the fine-tune check, not vs the GPU


def test_learning_the_form_but_not_the_task_is_not_a_working_fine_tune(tmp_path):
    # the 277-row RTE run: the base said "No, the premise ..." (0 under the strict rule), the GPU build learned to
    # answer with a bare label but scored what always answering the commonest label scores
    refs = ["yes"] * 44 + ["no"] * 39
    base = ["No, the premise does not say so."] * len(refs)
    gpu = ["yes"] * len(refs)
    report = task_run(tmp_path, {"base": base, "gpu": gpu, "Q8_0": gpu}, refs)
    ft = report["finetune"]
    assert ft["verdict"] == "beats"  # over the base, strictly scored
    maj = ft["vs_majority"]
    assert maj["label"] == "yes" and maj["score"] == pytest.approx(44 / 83) and maj["diff"] == 0.0
    lo, hi = independent_newcombe_paired(44, 0, 0, 39)  # the same answer as the constant on every item
    assert maj["ci95"] == pytest.approx([lo, hi], abs=1e-7) and maj["verdict"] != "beats"
    assert ft["worked"] is False
    assert ft["causes"][0].startswith("the task itself was not learned: the GPU build scores 53.0% where always "
                                      "answering 'yes' scores 53.0% (its answers: 83 × 'yes')")
    assert report["recommendation"]["quant"] is None
    md = to_markdown(report)
    assert "The fine-tune learned the answer form but not the task" in md and "Nothing to ship yet." in md
    # a build that does better than the constant on the same items is a working fine-tune
    better = ["yes"] * 44 + ["no"] * 39
    assert task_run(tmp_path / "b", {"base": base, "gpu": better}, refs)["finetune"]["worked"] is True
