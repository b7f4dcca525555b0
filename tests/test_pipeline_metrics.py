"""`edgetune.pipeline.build` on a non-label task shape, end to end: the first 42 rows of the committed JSON
extraction task (evals/tasks/extract-json.jsonl) and the tiny Llama. Nothing in the config names the metric
or the token budget: the build must pick `json` from the references, size max_new_tokens from their token
lengths, score and count truncations per item in every build, and carry all of it into report.json and
report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edgetune.bundle import SUITE_FILE
from edgetune.config import BuildConfig, DataConfig, EvalConfig, ExportConfig, GateConfig, ModelConfig, TrainConfig
from edgetune.constants import Quant
from edgetune.evals.metrics import MetricSpec, make_metric
from edgetune.evals.stage import read_results
from edgetune.home import edgetune_home
from edgetune.pipeline import build

TASK = Path(__file__).resolve().parents[1] / "evals" / "tasks" / "extract-json.jsonl"
BUILDS = ["base", "gpu", "Q8_0"]


@pytest.fixture(scope="module")
def json_build(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("json-build")
    data = out / "extract-json-42.jsonl"
    data.write_text("".join(TASK.read_text().splitlines(keepends=True)[:42]))
    cfg = BuildConfig(
        # the host target: its bundle needs no cross-built aarch64 runtime, and the metric does not depend on it
        target="x86_64-host", out_dir=out / "out", threads=1,
        model=ModelConfig(source=str(tiny_model_dir)),
        data=DataConfig(source=str(data), heldout_size=10, train_size=32),
        train=TrainConfig(method="lora", r=8, alpha=16, max_steps=2, batch_size=8, learning_rate=1e-2,
                          warmup_ratio=0.0),
        export=ExportConfig(quants=[Quant.Q8_0], imatrix=False, lora_gguf=False, gates=GateConfig(mode="warn")),
        eval=EvalConfig(judge_items=0, forgetting={}),
    )
    return cfg, build(cfg, edgetune_home())


def test_metric_and_budget_come_from_the_data(json_build, tiny_model_dir):
    from transformers import AutoTokenizer

    cfg, result = json_build
    plan = result.report["context"]["task_metric"]
    assert plan["metric"] == "json" and plan["why"].startswith("auto: every reference is a JSON object")
    heldout = [json.loads(line) for line in result.stages["data"].file("heldout").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = sorted(len(tok(ex["messages"][-1]["content"], add_special_tokens=False)["input_ids"])
                     for ex in heldout)
    p99 = lengths[math.ceil(0.99 * len(lengths)) - 1]  # nearest rank
    assert plan["max_new_tokens"] == math.ceil(1.25 * p99) + 16 and plan["max_new_tokens_derived"]
    for name in BUILDS:
        assert result.stages[f"eval-{name}"].metrics["max_new_tokens"] == plan["max_new_tokens"]


def test_every_build_scores_items_with_the_json_metric(json_build):
    cfg, result = json_build
    metric = make_metric(MetricSpec(name="json"))
    for name in BUILDS:
        art = result.stages[f"eval-{name}"]
        rows = read_results(art)
        assert len(rows) == 10 and art.metrics["metric"] == "json"
        for r in rows:
            rescored = metric.score(r["output"], r["reference"])
            assert (r["score"], r["correct"]) == (rescored.score, rescored.correct)
            assert r["detail"]["parsed"] == rescored.detail["parsed"]
            assert isinstance(r["truncated"], bool) and r["correct"] == (r["score"] == 1.0)
        assert art.metrics["truncated"] == sum(r["truncated"] for r in rows)
        assert art.metrics["score"] == pytest.approx(sum(r["score"] for r in rows) / 10)
    # a random 2-layer model writes no JSON and rarely stops: the truncation path is really taken
    assert sum(result.stages[f"eval-{b}"].metrics["truncated"] for b in BUILDS) > 0


def test_report_carries_metric_score_and_truncations(json_build):
    _, result = json_build
    report = json.loads(result.report_json.read_text())
    rows = {r["name"]: r for r in report["builds"]}
    for name in BUILDS:
        m = result.stages[f"eval-{name}"].metrics
        assert rows[name]["metric"] == "json"
        assert rows[name]["score"] == pytest.approx(m["score"]) and rows[name]["truncated"] == m["truncated"]
    md = result.report_md.read_text()
    assert "## Task metric (held-out)" in md and "score (JSON fields matching)" in md
    # the device runs the bundled held-out suite with the same budget
    suite = [json.loads(line) for line in (result.bundle_dir / SUITE_FILE).read_text().splitlines()]
    assert len(suite) == 10
    assert {row["max_tokens"] for row in suite} == {report["context"]["task_metric"]["max_new_tokens"]}
