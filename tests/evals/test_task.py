"""Label normalisation and greedy label accuracy on real runtimes."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgetune.errors import EvalError
from edgetune.evals.task import TaskItem, label_matches, normalise_label, prompt_sha256, run_label_accuracy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Positive", "positive"),
        ("  positive.\n", "positive"),
        ('"Negative!"', "negative"),
        ("“Positive.”", "positive"),
        ("'positive'", "positive"),
        ("`yes`", "yes"),
        ("\n\n positive \nThe review praises the film.", "positive"),
        ("Very   Positive", "very positive"),
        ("(neutral)", "neutral"),
        ("re-run", "re-run"),
        ("Paris, France.", "paris, france"),
        ("...", ""),
        ("", ""),
    ],
)
def test_normalise_label(text, expected):
    assert normalise_label(text) == expected


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("positive", "Positive", True),
        (" Positive.", "positive", True),
        ('positive!"', "positive", True),
        ("positive\nbecause the acting", "positive", True),
        ("positive review", "positive", False),
        ("positive. Great film", "positive", False),
        ("not sure", "no", False),
        ("negative", "positive", False),
    ],
)
def test_label_matches(output, reference, expected):
    assert label_matches(output, reference) is expected


def test_prompt_sha256_is_the_documented_recipe():
    assert prompt_sha256([1, 22, 333]) == hashlib.sha256(b"1,22,333").hexdigest()


@pytest.fixture(scope="module")
def items(tokenizer):
    # The tiny random Llama tends to repeat its last input token, so with one new token some prompts come out
    # as their own last word: that gives both right and wrong answers from a real model.
    texts = {
        "r1": ("Review: a joy from start to end. Sentiment: positive", "Positive"),
        "r2": ("Review: dull and far too long. Sentiment: negative", "negative"),
        "r3": ("Review: a joy from start to end. Sentiment: positive", "negative"),
        "r4": ("Review: I walked out. Sentiment:", "negative"),
    }
    return [
        TaskItem(id=k, prompt_ids=tokenizer.encode(p, add_special_tokens=False), reference=r)
        for k, (p, r) in texts.items()
    ]


@pytest.mark.parametrize("which", ["hf_runtime", "llama_runtime"])
def test_run_label_accuracy_records_match_outputs(request, tokenizer, items, which):
    runtime = request.getfixturevalue(which)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    ticks = []
    result = run_label_accuracy(
        runtime,
        items,
        decode=decode,
        max_new_tokens=1,
        stop_ids=[tokenizer.eos_token_id],
        on_item=lambda: ticks.append(1),
    )
    assert result.n == len(items) == len(ticks)
    for item, record in zip(items, result.items, strict=True):
        expected_output = decode(runtime.generate(item.prompt_ids, 1, [tokenizer.eos_token_id]))
        assert record.id == item.id and record.reference == item.reference
        assert record.output == expected_output
        assert record.correct == label_matches(expected_output, item.reference)
        assert record.prompt_sha256 == prompt_sha256(item.prompt_ids)
        assert record.latency_s > 0
    assert result.accuracy == sum(r.correct for r in result.items) / result.n
    assert 0 < result.accuracy < 1  # both outcomes occur, so the comparison is really exercised
    assert json.loads(json.dumps(result.to_dict()))["items"][0]["id"] == "r1"


def test_run_label_accuracy_refuses_bad_input(hf_runtime, items):
    with pytest.raises(EvalError, match="no items"):
        run_label_accuracy(hf_runtime, [], decode=str, stop_ids=[])
    empty = TaskItem(id="x", prompt_ids=items[0].prompt_ids, reference=" ?! ")
    with pytest.raises(EvalError, match="empty reference"):
        run_label_accuracy(hf_runtime, [empty], decode=str, stop_ids=[])
