"""The build report: one row per build (base, GPU build, each GGUF) with accuracy, its 95% CI, the paired
change against the GPU build (flips, exact McNemar p), size, and forgetting on MMLU against the base.

Reads eval artifacts' records and results.jsonl (never guessing paths); writes report.json and report.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgetune.artifacts import Artifact, atomic_write_text, write_json
from edgetune.evals.stage import read_results
from edgetune.report.stats import mcnemar_exact_p, paired_flips, wilson_interval

GPU_BUILD = "gpu"
BASE_BUILD = "base"


def build_report(*, title: str, builds: Sequence[Mapping[str, Any]], task: Mapping[str, Artifact],
                 forgetting: Mapping[str, Artifact], context: Mapping[str, Any]) -> dict[str, Any]:
    """`builds`: [{"name", "kind", "size_bytes", ...}] in display order; `task`/`forgetting`: build name →
    eval artifact."""
    correct = {name: {r["id"]: bool(r["correct"]) for r in read_results(a)} for name, a in task.items()}
    mc = {name: {r["id"]: bool(r["correct"]) for r in read_results(a)} for name, a in forgetting.items()}
    rows = []
    for build in builds:
        name = build["name"]
        row: dict[str, Any] = dict(build)
        if name in correct:
            hits, n = sum(correct[name].values()), len(correct[name])
            lo, hi = wilson_interval(hits, n)
            row.update(accuracy=hits / n, n=n, ci95=[lo, hi])
            if GPU_BUILD in correct and name != GPU_BUILD:
                lost, gained = paired_flips(correct[GPU_BUILD], correct[name])
                row.update(
                    delta_vs_gpu=row["accuracy"] - sum(correct[GPU_BUILD].values()) / len(correct[GPU_BUILD]),
                    flips_lost=lost, flips_gained=gained, mcnemar_p=mcnemar_exact_p(len(lost), len(gained)),
                )
        if name in forgetting:
            m = forgetting[name].metrics
            row["mmlu"] = {"acc": m["acc"], "acc_norm": m["acc_norm"], "n": m["n"],
                           "ci95": list(wilson_interval(sum(mc[name].values()), len(mc[name])))}
            if BASE_BUILD in forgetting and name != BASE_BUILD:
                row["mmlu"]["delta_vs_base"] = m["acc"] - forgetting[BASE_BUILD].metrics["acc"]
        rows.append(row)
    return {"title": title, "context": dict(context), "builds": rows}


def write_report(report: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    write_json(json_path, report)
    atomic_write_text(md_path, to_markdown(report))
    return json_path, md_path


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _signed_pts(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f} pts"


def to_markdown(report: Mapping[str, Any]) -> str:
    ctx = report["context"]
    lines = [f"# {report['title']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in ctx.items() if not isinstance(v, (dict, list))]
    by_name = {r["name"]: r for r in report["builds"]}
    if "accuracy" in by_name.get(BASE_BUILD, {}) and "accuracy" in by_name.get(GPU_BUILD, {}):
        b, g = by_name[BASE_BUILD], by_name[GPU_BUILD]
        verdict = "beats" if g["ci95"][0] > b["ci95"][1] else "does not clearly beat"
        lines += ["", f"**Fine-tune:** the GPU build {verdict} the base on held-out items: {_pct(b['accuracy'])} → "
                      f"{_pct(g['accuracy'])} ({_signed_pts(g['accuracy'] - b['accuracy'])}, n={g['n']})."]
    edge = [r for r in report["builds"] if r.get("kind") == "GGUF" and "delta_vs_gpu" in r]
    if edge:
        lines += ["", "**Lost to conversion and quantization** (vs the GPU build): "
                  + ", ".join(f"{r['name']} {_signed_pts(r['delta_vs_gpu'])}" for r in edge) + "."]
    lines += ["", "## Task accuracy (held-out)", "",
              "| build | kind | size | accuracy | 95% CI | vs GPU build | lost / gained | McNemar p |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["builds"]:
        if "accuracy" not in r:
            continue
        ci = f"{_pct(r['ci95'][0])} – {_pct(r['ci95'][1])}"
        flips = f"{len(r['flips_lost'])} / {len(r['flips_gained'])}" if "flips_lost" in r else "–"
        p = f"{r['mcnemar_p']:.3f}" if "mcnemar_p" in r else "–"
        size = f"{r['size_bytes'] / 1e6:.1f} MB" if r.get("size_bytes") else "–"
        lines.append(f"| {r['name']} | {r['kind']} | {size} | {_pct(r['accuracy'])} | {ci} | "
                     f"{_signed_pts(r.get('delta_vs_gpu'))} | {flips} | {p} |")
    lines += ["", "Accuracy lost to conversion and quantization is the change against the GPU build (the merged "
              "model in transformers), paired item by item on the same token ids. *lost* counts items the GPU "
              "build got right and this build got wrong; McNemar's exact test asks whether the flips could be "
              "chance (p ≥ 0.05: no evidence of a loss).", ""]
    if any("mmlu" in r for r in report["builds"]):
        lines += ["## Forgetting check (MMLU subset, log-likelihood multiple choice)", "",
                  "| build | acc | 95% CI | acc_norm | vs base |", "|---|---|---|---|---|"]
        for r in report["builds"]:
            if "mmlu" in r:
                m = r["mmlu"]
                lines.append(f"| {r['name']} | {_pct(m['acc'])} | {_pct(m['ci95'][0])} – {_pct(m['ci95'][1])} | "
                             f"{_pct(m['acc_norm'])} | {_signed_pts(m.get('delta_vs_base'))} |")
        lines.append("")
    lost_any = [r for r in report["builds"] if r.get("flips_lost")]
    if lost_any:
        lines += ["## Flipped items (right on the GPU build, wrong here)", ""]
        for r in lost_any:
            lines.append(f"- **{r['name']}**: {', '.join(r['flips_lost'][:20])}"
                         + (" …" if len(r["flips_lost"]) > 20 else ""))
        lines.append("")
    return "\n".join(lines)


def load_report(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
