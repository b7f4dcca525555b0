"""Each task metric on hand-checked cases (the expected values were worked out by hand, in the comments), and
the one-line errors a bad metric spec gets."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from edgetune.evals.metrics import MetricSpec, Score, make_metric, normalise_text
from edgetune.evals.metrics.number import final_number
from edgetune.evals.metrics.structured import parse_answer


def scorer(name: str, **options):
    return make_metric(MetricSpec(name=name, **options))


@pytest.mark.parametrize(("text", "expected"), [
    ("  Hello,  World!\n", "hello, world"),
    ("Line one.\nLine two.", "line one. line two"),  # every line counts, joined by one space
    ("ＡＢＣ１２", "abc12"),  # NFKC: full-width letters and digits
    ("“Straße”", "strasse"),  # casefold, quotes stripped
    ("", ""),
])
def test_normalise_text(text, expected):
    assert normalise_text(text) == expected


@pytest.mark.parametrize(("name", "output", "reference", "correct"), [
    ("label", "Positive.\nThe film is great", "positive", True),  # first line only
    ("label", "positive review", "positive", False),
    ("exact", "Paris, France.", "paris, france", True),
    ("exact", "Paris.\nIt is the capital.", "Paris", False),  # the whole answer counts
    ("contains", "I think it is Paris.", "paris", True),
    ("contains", "It is (Paris), France", "Paris", True),
    ("contains", "Not sure", "no", False),  # whole words only: "no" is not inside "not"
    ("contains", "Let me re-run it", "re-run", True),
    ("contains", "Lyon", "Paris", False),
])
def test_string_metrics(name, output, reference, correct):
    s = scorer(name).score(output, reference)
    assert (s.correct, s.score) == (correct, 1.0 if correct else 0.0)


def test_regex_compares_the_capture_group():
    m = scorer("regex", pattern=r"Answer:\s*(\w+)")
    assert m.score("Some thinking.\nAnswer: Blue", "blue") == Score(1.0, True, {"extracted": "Blue"})
    assert m.score("Answer: red", "blue") == Score(0.0, False, {"extracted": "red"})
    assert m.score("no marker here", "blue") == Score(0.0, False, {"extracted": None})
    named = scorer("regex", pattern=r"(\d+) then (?P<answer>\w+)")  # the group named answer wins over group 1
    assert named.score("3 then go", "go").correct


@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is 1,234.", 1234.0),
    ("He had 5 apples, then 7.", 7.0),  # the last number
    ("12 + 7 = 19\n#### 19", 19.0),
    ("#### 18\nI also counted 99 more", 18.0),  # GSM8K's marker wins over later numbers
    ("It costs $5.50", 5.5),
    ("Temperature: −3 degrees", -3.0),  # Unicode minus
    ("Half is .5", 0.5),
    ("version v2 of x3", None),  # digits glued to letters are not numbers
    ("no numbers at all", None),
])
def test_final_number(text, expected):
    assert final_number(text) == expected


def test_number_metric_tolerance():
    exact, loose = scorer("number", tolerance=0.0), scorer("number", tolerance=0.01)
    assert exact.score("so 3.0", "#### 3").correct  # 3.0 == 3
    assert not exact.score("about 3.005", "3").correct
    assert loose.score("about 3.005", "3").correct
    assert exact.score("nothing", "3") == Score(0.0, False, {"extracted": None, "expected": 3.0})


def test_parse_answer_forgives_a_fence_and_notes_trailing_text():
    assert parse_answer('```json\n{"a": 1}\n```') == ({"a": 1}, None, False)
    assert parse_answer('Sure! {"a": 1} Hope this helps.') == ({"a": 1}, None, True)
    value, error, _ = parse_answer('{"a": 1')  # cut off: what a truncated answer looks like
    assert value is None and error.startswith("Expecting")


REF = json.dumps({"name": "Maria Silva", "age": 34, "city": "Lisbon"})


@pytest.mark.parametrize(("output", "score", "fields"), [
    ('{"name": "maria silva", "age": 34.0, "city": "Lisbon "}', 1.0, {"name": True, "age": True, "city": True}),
    ('{"name": "Maria Silva", "age": 43, "city": "Lisbon"}', 2 / 3, {"name": True, "age": False, "city": True}),
    ('{"name": "Maria Silva", "city": "Lisbon"}', 2 / 3, {"name": True, "age": False, "city": True}),
    # an extra key is a wrong field: 3 of 4 keys right, and the object is not the reference
    ('{"name": "Maria Silva", "age": 34, "city": "Lisbon", "job": "nurse"}', 3 / 4,
     {"name": True, "age": True, "city": True, "job": False}),
    ('{"name": "Maria Silva", "age": "34", "city": "Lisbon"}', 2 / 3, {"name": True, "age": False, "city": True}),
    ('["Maria Silva", 34, "Lisbon"]', 0.0, {"name": False, "age": False, "city": False}),
])
def test_json_per_field(output, score, fields):
    s = scorer("json").score(output, REF)
    assert s.score == pytest.approx(score)
    assert s.correct == (s.score == 1.0)
    assert s.detail["fields"] == fields and s.detail["parsed"]


def test_json_unparsable_and_schema():
    m = scorer("json")
    s = m.score('{"name": "Maria Silva", "age": 3', REF)
    assert (s.score, s.correct, s.detail["parsed"]) == (0.0, False, False)
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["name", "age", "city"]}
    strict = scorer("json", json_schema=schema)
    s = strict.score('{"name": "Maria Silva", "age": "34", "city": "Lisbon"}', REF)
    assert (s.score, s.detail["schema_valid"]) == (0.0, False) and "age" in s.detail["error"]
    assert strict.score(REF, REF).detail["schema_valid"] is True
    assert strict.reference_problem('{"name": "x"}').startswith("has a reference that does not match json_schema")
    assert m.reference_problem("Maria, 34").startswith("has a reference that is not JSON")


def test_json_non_object_reference_is_compared_whole():
    m = scorer("json")
    assert m.score("[1, 2, 3]", "[1, 2, 3]").correct
    assert not m.score("[1, 3, 2]", "[1, 2, 3]").correct  # lists keep their order


def test_text_metric_chrf_and_rouge_l():
    m = scorer("text")
    same = m.score("The cat sat on the mat.", "The cat sat on the mat.")
    assert same.score == 1.0 and same.correct and same.detail["rouge_l"] == 1.0
    # ROUGE-L by hand: reference 6 words, answer 5, LCS 5 -> P = 1, R = 5/6, F1 = 2PR / (P + R) = 10/11
    s = m.score("the cat on the mat", "the cat sat on the mat")
    assert s.detail["rouge_l"] == pytest.approx(10 / 11, abs=1e-6) and not s.correct
    # chrF by hand (sacrebleu: character n-grams of order 1..6, beta 2, orders with n-grams on both sides
    # averaged): "abc" vs "abd" -> 1-grams 2/3 precision and recall (F 2/3), 2-grams 1/2 (F 1/2), 3-grams 0,
    # no longer n-grams -> (2/3 + 1/2 + 0) / 3 = 7/18
    assert m.score("abc", "abd").score == pytest.approx(7 / 18, abs=1e-6)
    assert m.score("xyz", "abd").score == 0.0
    # closer answers score higher
    assert m.score("The cat sat on a mat", "The cat sat on the mat").score > m.score("A dog ran", "The cat sat "
                                                                                     "on the mat").score > 0


@pytest.mark.parametrize(("options", "message"), [
    ({"name": "jsn"}, "unknown metric 'jsn' (did you mean 'json'?); choose from auto, label"),
    ({"name": "bleu"}, "unknown metric 'bleu'; choose from"),
    ({"name": "regex"}, "metric regex needs a `pattern` with a capture group"),
    ({"name": "regex", "pattern": "Answer: (.+"}, "is not a valid regular expression: missing ), unterminated"),
    ({"name": "regex", "pattern": "Answer: .+"}, "has no capture group; wrap the answer in (...)"),
    ({"name": "json", "json_schema": {"type": "objekt"}}, "json_schema is not a valid JSON Schema at type:"),
    ({"name": "json", "json_schema": "/nonexistent/schema.json"}, "json_schema file not found: /nonexistent"),
    ({"name": "number", "pattern": "(x)"}, "`pattern` is for metric regex, not number"),
    ({"name": "text", "json_schema": {"type": "object"}}, "`json_schema` is for metric json, not text"),
    ({"name": "number", "tolerance": -1}, "greater than or equal to 0"),
])
def test_bad_specs_fail_with_one_clear_line(options, message):
    with pytest.raises(ValidationError) as err:
        MetricSpec(**options)
    text = err.value.errors()[0]["msg"]
    assert message in text and "\n" not in text


def test_spec_accepts_a_bare_name_and_the_old_label_accuracy():
    assert MetricSpec.model_validate("JSON").name == "json"
    assert MetricSpec.model_validate("label_accuracy").name == "label"


def test_schema_file_is_read(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "object", "required": ["a"]}))
    assert MetricSpec(name="json", json_schema=str(path)).json_schema == {"type": "object", "required": ["a"]}
    path.write_text("{not json")
    with pytest.raises(ValidationError, match="is not valid JSON"):
        MetricSpec(name="json", json_schema=str(path))


def test_scores_outside_zero_one_are_refused():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Score(1.5, True)
