"""Did the fine-tune work? Asked before any quantization question: the GPU build (the merged model) against the
base on the held-out task, paired item by item with the superiority rule of `report.verdict`, the training
curve and per-epoch held-out metric the train stage logged, and, for label tasks, how many answers are near
misses (a label and then more, or no label at all) next to the strict score.

For a label task the GPU build must also beat always answering the held-out set's most common label (the
majority baseline, same paired rule): a fine-tune that only learned the answer form (the base said "No, the
premise ...", the GPU build says "yes" to everything) beats a base scored strictly and still knows nothing.

When the GPU build does not beat the base (or the majority baseline), `check` names the likely causes from the tutorial's checklist
(learning rate, chat template, too few steps, answers not in the expected form), each with the evidence this
run holds, and keeps three example answers. `check` writes the report's `finetune` section as a dict (validated
with the rest of the report by render.build_report); the presentation functions read it back as report.schema's
`Finetune`. Pure: builds dicts and tables, reads and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgetune.labels import LABEL_ELSEWHERE, NO_LABEL, STARTS_WITH_LABEL, STRICT, answer_form, normalise_label
from edgetune.report.schema import Finetune, Report
from edgetune.report.sections import ReportLike, Table, pct, pts_range, signed_pts
from edgetune.report.verdict import BEATS, INCONCLUSIVE, NO_COMPARISON, paired_verdict

MAX_LABELS = 20  # more distinct references than this (or longer than MAX_LABEL_WORDS): not a label task
MAX_LABEL_WORDS = 3
N_EXAMPLES = 3
FEW_STEPS = 50  # fewer optimizer steps than this rarely teaches a new answer format (NOTES.md: 48 steps, 64 rows)
MAX_CURVE_POINTS = 40


def label_set(references: Sequence[str]) -> list[str] | None:
    """The task's labels when its references look like one (few, short), else None."""
    labels = sorted({normalise_label(r) for r in references} - {""})
    if not labels or len(labels) > MAX_LABELS or len(labels) > max(2, len(references) // 2):
        return None
    return labels if all(len(label.split()) <= MAX_LABEL_WORDS for label in labels) else None


def answer_forms(rows: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, int]:
    """Counts of each `labels.answer_form` over a build's per-item results, and n."""
    counts = {STRICT: 0, STARTS_WITH_LABEL: 0, LABEL_ELSEWHERE: 0, NO_LABEL: 0}
    for row in rows:
        counts[answer_form(str(row.get("output", "")), labels)] += 1
    return {**counts, "n": len(rows)}


def training_curve(metrics: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                   learning_rate: float | None = None) -> dict[str, Any]:
    """What the report keeps of a train artifact: the loss at most MAX_CURVE_POINTS steps (evenly thinned,
    the last kept), the per-epoch held-out loss and accuracy, the loss check, steps and examples."""
    stride = max(1, -(-len(history) // MAX_CURVE_POINTS))
    kept = list(history[::stride])
    if history and kept[-1] is not history[-1]:
        kept.append(history[-1])
    return {"loss": [[r["step"], r["loss"]] for r in kept], "epochs": list(metrics.get("epochs") or []),
            "loss_check": metrics.get("loss_check"), "steps": metrics.get("steps"),
            "n_examples": metrics.get("n_examples"), "learning_rate": learning_rate}


def _causes(training: Mapping[str, Any] | None, forms: Mapping[str, int] | None, max_new_tokens: int | None,
            majority: Mapping[str, Any] | None = None, gpu: Mapping[str, Mapping[str, Any]] | None = None
            ) -> list[str]:
    """The tutorial's checklist, each point with this run's evidence; points with evidence first."""
    t = training or {}
    out: list[tuple[bool, str]] = []
    if majority is not None and majority.get("verdict") != BEATS:
        said: dict[str, int] = {}
        for row in (gpu or {}).values():
            answer = normalise_label(str(row.get("output", "")))
            said[answer] = said.get(answer, 0) + 1
        spread = ", ".join(f"{n} × {a!r}" for a, n in sorted(said.items(), key=lambda e: -e[1])[:3])
        scored = (majority.get("score") or 0.0) + (majority.get("diff") or 0.0)
        out.append((True, f"the task itself was not learned: the GPU build scores {pct(scored)} where always "
                          f"answering {majority['label']!r} scores {pct(majority.get('score'))} (its answers: "
                          f"{spread}); add data or steps, try a larger base model or a clearer instruction"))
    check = t.get("loss_check") or {}
    lr = t.get("learning_rate")
    flat = check.get("judged") and not check.get("falling")
    out.append((bool(flat), "learning rate: " + (
        f"the training loss did not fall ({check['first']:.3f} → {check['last']:.3f}); " if flat else "")
        + (f"train.learning_rate={lr:g}; " if lr else "") + "try 1e-4 or 5e-5"))
    steps, n = t.get("steps"), t.get("n_examples")
    few = steps is not None and steps < FEW_STEPS
    out.append((few, "too few steps: " + (f"{steps} optimizer steps on {n} examples; " if steps is not None else "")
                + "raise train.epochs (or data.heldout_share to train on more of the data)"))
    if forms and forms.get("n"):
        near, none = forms[STARTS_WITH_LABEL], forms[NO_LABEL]
        wrong_form = near + none > forms["n"] // 2
        out.append((wrong_form, f"answers not in the expected form: {near} of {forms['n']} GPU-build answers "
                    f"start with a label and go on, {none} contain no label"
                    + (f" (eval.max_new_tokens={max_new_tokens} may cut them off)" if max_new_tokens else "")
                    + "; say the answer format in the prompt or data.system_prompt, or train longer"))
    out.append((False, "chat template: the model must be trained and asked in its own template (edgetune uses "
                       "the base's; check model.source is the model you mean and train.chat_template_fallback)"))
    return [text for _, text in sorted(out, key=lambda e: not e[0])]


def check(base: Mapping[str, Mapping[str, Any]], gpu: Mapping[str, Mapping[str, Any]],
          base_scores: Mapping[str, float], gpu_scores: Mapping[str, float], *, margin: float,
          item_text: Mapping[str, str], training: Mapping[str, Any] | None = None,
          max_new_tokens: int | None = None) -> dict[str, Any]:
    """`base`/`gpu`: item id → per-item result row. Returns the report's `finetune` section: the superiority
    verdict of the GPU build over the base (`worked` only for BEATS), the labels of a label task (each build
    row's `answer_forms` counts against them: render.build_report), the training curve, and when it did not
    work, the likely causes and three example answers."""
    verdict = paired_verdict(base_scores, gpu_scores, margin=margin, rule="superiority")
    out: dict[str, Any] = {**verdict.to_dict(), "worked": verdict.verdict == BEATS,
                           "base_score": _mean(base_scores), "gpu_score": _mean(gpu_scores)}
    labels = label_set([str(r.get("reference", "")) for r in gpu.values()])
    forms = None
    if labels is not None:
        out["labels"] = labels
        forms = answer_forms(list(gpu.values()), labels)
        out["vs_majority"] = majority = _vs_majority(gpu, gpu_scores, margin)
        out["worked"] = out["worked"] and majority["verdict"] == BEATS
    if training:
        out["training"] = dict(training)
    if not out["worked"]:
        # the majority point only when the base was beaten: otherwise the form (or the rest) is the first problem
        unbeaten = out.get("vs_majority") if verdict.verdict == BEATS else None
        out["causes"] = _causes(training, forms, max_new_tokens, unbeaten, gpu)
        ordered = sorted(gpu, key=lambda i: (gpu_scores.get(i, 0.0), i))  # wrong answers first
        out["examples"] = [{"id": i, "text": item_text.get(i, "")[:500], "reference": gpu[i].get("reference"),
                            "gpu_output": gpu[i].get("output"), "base_output": base.get(i, {}).get("output")}
                           for i in ordered[:N_EXAMPLES]]
    return out


def _vs_majority(gpu: Mapping[str, Mapping[str, Any]], gpu_scores: Mapping[str, float], margin: float
                 ) -> dict[str, Any]:
    """The GPU build against always answering the most common held-out label (ties: the first in sorted
    order), paired per item with the superiority rule."""
    refs = {i: normalise_label(str(row.get("reference", ""))) for i, row in gpu.items() if i in gpu_scores}
    counts: dict[str, int] = {}
    for label in refs.values():
        counts[label] = counts.get(label, 0) + 1
    label = min(counts, key=lambda k: (-counts[k], k))
    constant = {i: float(ref == label) for i, ref in refs.items()}
    verdict = paired_verdict(constant, gpu_scores, margin=margin, rule="superiority")
    return {**verdict.to_dict(), "label": label, "score": _mean(constant)}


def _mean(scores: Mapping[str, float]) -> float | None:
    return sum(scores.values()) / len(scores) if scores else None


# --- presentation ------------------------------------------------------------------------------------------

def headline(ft: Finetune) -> str:
    """One sentence: did the fine-tune beat the base, with the paired figures."""
    if ft.verdict == NO_COMPARISON:
        return "Fine-tune not checked: the base and the GPU build share no scored held-out items."
    figures = (f"{pct(ft.base_score)} → {pct(ft.gpu_score)} ({signed_pts(ft.diff)}, 95% CI "
               f"{pts_range(ft.ci95)}, n={ft.n}, margin {100 * (ft.margin or 0):.1f} pts)")
    majority = ft.vs_majority
    if ft.verdict == BEATS and majority and majority.verdict != BEATS:
        return (f"The fine-tune learned the answer form but not the task: the GPU build beats the base, {figures}, "
                f"but not always answering {majority.label!r} ({pct(majority.score)}; "
                f"{signed_pts(majority.diff)}, 95% CI {pts_range(majority.ci95)}). Nothing to ship yet.")
    if ft.worked:
        return f"The fine-tune worked: the GPU build beats the base on held-out items, {figures}."
    if ft.verdict == INCONCLUSIVE:
        need = f"; about {ft.n_needed:,} held-out items would decide it" if ft.n_needed else ""
        return (f"The fine-tune is not shown to work: the GPU build does not clearly beat the base, {figures}"
                f"{need}. Nothing to ship yet.")
    return f"The fine-tune did not work: the GPU build does not beat the base, {figures}. Nothing to ship yet."


def forms_table(report: ReportLike) -> Table | None:
    """Strict score and near misses per build (rows' `answer_forms`, label tasks only)."""
    rep = Report.load(report)
    rows = [(r.name, r.answer_forms) for r in rep.builds if r.answer_forms is not None]
    if not rows:
        return None
    cells = [[name, f"{f[STRICT]} / {f['n']}", str(f[STARTS_WITH_LABEL]), str(f[LABEL_ELSEWHERE]), str(f[NO_LABEL])]
             for name, f in rows]
    labels = (rep.finetune.labels if rep.finetune is not None else None) or []
    return Table("answer-forms", "Answer forms (labels: " + ", ".join(labels) + ")",
                 ["build", "strict (the metric)", "label, then more", "label later on", "no label"], cells,
                 "The score stays strict: only an answer that is exactly a label counts. \"Label, then more\" "
                 "answers (\"No, the premise ...\") are near misses: the model knows the answer but not the form.")


def curve_table(ft: Finetune) -> Table | None:
    epochs = ft.training.epochs if ft.training is not None else []
    if not epochs:
        return None
    cells = [[f"{e.epoch or 0:.2f}", "–" if e.step is None else str(e.step),
              "–" if e.eval_loss is None else f"{e.eval_loss:.4f}",
              "–" if e.accuracy is None else f"{pct(e.accuracy)} (n={e.n})"] for e in epochs]
    return Table("epochs", "Held-out metric per epoch (training)", ["epoch", "step", "held-out loss",
                                                                    "held-out exact match"], cells)


def loss_line(ft: Finetune) -> str | None:
    loss = ft.training.loss if ft.training is not None else []
    if not loss:
        return None
    return "Training loss by step: " + ", ".join(f"{step}: {value:.3f}" for step, value in loss)


def examples_table(ft: Finetune) -> Table | None:
    if not ft.examples:
        return None
    return Table("finetune-examples", "Example answers (held-out)",
                 ["item", "text", "reference", "GPU build said", "base said"],
                 [[e.id, e.text or "–", str(e.reference), str(e.gpu_output), str(e.base_output)]
                  for e in ft.examples])
