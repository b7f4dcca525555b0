"""Choosing the metric from the references (`auto`), sizing the token budget, and the metric as config: in
edgetune.yaml, on the command line and in suites, with the committed example tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetune.config import BuildConfig, load_config
from edgetune.errors import ConfigError
from edgetune.evals.metrics import MetricSpec, detect_metric, resolve_spec
from edgetune.evals.metrics.detect import derive_max_new_tokens, percentile
from edgetune.evals.suites import load_suite

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "evals" / "tasks"


@pytest.mark.parametrize(("references", "expected"), [
    (["positive", "negative", "Positive."], "label"),
    (["green", "blue", "white", "black", "red", "yellow"], "label"),
    (['{"a": 1}', "[1, 2]"], "json"),
    (["3 + 4 = 7\n#### 7", "#### 1,200"], "number"),
    (["42", "7", "-3.5"], "number"),  # a number task, even with few distinct answers
    (["It is 42.", "about 7%"], "number"),
    (['{"name": "Ana", "age": 3}', "Ana is three years old"], "text"),  # JSON only when every reference is
    (["The fox is a small mammal.", "Sam walked home."], "text"),
    ([f"city number {chr(97 + i)}" for i in range(21)], "text"),  # 21 distinct answers: not a label set
    (["one two three four"], "text"),  # four words: not a short label
    (["in 1999 it rained", "Paris"], "text"),
])
def test_detect_metric(references, expected):
    assert detect_metric(references)[0] == expected


def test_detect_needs_references():
    with pytest.raises(ValueError, match="without references"):
        detect_metric([])


@pytest.mark.parametrize(("task", "metric"), [("extract-json", "json"), ("arith-number", "number"),
                                              ("instruct-text", "text")])
def test_committed_example_tasks_detect_their_own_metric(task, metric):
    rows = [json.loads(line) for line in (TASKS / f"{task}.jsonl").read_text().splitlines()]
    assert len(rows) == 600 and len({r["id"] for r in rows}) == 600
    assert detect_metric([r["output"] for r in rows])[0] == metric


def test_resolve_spec_options_decide_before_the_data():
    refs = ["positive", "negative"]
    assert resolve_spec(MetricSpec(), refs)[0].name == "label"
    assert resolve_spec(MetricSpec(pattern="A: (.+)"), refs)[0].name == "regex"
    assert resolve_spec(MetricSpec(json_schema={"type": "object"}), refs)[0].name == "json"
    assert resolve_spec(MetricSpec(name="exact"), refs) == (MetricSpec(name="exact"), "set in the config")


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert (percentile(values, 99), percentile(values, 50), percentile(values, 100)) == (99, 50, 100)
    assert percentile([5], 99) == 5


def test_derive_max_new_tokens():
    assert derive_max_new_tokens("label", [1, 1, 2]) == 4  # the label budget edgetune always used
    assert derive_max_new_tokens("label", [1, 5]) == 7  # a label longer than 2 tokens gets room
    # 100 references of 1..100 tokens: p99 = 99 -> ceil(1.25 * 99) + 16 = 124 + 16 = 140
    assert derive_max_new_tokens("json", list(range(1, 101))) == 140
    assert derive_max_new_tokens("text", [2000]) == 512  # capped
    with pytest.raises(ValueError):
        derive_max_new_tokens("text", [])


def test_build_config_takes_a_metric_name_or_mapping(tmp_path):
    assert BuildConfig().eval.metric.name == "auto" and BuildConfig().eval.max_new_tokens is None
    cfg = BuildConfig().with_overrides({"eval.metric": "number"})
    assert cfg.eval.metric == MetricSpec(name="number")
    schema = tmp_path / "schemas" / "p.json"
    schema.parent.mkdir()
    schema.write_text(json.dumps({"type": "object"}))
    (tmp_path / "edgetune.yaml").write_text("eval:\n  metric: {name: json, json_schema: schemas/p.json}\n")
    assert load_config(tmp_path / "edgetune.yaml").eval.metric.json_schema == {"type": "object"}


def test_bad_metric_in_edgetune_yaml_is_one_line_naming_the_field(tmp_path):
    (tmp_path / "edgetune.yaml").write_text("eval:\n  metric: {name: regex, pattern: 'Answer: .+'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "edgetune.yaml")
    message = str(err.value)
    assert "eval.metric.pattern" in message and "has no capture group" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"eval.metric.name: .*unknown metric 'rouge'"):
        BuildConfig().with_overrides({"eval.metric": "rouge"})


def test_suites_carry_their_metric():
    assert load_suite("sst2").task.metric.name == "label"
    assert load_suite("sst2").task.max_new_tokens == 4
    extract = load_suite("extract-json").task
    assert extract.metric.name == "json" and extract.metric.json_schema["required"] == ["name", "age", "city"]
    assert extract.max_new_tokens is None
    assert load_suite("arith-number").task.metric == MetricSpec(name="number", tolerance=0.0)
    assert load_suite("instruct-text").task.metric.name == "text"


def test_schema_matches_every_committed_json_reference():
    from edgetune.evals.metrics import make_metric

    metric = make_metric(load_suite("extract-json").task.metric)
    rows = [json.loads(line) for line in (TASKS / "extract-json.jsonl").read_text().splitlines()]
    assert all(metric.reference_problem(r["output"]) is None for r in rows)
    assert metric.score(rows[0]["output"], rows[0]["output"]).correct


def test_bad_suite_metric_names_the_file_and_field(tmp_path):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "bad.yaml").write_text("name: bad\ndescription: x\ntask:\n  data: d.jsonl\n"
                                                 "  metric: {name: json, json_schema: {type: objekt}}\n")
    with pytest.raises(ConfigError, match=r"suite bad: task.metric.json_schema: .*not a valid JSON Schema"):
        load_suite("bad", root=tmp_path)
