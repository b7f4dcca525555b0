"""The training length from the data and prompt-side shortening (train/lengths.py), and the board's context
as a limit on the held-out items (evals/context.py), on the real SmolLM2 tokenizer and chat template."""

from __future__ import annotations

import json

import pytest

from edgetune.errors import DataError
from edgetune.evals import context
from edgetune.evals.task import TaskItem
from edgetune.train import lengths

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()


def passage(n_words: int, seed: int = 0) -> str:
    return " ".join(WORDS[(seed + 7 * k) % len(WORDS)] for k in range(n_words))


def example(n_words: int, answer: str = "yes", *, system: str | None = None) -> dict:
    user = f"Read the passage and answer yes or no.\n\n{passage(n_words)}\n\nQuestion: is it long?"
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"id": f"ex-{n_words}", "messages": msgs}


def test_max_length_from_the_data_is_the_99th_percentile_rounded_up(tokenizer):
    examples = [example(20 + k) for k in range(99)] + [example(900)]  # one outlier
    sizes = sorted(lengths.example_length(tokenizer, ex["messages"]) for ex in examples)
    fit = lengths.fit(tokenizer, examples, None, context=None)
    p99 = sizes[98]
    assert fit.max_length == -(-p99 // 64) * 64 and fit.max_length < sizes[-1]
    assert "99th percentile" in fit.why and str(p99) in fit.why
    assert fit.longest == sizes[-1] and fit.shortened == 1 and fit.dropped == 0
    assert len(fit.examples) == 100
    # capped by the model's context
    capped = lengths.fit(tokenizer, examples, None, context=64)
    assert capped.max_length == 64 and "model's context" in capped.why
    # a configured value is kept as is
    assert lengths.fit(tokenizer, examples, 512, context=None).max_length == 512


def test_shortening_cuts_the_middle_of_the_prompt_and_never_the_answer(tokenizer):
    ex = example(600, answer="yes, because the passage says so", system="You answer briefly.")
    before = lengths.example_length(tokenizer, ex["messages"])
    fit = lengths.fit(tokenizer, [ex], 200, context=None)
    (kept,) = fit.examples
    assert fit.shortened == 1 and lengths.example_length(tokenizer, kept["messages"]) <= 200 < before
    assert fit.most_cut >= before - 200
    system, user, answer = kept["messages"]
    assert system == ex["messages"][0] and answer == ex["messages"][2]  # untouched
    assert user["content"].startswith("Read the passage") and user["content"].endswith("Question: is it long?")
    assert lengths.JOIN in user["content"]
    assert ex["messages"][1]["content"].startswith("Read")  # the input is not modified in place
    assert "1 shortened in the prompt" in fit.summary()


def test_an_answer_longer_than_the_limit_is_dropped_and_all_dropped_fails(tokenizer):
    long_answer = example(10, answer=passage(300))
    fit = lengths.fit(tokenizer, [long_answer, example(10)], 64, context=None)
    assert fit.dropped == 1 and [e["id"] for e in fit.examples] == ["ex-10"]
    assert "1 dropped" in fit.summary()
    with pytest.raises(DataError, match="every training example's answer alone is longer than train.max_length 64"):
        lengths.fit(tokenizer, [long_answer], 64, context=None)


def test_model_context_reads_config_json(tmp_path, tiny_model_dir):
    assert lengths.model_context(tiny_model_dir) == json.loads(
        (tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096}}))
    assert lengths.model_context(tmp_path) == 4096
    assert lengths.model_context(tmp_path / "missing") is None


def items(*sizes: int) -> list[TaskItem]:
    return [TaskItem(id=f"i{k}", prompt_ids=list(range(n)), reference="yes") for k, n in enumerate(sizes)]


def test_items_over_the_board_context_are_counted_and_kept_or_excluded_by_policy():
    held = items(100, 1500, 2100, 300)
    checked = context.check(held, 16, 2048, "rpi5's context_length", "exclude")
    assert checked.over == ("i2",) and checked.longest == 2116 and checked.n == 4
    assert [i.id for i in context.keep(held, checked)] == ["i0", "i1", "i3"]
    assert checked.summary().startswith("1 of 4 held-out items exceed rpi5's context_length of 2,048 tokens")
    assert "excluded from every build's score (eval.over_context: exclude)" in checked.summary()
    failed = context.check(held, 16, 2048, "rpi5's context_length", "fail")
    assert [i.id for i in context.keep(held, failed)] == ["i0", "i1", "i2", "i3"]
    assert not failed.fits(held[2]) and failed.fits(held[1])
    assert "scored as failures on the GGUF builds" in failed.summary()
    fine = context.check(items(10, 20), 4, 512, "x", "exclude")
    assert fine.over == () and fine.summary().startswith("every held-out item fits x of 512 tokens")


def test_no_item_fitting_the_board_fails_with_the_numbers():
    with pytest.raises(DataError, match=r"none of the 2 held-out items fits rpi-zero-2w's context_length of 512 "
                                        r"tokens \(the shortest needs 616"):
        context.check(items(600, 900), 16, 512, "rpi-zero-2w's context_length", "fail")
