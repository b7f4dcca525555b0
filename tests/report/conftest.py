"""Fixtures for the report tests: real eval artifacts (results.jsonl + artifact.json, written through the real
Store) for a synthetic run whose per-item outcomes are drawn from a seed, a run folder written by the real
`write_report`, optional sections as other stages will add them, and a headless Chromium."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgetune.artifacts import Artifact, Store, stage_key, write_json
from edgetune.constants import RUN_RECORD
from edgetune.evals.stage import KIND_FORGET, KIND_TASK
from edgetune.report.render import build_report, item_texts, write_report

PREFIX = "Is the sentiment of this movie review positive or negative? Answer with one word.\n\nReview: "
WORDS = ["moving", "dull", "great", "awful", "a", "the"]
SUBJECTS = ["anatomy", "astronomy", "virology"]
# name, kind, size in bytes, P(item right), P(an item flips against the GPU build)
BUILDS = [("base", "base (HF fp32)", 538_000_000, 0.2, None),
          ("gpu", "GPU build (HF fp32, merged)", 538_000_000, 0.85, None),
          ("F16", "GGUF", 271_000_000, None, 0.0), ("Q8_0", "GGUF", 145_000_000, None, 0.03),
          ("Q4_0", "GGUF", 92_000_000, None, 0.25)]


@dataclass
class SyntheticRun:
    run_dir: Path
    report: dict[str, Any]
    correct: dict[str, dict[str, bool]]  # build → item id → right?
    outputs: dict[str, dict[str, str]]
    texts: dict[str, str]
    mmlu: dict[str, dict[str, bool]]
    subject_of: dict[str, str]
    arc: dict[str, dict[str, bool]]  # a second forgetting set (ARC-Easy ids, no subjects)
    sizes: dict[str, int] = field(default_factory=dict)


def _artifact(store: Store, kind: str, build: str, seed: int, rows: list[dict], metrics: dict) -> Artifact:
    if kind == KIND_TASK:  # a task eval's record always holds its accuracy and item count
        metrics = {"accuracy": sum(bool(r["correct"]) for r in rows) / len(rows), "n": len(rows), **metrics}
    key = stage_key(kind, {"build": build, "seed": seed}, {})
    with store.build(kind, key, {"build": build}, {}) as b:
        (b.path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        b.outputs["results"] = "results.jsonl"
        b.metrics.update(metrics)
    return b.artifact


def make_run(root: Path, *, seed: int = 0, n: int = 80, n_mc: int = 30, target: str = "rpi5-8gb",
             builds=BUILDS) -> SyntheticRun:
    rng = random.Random(seed)
    store = Store(root / "store")
    ids = [f"sst2-{i}" for i in range(n)]
    refs = {i: rng.choice(["positive", "negative"]) for i in ids}
    texts = {i: PREFIX + f"{rng.choice(WORDS)} film, item {i}" for i in ids}
    other = {"positive": "negative", "negative": "positive"}
    correct: dict[str, dict[str, bool]] = {}
    for name, _, _, p_right, p_flip in builds:
        if p_flip is None:
            correct[name] = {i: rng.random() < p_right for i in ids}
        else:
            correct[name] = {i: c != (rng.random() < p_flip) for i, c in correct["gpu"].items()}
    outputs = {b: {i: refs[i] if c else other[refs[i]] for i, c in cs.items()} for b, cs in correct.items()}
    subject_of = {f"mmlu/{SUBJECTS[k % len(SUBJECTS)]}/{k}": SUBJECTS[k % len(SUBJECTS)] for k in range(n_mc)}
    mmlu = {b[0]: {i: rng.random() < 0.3 for i in subject_of} for b in builds}
    arc_ids = [f"arc_easy/{k}" for k in range(n_mc)]
    arc = {"gpu": {i: rng.random() < 0.6 for i in arc_ids}}
    for name, *_ in builds:  # the edge builds match the GPU build, except that Q4_0 loses every third item
        if name == "base":
            arc[name] = {i: rng.random() < 0.7 for i in arc_ids}
        elif name != "gpu":
            arc[name] = {i: c and not (name == "Q4_0" and k % 3 == 0)
                         for k, (i, c) in enumerate(arc["gpu"].items())}

    task, forgetting, forgetting_arc = {}, {}, {}
    for name, *_ in builds:
        rows = [{"id": i, "output": outputs[name][i], "reference": refs[i], "correct": correct[name][i]}
                for i in ids]
        accuracy = sum(correct[name].values()) / n
        task[name] = _artifact(store, KIND_TASK, name, seed, rows, {"accuracy": accuracy})
        per_subject = {}
        for s in SUBJECTS:
            mine = [c for i, c in mmlu[name].items() if subject_of[i] == s]
            per_subject[s] = {"acc": sum(mine) / len(mine), "acc_norm": 0.0, "n": len(mine)}
        mc_rows = [{"id": i, "subject": subject_of[i], "correct": c} for i, c in mmlu[name].items()]
        forgetting[name] = _artifact(store, KIND_FORGET, name, seed, mc_rows, {
            "acc": sum(mmlu[name].values()) / n_mc, "acc_norm": 0.25, "n": n_mc, "per_subject": per_subject})
        arc_rows = [{"id": i, "subject": "arc_easy", "correct": c, "correct_norm": not c}
                    for i, c in arc[name].items()]
        forgetting_arc[name] = _artifact(store, KIND_FORGET, f"{name}-arc", seed, arc_rows, {
            "acc": sum(arc[name].values()) / n_mc, "acc_norm": 1 - sum(arc[name].values()) / n_mc, "n": n_mc,
            "per_subject": {"arc_easy": {"acc": 0.0, "acc_norm": 0.0, "n": n_mc}}})
    examples = [{"id": i, "messages": [{"role": "user", "content": texts[i]},
                                       {"role": "assistant", "content": refs[i]}]} for i in ids]
    data_key = stage_key("data", {"seed": seed}, {})
    with store.build("data", data_key, {}, {}) as b:
        (b.path / "heldout.jsonl").write_text("".join(json.dumps(ex) + "\n" for ex in examples))
        b.outputs["heldout"] = "heldout.jsonl"
    report = build_report(
        title=f"edgetune build: synthetic for {target}",
        builds=[{"name": name, "kind": kind, "size_bytes": size} for name, kind, size, *_ in builds],
        task=task, forgetting={"mmlu": forgetting, "arc_easy": forgetting_arc}, context={"target": target, "model": f"synthetic-{seed}"},
        item_text=item_texts(examples))
    run_dir = root / "runs" / target
    write_report(report, run_dir)
    stages = {f"eval-{k}": str(a.path) for k, a in task.items()}
    stages |= {f"mmlu-{k}": str(a.path) for k, a in forgetting.items()}
    stages |= {f"arc_easy-{k}": str(a.path) for k, a in forgetting_arc.items()}
    stages["data"] = str(store.lookup("data", data_key).path)
    write_json(run_dir / RUN_RECORD, {"config": {}, "stages": stages})
    return SyntheticRun(run_dir, report, correct, outputs, texts, mmlu, subject_of, arc,
                        {name: size for name, _, size, *_ in builds})


def add_optional(report: dict[str, Any]) -> dict[str, Any]:
    """The keys other stages add: fidelity on each GGUF row (Q4_0's gate fails), judge top-level by build
    name, device on each GGUF row, as their issues describe them."""
    out = json.loads(json.dumps(report))
    for i, row in enumerate(r for r in out["builds"] if r["kind"] == "GGUF"):
        bad = row["name"] == "Q4_0"
        row["fidelity"] = {"kld_mean": 0.002 * (i + 1) * (20 if bad else 1), "kld_p99": 0.05 * (i + 1),
                           "top1_agreement": 0.99 - 0.1 * bad, "greedy_agreement": 0.97 - 0.2 * bad,
                           "stop_agreement": 1.0 - 0.05 * bad,
                           "gate": {"passed": not bad, "reasons": ["kld_mean above 0.02"] if bad else []}}
        row["device"] = {"prompt_tps": 60.0 / (i + 1), "gen_tps": 12.0 / (i + 1), "ttft_p50_s": 0.4 * (i + 1),
                         "ttft_p95_s": 0.6 * (i + 1), "peak_rss_mb": 300.0 * (3 - i),
                         "predicted_prompt_tps": 70.0 / (i + 1), "predicted_gen_tps": 10.0 / (i + 1)}
    out["judge"] = {r["name"]: {"mean_score": 7.5 - j, "ci95": [7.0 - j, 8.0 - j],
                                "pairwise": {"win": 3, "tie": 10, "loss": 5 + j, "position_flip_rate": 0.1}}
                    for j, r in enumerate(r for r in out["builds"] if r["kind"] == "GGUF")}
    return out


@pytest.fixture
def synthetic_run(tmp_path) -> SyntheticRun:
    return make_run(tmp_path / "out")


# --- a real headless Chromium -----------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    found = (os.environ.get("EDGETUNE_CHROMIUM") or shutil.which("chromium")
             or shutil.which("chromium-browser"))
    return found if found and Path(found).exists() else None


# package scope: playwright's sync API keeps its event loop running in this thread while the browser is open,
# and any later asyncio.run in the session would refuse to nest
@pytest.fixture(scope="package")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    exe = chromium_path()
    if exe is None:
        pytest.skip("chromium is not installed (run scripts/setup-test-deps.sh as root, "
                    "or set EDGETUNE_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()
