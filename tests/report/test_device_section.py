"""Device results (as `edgetune eval --out RUN/devices` fetches them) become the report's device section."""

from __future__ import annotations

import json
import random

import pytest

from edgetune.report.device import device_sections
from edgetune.report.stats import mcnemar_exact_p, wilson_interval


@pytest.fixture
def run(tmp_path):
    rng = random.Random(3)
    job = tmp_path / "devices" / "pi@10.0.0.5" / "0123456789abcdef"
    job.mkdir(parents=True)
    rows, gpu = [], {}
    for i in range(40):
        ref = rng.choice(["positive", "negative"])
        right = rng.random() < 0.8
        rows.append({"id": f"s{i}", "reference": ref, "output": ref if right else "maybe",
                     "prompt_tokens_per_s": 50 + i, "gen_tokens_per_s": 10 + i % 5, "ttft_ms": 100 + 10 * i,
                     "peak_rss_mb": 300 + i})
        gpu[f"s{i}"] = rng.random() < 0.85
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (job / "summary.json").write_text(json.dumps({"job": {"model": "/home/pi/b/models/m-Q4_0.gguf"}}))
    (job / "device_run.json").write_text(json.dumps({"device": "pi@10.0.0.5", "device_facts": {"cpu": "A76"}}))
    report = {"builds": [{"name": "Q4_0", "plan": {"predicted_prompt_tps": 60.0, "predicted_gen_tps": 12.0}}]}
    return tmp_path, rows, gpu, report


def test_device_entry_pairs_with_the_gpu_build(run):
    run_dir, rows, gpu, report = run
    [(name, d)] = device_sections(run_dir, report, gpu).items()
    assert name == "Q4_0 @ pi@10.0.0.5" and d["quant"] == "Q4_0" and d["n"] == 40
    correct = {r["id"]: r["output"] == r["reference"] for r in rows}
    hits = sum(correct.values())
    assert d["accuracy"] == hits / 40 and d["ci95"] == list(wilson_interval(hits, 40))
    lost = sum(gpu[i] and not correct[i] for i in correct)
    gained = sum(correct[i] and not gpu[i] for i in correct)
    assert (d["flips_lost"], d["flips_gained"]) == (lost, gained)
    assert d["mcnemar_p"] == mcnemar_exact_p(lost, gained)
    import statistics

    assert d["prompt_tps"] == statistics.median(r["prompt_tokens_per_s"] for r in rows)
    assert d["peak_rss_mb"] == max(r["peak_rss_mb"] for r in rows)
    assert d["ttft_p50_s"] == pytest.approx(sorted(r["ttft_ms"] for r in rows)[20] / 1000)
    assert d["predicted_prompt_tps"] == 60.0 and d["predicted_gen_tps"] == 12.0


def test_device_answers_are_scored_with_the_builds_metric(tmp_path):
    """A json run: device answers get the json metric's per-field score, not the label rule."""
    job = tmp_path / "devices" / "pi" / "job"
    job.mkdir(parents=True)
    ref = json.dumps({"name": "Ana", "age": 3})
    rows = [{"id": "a", "reference": ref, "output": '{"name": "ana", "age": 3}'},  # whole object: 1.0
            {"id": "b", "reference": ref, "output": '{"name": "Ana", "age": 4}'},  # one of two fields: 0.5
            {"id": "c", "reference": ref, "output": "Ana, 3"}]  # not JSON: 0.0
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (job / "summary.json").write_text(json.dumps({"job": {"model": "m-Q8_0.gguf"}}))
    (job / "device_run.json").write_text(json.dumps({"device": "pi"}))
    report = {"builds": [], "context": {"task_metric": {"metric": "json", "metric_options": {}}}}
    [d] = device_sections(tmp_path, report, {"a": True, "b": True, "c": False}).values()
    assert (d["metric"], d["score"], d["accuracy"]) == ("json", pytest.approx(1.5 / 3), pytest.approx(1 / 3))
    assert (d["flips_lost"], d["flips_gained"]) == (1, 0)  # b: right on the GPU build, not on the device


def test_no_devices_folder_means_no_section(tmp_path):
    assert device_sections(tmp_path, {"builds": []}, {}) == {}


def test_recommendation_skips_builds_that_do_not_fit():
    from edgetune.report.recommend import recommend

    def row(name, size, status):
        return {"name": name, "kind": "GGUF", "size_bytes": size, "mcnemar_p": 1.0, "delta_vs_gpu": 0.0,
                "accuracy": 0.9, "plan": {"status": status, "need_bytes": size * 3},
                "vs_gpu": {"verdict": "not worse", "diff": 0.0, "ci95": [-0.01, 0.01], "margin": 0.02, "n": 500}}

    rec = recommend({"builds": [row("Q4_0", 100, "swap"), row("Q8_0", 200, "fits")]})
    assert rec["quant"] == "Q8_0"
    assert rec["excluded"]["Q4_0"].startswith("does not fit the target (swap")


def test_llama_bench_next_to_the_prediction_in_the_device_table(run):
    """device_run.json's llama-bench result and prediction become schema.Bench and two columns of the table."""
    from edgetune.report.sections import device_table

    run_dir, _, gpu, report = run
    record_path = run_dir / "devices" / "pi@10.0.0.5" / "0123456789abcdef" / "device_run.json"
    record = json.loads(record_path.read_text())
    record["bench"] = {"tests": [{"test": "pp512", "n_prompt": 512, "n_gen": 0, "avg_ts": 45.0},
                                 {"test": "tg128", "n_prompt": 0, "n_gen": 128, "avg_ts": 9.0}],
                       "prompt_tokens_per_s": 45.0, "gen_tokens_per_s": 9.0}
    record["predicted"] = {"prompt_tok_s": 60.0, "gen_tok_s": 12.0, "efficiency_source": "published fit"}
    record_path.write_text(json.dumps(record))
    [d] = device_sections(run_dir, report, gpu).values()
    assert d["bench"] == {"n_prompt": 512, "n_gen": 128, "prompt_tps": 45.0, "gen_tps": 9.0,
                          "predicted_prompt_tps": 60.0, "predicted_gen_tps": 12.0, "prompt_ratio": 0.75,
                          "gen_ratio": 0.75, "efficiency_source": "published fit", "error": None}
    table = device_table({"builds": [], "device": {"Q4_0 @ pi": d}})
    row = dict(zip(table.columns, table.rows[0]))
    assert row["llama-bench prompt (measured / predicted)"] == "pp512: 45 / 60 (75%)"
    assert row["llama-bench generation (measured / predicted)"] == "tg128: 9 / 12 (75%)"
    record["bench"] = {"skipped": "no llama-bench at b/bin/llama-bench"}
    record_path.write_text(json.dumps(record))
    [d] = device_sections(run_dir, report, gpu).values()
    row = dict(zip(table.columns, device_table({"builds": [], "device": {"Q4_0 @ pi": d}}).rows[0]))
    assert row["llama-bench prompt (measured / predicted)"] == "none: no llama-bench at b/bin/llama-bench"
