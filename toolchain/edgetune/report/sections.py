"""What a report shows, independent of its format: summary lines and tables of formatted cells, which the
Markdown and HTML writers both render. Optional sections (fidelity, judge, device) appear only when their keys
are in the report, either on each build row (`row["fidelity"]`) or top-level by build name
(`report["fidelity"]["Q4_0"]`). Reads and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgetune.constants import BASE_BUILD, GPU_BUILD

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

def builds(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(report.get("builds", []))


def per_build(report: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """build name → the optional `key` section, from build rows or a top-level mapping, in display order."""
    found = {r["name"]: r[key] for r in builds(report) if isinstance(r.get(key), Mapping)}
    top = report.get(key)
    if isinstance(top, Mapping):
        found.update({name: v for name, v in top.items() if isinstance(v, Mapping) and name not in found})
    return found


def row_class(row: Mapping[str, Any]) -> str:
    verdict = (row.get("vs_gpu") or {}).get("verdict")
    if verdict is not None:  # the task rows: shaded by the non-inferiority verdict
        return {"worse": "worse", "not worse": "better"}.get(verdict, "")
    p, delta = row.get("mcnemar_p"), row.get("delta_vs_gpu")
    if p is None or delta is None or p >= 0.05:
        return ""
    return "worse" if delta < 0 else "better"


# --- sections --------------------------------------------------------------------------------------------

def summary(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    by_name = {r["name"]: r for r in builds(report)}
    out = []
    if isinstance(report.get("finetune"), Mapping):
        pass  # the fine-tune section leads the report (report.finetune.headline)
    elif "accuracy" in by_name.get(BASE_BUILD, {}) and "accuracy" in by_name.get(GPU_BUILD, {}):
        b, g = by_name[BASE_BUILD], by_name[GPU_BUILD]
        verdict = "beats" if g["ci95"][0] > b["ci95"][1] else "does not clearly beat"
        diff = signed_pts(g["accuracy"] - b["accuracy"])
        change = f"{pct(b['accuracy'])} → {pct(g['accuracy'])} ({diff}, n={g['n']})"
        out.append(("Fine-tune", f"the GPU build {verdict} the base on held-out items: {change}."))
    edge = [r for r in builds(report) if r.get("kind") == "GGUF" and "delta_vs_gpu" in r]
    if edge:
        out.append(("Lost to conversion and quantization (vs the GPU build)", ", ".join(
            f"{r['name']} {signed_pts(r['delta_vs_gpu'])}" for r in edge) + "."))
    forgot = [f"{SET_TITLES.get(s, s)} {signed_pts(f['delta_vs_base'])}"
              for s, f in forgetting_sets(by_name.get(GPU_BUILD, {})).items() if "delta_vs_base" in f]
    if forgot:
        out.append(("Forgetting (GPU build vs the base, acc)", ", ".join(forgot) + "."))
    if lengths := lengths_line(report):
        out.append(("Lengths", lengths))
    return out


def lengths_line(report: Mapping[str, Any]) -> str | None:
    """How many training examples were shortened or dropped, and how many held-out items exceed the board's
    context (pipeline: train/lengths.py, evals/context.py); None for reports from before these checks."""
    lengths = report.get("lengths")
    if not isinstance(lengths, Mapping):
        return None
    parts = []
    if train := lengths.get("train"):
        cut = [f"{train['shortened']} shortened in the prompt (by up to {train['most_cut']} tokens)"
               if train.get("shortened") else "", f"{train['dropped']} dropped" if train.get("dropped") else ""]
        done = ", ".join(c for c in cut if c) or "none cut"
        parts.append(f"training examples up to {train['max_length']} tokens ({train['why']}): {done}")
    if ctx := lengths.get("context"):
        parts.append(ctx["summary"])
    return "; ".join(parts) + "." if parts else None


def accuracy_table(report: Mapping[str, Any]) -> Table | None:
    rows = [r for r in builds(report) if "accuracy" in r]
    if not rows:
        return None
    cells = []
    for r in rows:
        flips = f"{len(r['flips_lost'])} / {len(r['flips_gained'])}" if "flips_lost" in r else "–"
        p = f"{r['mcnemar_p']:.3f}" if "mcnemar_p" in r else "–"
        v = r.get("vs_gpu") or {}
        cells.append([r["name"], str(r.get("kind", "–")), mb(r.get("size_bytes")), pct(r["accuracy"]),
                      pct_range(r.get("ci95")), signed_pts(r.get("delta_vs_gpu")),
                      pts_range(r.get("delta_vs_gpu_ci95")), flips, p, v.get("verdict", "–"),
                      pts_range(v.get("ci95")), "–" if v.get("mdd") is None else f"{100 * v['mdd']:.1f} pts",
                      "–" if v.get("n_needed") is None else f"{v['n_needed']:,}"])
    margin = report.get("margin")
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


def task_metric_table(report: Mapping[str, Any]) -> Table | None:
    """Per build: the task metric's mean score, the strict accuracy and the answers cut off at the token budget
    (a truncated answer is a budget problem, not a model problem: raise eval.max_new_tokens)."""
    rows = [r for r in builds(report) if "score" in r and "metric" in r]
    if not rows:
        return None
    plan = report.get("context", {}).get("task_metric") or {}
    metric = rows[0]["metric"]
    cells = [[r["name"], r["metric"], f"{r['score']:.3f}", pct(r.get("accuracy")),
              f"{r.get('truncated', 0)} / {r.get('n', '–')}"] for r in rows]
    how = f"Metric {metric} ({plan['why']}); " if plan.get("why") else f"Metric {metric}; "
    budget = (f"max_new_tokens {plan['max_new_tokens']}"
              + (" (derived from the references' token lengths)" if plan.get("max_new_tokens_derived") else "")
              + ". ") if plan.get("max_new_tokens") else ""
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


def forgetting_sets(row: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Set name → a build row's forgetting figures; a report from before the other sets keeps MMLU's under
    `row["mmlu"]`."""
    sets = row.get("forgetting")
    if isinstance(sets, Mapping):
        return dict(sets)
    return {"mmlu": row["mmlu"]} if isinstance(row.get("mmlu"), Mapping) else {}


def _set_names(report: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(name for r in builds(report) for name in forgetting_sets(r)))


def _flips(f: Mapping[str, Any]) -> str:
    return f"{len(f['flips_lost'])} / {len(f['flips_gained'])}" if "flips_lost" in f else "–"


def forgetting_overview(report: Mapping[str, Any]) -> Table | None:
    """acc on every set per build, with its change against the base: the whole forgetting check at a glance."""
    names = _set_names(report)
    rows = [r for r in builds(report) if forgetting_sets(r)]
    if not rows:
        return None
    cells = []
    for r in rows:
        sets = forgetting_sets(r)
        cells.append([r["name"]] + [
            "–" if s not in sets else pct(sets[s]["acc"]) + (
                f" ({signed_pts(sets[s]['delta_vs_base'])})" if "delta_vs_base" in sets[s] else "")
            for s in names])
    n = {s: next((forgetting_sets(r)[s]["n"] for r in rows if s in forgetting_sets(r)), None) for s in names}
    return Table("forgetting", "Forgetting check (log-likelihood multiple choice; acc, change vs the base)",
                 ["build", *(f"{SET_TITLES.get(s, s)} (n={n[s]})" for s in names)], cells,
                 "Small subsets: a change is a finding only when its detail table below gives McNemar p < 0.05. "
                 + FORGETTING_NOTE)


def forgetting_tables(report: Mapping[str, Any]) -> list[Table]:
    """One table per forgetting set: acc and acc_norm with CIs, change vs the base, paired flips and the
    change vs the GPU build."""
    tables = []
    for s in _set_names(report):
        rows = [(r["name"], forgetting_sets(r)[s]) for r in builds(report) if s in forgetting_sets(r)]
        cells = [[name, str(f.get("n", "–")), pct(f["acc"]), pct_range(f.get("ci95")), pct(f.get("acc_norm")),
                  pct_range(f.get("ci95_norm")), signed_pts(f.get("delta_vs_base")), signed_pts(f.get("delta_vs_gpu")),
                  _flips(f), f"{f['mcnemar_p']:.3f}" if "mcnemar_p" in f else "–"] for name, f in rows]
        tables.append(Table(f"forgetting-{s}", f"Forgetting: {SET_TITLES.get(s, s)}",
                            ["build", "n", "acc", "95% CI", "acc_norm", "95% CI (norm)", "vs base", "vs GPU build",
                             "lost / gained", "McNemar p"], cells, "",
                            [row_class(f) for _, f in rows]))
    return tables


def forgetting_table(report: Mapping[str, Any]) -> Table | None:
    """The overview (kept under its old name for callers that show one table)."""
    return forgetting_overview(report)


def subject_table(report: Mapping[str, Any], limit: int | None = None,
                  changed_only: bool = False) -> Table | None:
    """Per-subject MMLU accuracy of the base and each build's change against it, worst change first;
    `changed_only` leaves out subjects no build changed."""
    mmlu = {r["name"]: forgetting_sets(r).get("mmlu", {}) for r in builds(report)}
    rows = [r for r in builds(report) if "per_subject" in mmlu[r["name"]]]
    base = next((r for r in rows if r["name"] == BASE_BUILD), None)
    others = [r for r in rows if r["name"] != BASE_BUILD]
    if base is None or not others:
        return None
    base_subjects = mmlu[BASE_BUILD]["per_subject"]

    def deltas(subject: str) -> list[float | None]:
        return [mmlu[o["name"]]["per_subject"].get(subject, {}).get("delta_vs_base") for o in others]

    subjects = sorted(base_subjects, key=lambda s: (min((d for d in deltas(s) if d is not None), default=0.0), s))
    candidates = [s for s in subjects if any(deltas(s))] if changed_only else subjects
    shown = candidates if limit is None else candidates[:limit]
    cells = [[s, str(base_subjects[s]["n"]), pct(base_subjects[s]["acc"])]
             + [signed_pts(d) for d in deltas(s)] for s in shown]
    note = "Per-subject changes rest on a handful of items each: read them as where to look, not as findings."
    if len(shown) < len(subjects):
        note += f" Showing {len(shown)} of {len(subjects)} subjects" + (
            ", those some build changed, largest drops first." if changed_only else ", largest drops first.")
    return Table("subjects", "Forgetting by MMLU subject (change vs the base)",
                 ["subject", "n", "base acc", *(o["name"] for o in others)], cells, note)


def fidelity_table(report: Mapping[str, Any]) -> Table | None:
    fid = per_build(report, "fidelity")
    if not fid:
        return None
    cells, classes = [], []
    for name, f in fid.items():
        gate = f.get("gate") or {}
        passed = gate.get("passed")
        cells.append([name, num(f.get("kld_mean"), 4), num(f.get("kld_p99"), 4), pct(f.get("top1_agreement")),
                      pct(f.get("greedy_agreement")), pct(f.get("stop_agreement")),
                      "–" if passed is None else ("passed" if passed else "FAILED"),
                      "; ".join(map(str, gate.get("reasons") or [])) or "–"])
        classes.append("fail" if passed is False else "")
    return Table("fidelity", "Fidelity to the GPU build (same token ids)",
                 ["build", "KLD mean", "KLD p99", "top-1 agreement", "greedy agreement", "stop agreement",
                  "gate", "reasons"], cells,
                 "KL(GPU build ‖ this build) of next-token distributions over every position; agreement "
                 "shares of the top-1 token, the greedy continuation and where generation stops.", classes)


def judge_table(report: Mapping[str, Any]) -> Table | None:
    judge = per_build(report, "judge")
    if not judge:
        return None
    cells = []
    for name, j in judge.items():
        pw = j.get("pairwise") or {}
        agree = (j.get("reliability") or {}).get("metric_agreement") or {}
        vs = j.get("vs_gpu") or {}
        rho = j.get("metric_spearman")
        cells.append([name, num(j.get("mean_score")) + (f" (n={j['n_valid']})" if j.get("n_valid") else ""),
                      "–" if not j.get("ci95") else f"{num(j['ci95'][0])} – {num(j['ci95'][1])}",
                      "–" if not vs.get("ci95") else
                      f"{vs['diff']:+.2f} ({vs['ci95'][0]:+.2f} – {vs['ci95'][1]:+.2f})",
                      share_or_count(pw.get("win")), share_or_count(pw.get("tie")), share_or_count(pw.get("loss")),
                      pct(pw.get("position_flip_rate")),
                      f"{pct(agree['agreement_decisive'])} (n={agree['n_decisive']})"
                      if agree.get("agreement_decisive") is not None else "–",
                      f"none: every rating {num(j['constant_rating'])}" if j.get("constant_rating") is not None
                      else "–" if rho is None else f"{rho:+.2f} (n={j.get('n_metric')})"])
    note = ("Mean score: the pointwise judge's 1-10 rating of each build's answer against the reference (95% CI "
            "over items; Δ vs GPU: paired difference on the same items). Pairwise outcomes are against the GPU "
            "build; the position flip rate is how often the judge changed its verdict when the two answers "
            "swapped places (high: the verdicts are noise). \"Agrees with the metric\" is the share of items "
            "where the task metric prefers one build and the judge picks the same one (chance is about a third); "
            "\"rating ~ metric\" is the rank correlation of the pointwise ratings with the task metric's "
            "per-item scores (near 0: the ratings do not follow the reference metric; \"every rating N\": the judge "
            "gave every answer the same rating, so its scores say nothing about any build).")
    if any((j.get("reliability") or {}).get("embedded_judge") for j in judge.values()):
        note = ("Warning: the judge is the embedded SmolLM2-135M (no `judge:` endpoint configured), a smoke "
                "test, not evidence; set judge.base_url / judge.model to a capable model. ") + note
    return Table("judge", "LLM judge", ["build", "mean score", "95% CI", "Δ vs GPU (95% CI)", "win", "tie", "loss",
                                        "position flip rate", "agrees with the metric", "rating ~ metric"],
                 cells, note)


def device_table(report: Mapping[str, Any]) -> Table | None:
    dev = per_build(report, "device")
    if not dev:
        return None

    def measured_vs_pred(d: Mapping[str, Any], kind: str) -> str:
        m, p = d.get(f"{kind}_tps"), d.get(f"predicted_{kind}_tps")
        return num(m, 3) + (f" / {num(p, 3)} ({m / p:.0%})" if m and p else "")

    def accuracy(d: Mapping[str, Any]) -> str:
        if d.get("accuracy") is None:
            return "–"
        flips = f", lost/gained vs GPU {d['flips_lost']}/{d['flips_gained']}" if "flips_lost" in d else ""
        return f"{pct(d['accuracy'])} (n={d.get('n')}{flips})"

    return Table("device", "On the device",
                 ["build", "accuracy", "prompt tok/s (measured / predicted)",
                  "generation tok/s (measured / predicted)", "TTFT p50", "TTFT p95", "peak RSS"],
                 [[name, accuracy(d), measured_vs_pred(d, "prompt"), measured_vs_pred(d, "gen"),
                   f"{num(d.get('ttft_p50_s'))} s" if d.get("ttft_p50_s") is not None else "–",
                   f"{num(d.get('ttft_p95_s'))} s" if d.get("ttft_p95_s") is not None else "–",
                   f"{num(d.get('peak_rss_mb'), 4)} MB" if d.get("peak_rss_mb") is not None else "–"]
                  for name, d in dev.items()])


def _common_prefix(texts: Sequence[str]) -> str:
    if len(texts) < 2:
        return ""
    first, last = min(texts), max(texts)
    n = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    cut = max(first.rfind(" ", 0, n + 1), first.rfind("\n", 0, n + 1)) + 1
    return first[:cut] if cut >= PREFIX_MIN_CHARS else ""


def flip_tables(report: Mapping[str, Any], limit: int = 20) -> tuple[str, list[Table]]:
    """Per build and direction, the flipped items against the GPU build, with text and outputs when the
    report holds them. Returns the prompt prefix every shown item shares (shown once, cut from each) and the
    tables."""
    details = [d for r in builds(report) for side in ("lost", "gained")
               for d in (r.get("flipped_items") or {}).get(side, [])]
    prefix = _common_prefix([d["text"] for d in details if "text" in d])
    tables = []
    for r in builds(report):
        for side, label in (("lost", "right on the GPU build, wrong here"),
                            ("gained", "wrong on the GPU build, right here")):
            ids = r.get(f"flips_{side}") or []
            if not ids:
                continue
            shown = (r.get("flipped_items") or {}).get(side) or [{"id": i} for i in ids[:limit]]
            shown = shown[:limit]
            rest = len(ids) - len(shown)
            more = ", ".join(ids[len(shown):len(shown) + 50]) + (" …" if rest > 50 else "")
            tables.append(Table(
                f"flips-{r['name']}-{side}", f"{r['name']}: {len(ids)} {side} ({label})",
                ["item", "text", "reference", "GPU build said", "this build said"],
                [[d["id"], d.get("text", "–")[len(prefix):] if "text" in d else "–", num(d.get("reference")),
                  num(d.get("gpu_output")), num(d.get("output"))] for d in shown],
                f"…and {rest} more: {more}" if rest > 0 else "",
                ["worse" if side == "lost" else "better"] * len(shown)))
    return prefix, tables
