"""`edgetune.pipeline.build` on the free-text task shape (the first 42 rows of evals/tasks/instruct-text.jsonl)
with the tiny Llama: the metric comes out as `text`, so every build's answers are also graded 1-10 against the
reference by the (real, local llama.cpp) judge, and the report carries each build's mean rating, its paired
difference from the GPU build, and the ratings' rank correlation with chrF; a rebuild re-judges nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgetune.config import BuildConfig, DataConfig, EvalConfig, ExportConfig, GateConfig, ModelConfig, TrainConfig
from edgetune.constants import Quant
from edgetune.evals.stage import read_results
from edgetune.home import edgetune_home
from edgetune.pipeline import build
from edgetune.report.pointwise import spearman

TASK = Path(__file__).resolve().parents[1] / "evals" / "tasks" / "instruct-text.jsonl"
BUILDS = ["base", "gpu", "Q8_0"]
JUDGED = 4


def text_config(model_dir: Path, out: Path) -> BuildConfig:
    data = out / "instruct-text-42.jsonl"
    data.write_text("".join(TASK.read_text().splitlines(keepends=True)[:42]))
    return BuildConfig(
        target="x86_64-host", out_dir=out / "out", threads=1,
        model=ModelConfig(source=str(model_dir)),
        data=DataConfig(source=str(data), heldout_size=10, train_size=32),
        train=TrainConfig(method="lora", r=8, alpha=16, max_steps=2, batch_size=8, learning_rate=1e-2,
                          warmup_ratio=0.0),
        export=ExportConfig(quants=[Quant.Q8_0], imatrix=False, lora_gguf=False, gates=GateConfig(mode="warn")),
        eval=EvalConfig(judge_items=JUDGED, forgetting={}, max_new_tokens=12),
    )


@pytest.fixture(scope="module")
def text_build(tmp_path_factory, tiny_model_dir):
    cfg = text_config(tiny_model_dir, tmp_path_factory.mktemp("text-build"))
    return cfg, build(cfg, edgetune_home())


def ratings(result, name: str) -> dict[str, int | None]:
    return {r["id"]: r["rating"] for r in read_results(result.stages[f"judge-single-{name}"])}


def test_text_metric_turns_the_pointwise_judge_on_for_every_build(text_build):
    _, result = text_build
    assert result.report["context"]["task_metric"]["metric"] == "text"
    heldout = [r["id"] for r in read_results(result.stages["eval-gpu"])][:JUDGED]
    for name in BUILDS:
        art = result.stages[f"judge-single-{name}"]
        rows = read_results(art)
        assert [r["id"] for r in rows] == heldout  # the same items for every build, in order
        assert all(r["rating"] is None or 1 <= r["rating"] <= 10 for r in rows)
        assert all(r["valid"] == (r["rating"] is not None) for r in rows)
        assert art.metrics["n"] == JUDGED and art.metrics["judge"]


def test_report_rows_carry_the_ratings_summary(text_build):
    _, result = text_build
    report = json.loads(result.report_json.read_text())
    rows = {r["name"]: r for r in report["builds"]}
    gpu = ratings(result, "gpu")
    for name in BUILDS:
        mine = ratings(result, name)
        valid = [v for v in mine.values() if v is not None]
        j = rows[name]["judge"]
        assert j["n_valid"] == len(valid)
        assert j["mean_score"] == (pytest.approx(sum(valid) / len(valid)) if valid else None)
        assert j["reliability"]["embedded_judge"] is True
        scores = {r["id"]: r["score"] for r in read_results(result.stages[f"eval-{name}"])}
        shared = [k for k in mine if mine[k] is not None]
        assert j["metric_spearman"] == spearman([mine[k] for k in shared], [scores[k] for k in shared])
        if name == "gpu":
            assert j["vs_gpu"] is None
            continue
        paired = [k for k in mine if mine[k] is not None and gpu[k] is not None]
        assert j["vs_gpu"]["n"] == len(paired)
        if paired:
            assert j["vs_gpu"]["diff"] == pytest.approx(sum(mine[k] - gpu[k] for k in paired) / len(paired))
    assert "pairwise" in rows["Q8_0"]["judge"]  # the pairwise comparison still runs beside the ratings
    md = result.report_md.read_text()
    assert "Δ vs GPU (95% CI)" in md and "rating ~ metric" in md


def test_rebuild_judges_nothing_again(text_build, tmp_path):
    cfg, _ = text_build
    out = Path(shutil.copytree(cfg.out_dir, tmp_path / "out"))
    again = build(cfg.with_overrides({"out_dir": out}), edgetune_home())
    judged = [k for k in again.stages if k.startswith("judge")]
    assert judged and not [k for k in judged if not again.stages[k].cached]


def test_pointwise_can_be_turned_off(tiny_model_dir, tmp_path):
    cfg = text_config(tiny_model_dir, tmp_path)
    off = cfg.with_overrides({"eval": {"judge_pointwise": False, "judge_items": 0}})
    assert off.eval.judge_pointwise is False
    result = build(off, edgetune_home())
    assert not [k for k in result.stages if k.startswith("judge")]
    assert all("judge" not in r for r in result.report["builds"])
