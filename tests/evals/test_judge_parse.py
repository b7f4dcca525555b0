"""Judge pieces that need no server: strict verdict parsing, pairwise arithmetic, config, rubrics."""

from __future__ import annotations

import logging

import pytest
from edgetune.errors import ConfigError, JudgeError
from edgetune.evals.judge import parse_preference, parse_rating
from edgetune.judge_config import JudgeConfig
from edgetune.evals.judge_results import PairwiseItemResult, combine
from edgetune.evals.suites import EVALS_DIR, available, load_rubric, load_suite
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("Rating: 7", 7),
        ("Clear and correct.\n\nRating: 10", 10),
        ("Good.\n**Rating:** 8/10", 8),
        ("rating: 3.", 3),
        ('{"rating": 4}', 4),
        ('```json\n{"rating": 9}\n```', 9),
        ("Rating: 6\nso, to repeat:\nRating: 6", 6),
    ],
)
def test_parse_rating_accepts_the_strict_forms(text, rating):
    assert parse_rating(text) == (rating, "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I would give it a 7.", 'no "Rating: N" line'),
        ("Rating: 11", "rating 11 outside 1-10"),
        ("Rating: 0", "rating 0 outside 1-10"),
        ("Rating: 7\nRating: 8", "conflicting ratings [7, 8]"),
        ("Rating:\n7", 'no "Rating: N" line'),  # never across lines
        ("Rating: 7 because it is fine", 'no "Rating: N" line'),
        ('{"rating": "7"}', "JSON verdict without an integer rating 1-10 (rating='7')"),
        ('{"rating": 7.5}', "JSON verdict without an integer rating 1-10 (rating=7.5)"),
        ('{"score": 7}', "JSON verdict without an integer rating 1-10 (rating=None)"),
        ("", 'no "Rating: N" line'),
    ],
)
def test_parse_rating_refuses_to_guess(text, reason):
    assert parse_rating(text) == (None, reason)


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("A is better.\nVerdict: A", ("A", "")),
        ("Verdict: b", ("B", "")),
        ("**Verdict:** [[tie]]", ("tie", "")),
        ('{"winner": "B"}', ("B", "")),
        ("Verdict: A\nVerdict: B", (None, "conflicting verdicts ['a', 'b']")),
        ("Assistant A wins", (None, 'no "Verdict: A|B|tie" line')),
        ("Verdict: C", (None, 'no "Verdict: A|B|tie" line')),
        ('{"winner": "both"}', (None, "JSON verdict without winner A, B or tie (winner='both')")),
    ],
)
def test_parse_preference(text, verdict):
    assert parse_preference(text) == verdict


@pytest.mark.parametrize(
    ("ab", "ba", "outcome", "flipped"),
    [
        ("A", "B", "a", False),  # a wins in both positions
        ("B", "A", "b", False),
        ("tie", "tie", "tie", False),
        ("A", "A", "tie", True),  # always the first position: a flip, counted as a tie
        ("B", "B", "tie", True),
        ("A", "tie", "tie", True),
        ("A", None, "invalid", False),
        (None, None, "invalid", False),
    ],
)
def test_pairwise_item_outcome(ab, ba, outcome, flipped):
    item = PairwiseItemResult.from_verdicts("x", ab, ba)
    assert (item.outcome, item.flipped, item.identical) == (outcome, flipped, False)


def test_pairwise_counts_and_rates():
    items = [
        PairwiseItemResult.from_verdicts(str(i), ab, ba)
        for i, (ab, ba) in enumerate(
            [("A", "B"), ("A", "B"), ("B", "A"), ("A", "A"), ("tie", "tie"), (None, "A")]
        )
    ]
    items.append(PairwiseItemResult.identical_answers("same"))
    r = combine(items, names=("gpu", "Q4_0"), calls=12, cached=0, elapsed_s=1.0, judge={})
    assert r.win_tie_loss == (2, 3, 1) and r.invalid == 1 and r.identical == 1 and r.n == 7
    assert r.flips == 1 and r.flip_rate == pytest.approx(1 / 5)  # 5 judged items with two valid verdicts
    # shown A/B outside identical items: A,B,A,B,B,A,A,A + the invalid item's A -> 6 of 9 chose A
    assert r.first_position_rate == pytest.approx(6 / 9)
    assert r.to_dict()["names"] == ["gpu", "Q4_0"] and len(r.to_dict()["items"]) == 7


def test_dropped_backoff_fields_load_with_a_warning(caplog):
    # the hand-written backoff's settings, from configs written before the openai client's retries took over
    caplog.set_level(logging.WARNING, logger="edgetune.judge_config")
    cfg = JudgeConfig(base_url="https://api.example.com/v1", model="m", backoff_base_s=0.5, backoff_max_s=9)
    assert cfg.max_retries == 4 and "backoff_base_s" not in cfg.model_dump()
    assert "judge.backoff_base_s and judge.backoff_max_s ignored" in caplog.text
    with pytest.raises(ValidationError, match="extra"):
        JudgeConfig(base_url="https://api.example.com/v1", model="m", backoff_min_s=1)


def test_config_names_the_key_variable_and_never_holds_the_key(monkeypatch):
    secret = "sk-proj-THIS-IS-A-KEY-NOT-A-NAME"
    with pytest.raises(ValidationError) as info:
        JudgeConfig(base_url="https://api.example.com/v1", model="m", api_key_env=secret)
    assert "NAME of an environment variable" in str(info.value) and secret not in str(info.value)
    with pytest.raises(ValidationError, match="http"):
        JudgeConfig(base_url="api.example.com", model="m")
    with pytest.raises(ValidationError, match="extra"):
        JudgeConfig(base_url="https://x/v1", model="m", api_key=secret)
    with pytest.raises(ValidationError):
        JudgeConfig(base_url="https://x/v1", model="m", temperature=0.7)
    cfg = JudgeConfig(base_url="https://x/v1/", model="m", api_key_env="EDGETUNE_TEST_UNSET_KEY")
    assert cfg.base_url == "https://x/v1"
    monkeypatch.delenv("EDGETUNE_TEST_UNSET_KEY", raising=False)
    with pytest.raises(JudgeError, match=r"\$EDGETUNE_TEST_UNSET_KEY is not set"):
        cfg.api_key()
    monkeypatch.setenv("EDGETUNE_TEST_UNSET_KEY", "k")
    assert cfg.api_key() == "k" and "k" not in cfg.describe().values()


def test_packaged_rubrics_and_suites_load():
    assert {"helpfulness", "reference-match"} <= set(available("judge"))
    rubric = load_rubric("helpfulness")
    assert rubric.single and rubric.pairwise and rubric.version >= 1
    suite = load_suite("sst2")
    assert suite.judge.rubric == "reference-match"
    # the suite describes what the default build runs: the same sets and sizes as eval.forgetting's default
    from edgetune.config import DEFAULT_FORGETTING

    assert {f.name: f.n_items for f in suite.forgetting} == DEFAULT_FORGETTING
    assert load_rubric(EVALS_DIR / "judge" / "helpfulness.yaml") == rubric


def test_rubric_render_and_reference():
    rubric = load_rubric("reference-match")
    text = rubric.render("single", question="Q?", reference="positive", answer="{not a field}")
    assert "positive" in text and "{not a field}" in text
    with pytest.raises(JudgeError, match="needs a reference"):
        rubric.render("single", question="Q?", reference=None, answer="x")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "name: r\nversion: 1\ndescription: d\nsystem: s\nsingle: '{question}'\n",
            "lacks placeholder {answer}",
        ),
        (
            "name: r\nversion: 1\ndescription: d\nsystem: s\nsingle: '{question} {answer} {score}'\n",
            "unknown placeholder {score}",
        ),
        ("name: r\nversion: 1\ndescription: d\nsystem: s\n", "needs a `single` or a `pairwise` template"),
        (
            "name: r\nversion: 1\ndescription: d\nsystem: s\nsingle: '{question} {answer}'\nextra: 1\n",
            "extra",
        ),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_rubrics_are_refused(tmp_path, yaml_text, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_rubric(path)


def test_unknown_names_suggest_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'helpfulness'"):
        load_rubric("helpfullness")
    (tmp_path / "suites").mkdir()
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "only-single.yaml").write_text(
        "name: only-single\nversion: 1\ndescription: d\nsystem: s\nsingle: '{question} {answer}'\n"
    )
    (tmp_path / "suites" / "s.yaml").write_text(
        "name: s\ndescription: d\njudge: {rubric: only-single, mode: pairwise}\n"
    )
    with pytest.raises(ConfigError, match="has no pairwise template"):
        load_suite("s", root=tmp_path)
    (tmp_path / "suites" / "t.yaml").write_text("name: t\ndescription: d\nforgetting: [{name: mmlu2}]\n")
    with pytest.raises(ConfigError, match="unknown forgetting set 'mmlu2'"):
        load_suite("t", root=tmp_path)


def test_user_folder_adds_and_overrides_suites_and_rubrics(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    mine = tmp_path / "edgetune"
    (mine / "suites").mkdir(parents=True)
    (mine / "judge").mkdir()
    (mine / "judge" / "terse.yaml").write_text(
        "name: terse\nversion: 1\ndescription: d\nsystem: s\npairwise: '{question} {answer_a} {answer_b}'\n")
    (mine / "suites" / "mine.yaml").write_text(
        "name: mine\ndescription: d\ntask: {data: d.jsonl, metric: {name: json, json_schema: s.json}}\n"
        "judge: {rubric: terse}\n")
    (mine / "suites" / "s.json").write_text('{"type": "object"}')
    (mine / "suites" / "sst2.yaml").write_text("name: sst2\ndescription: my own\n")
    assert {"mine", "sst2", "extract-json"} <= set(available("suites")) and "terse" in available("judge")
    suite = load_suite("mine")  # its rubric is the user's, its schema beside the user's suite file
    assert suite.judge.rubric == "terse" and suite.task.metric.json_schema == {"type": "object"}
    assert load_suite("sst2").description == "my own"  # overrides the shipped one
    assert load_suite("extract-json").task.metric.json_schema["required"] == ["name", "age", "city"]
