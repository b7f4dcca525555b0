"""Every task metric on real answers: the embedded SmolLM2-135M-Instruct GGUF in llama.cpp, prompted through
its own ChatML template, generating until its stop token or the budget derived from the references. Each
record must hold the answer the model really gives, the metric's verdict on that answer, and a truncation
flag that says whether the budget (not a stop token) ended it."""

from __future__ import annotations

import json
import re

import pytest

from edgetune.evals.metrics import MetricSpec, make_metric
from edgetune.evals.stage import plan_task, stop_ids
from edgetune.evals.task import TaskItem, run_task_metric

PERSON = ("Extract the person's name, age and city from the text. Answer with JSON only, with keys \"name\", "
          "\"age\" and \"city\".\n\nText: ")
CASES = {
    "json": [
        (PERSON + "Maria Silva is 34 years old and lives in Lisbon.",
         json.dumps({"name": "Maria Silva", "age": 34, "city": "Lisbon"})),
        (PERSON + "Meet Jonas Berg: 51, a baker, based in Oslo.",
         json.dumps({"name": "Jonas Berg", "age": 51, "city": "Oslo"})),
        (PERSON + "In Kyoto you may run into Aiko Tanaka, a pilot aged 29.",
         json.dumps({"name": "Aiko Tanaka", "age": 29, "city": "Kyoto"})),
    ],
    "number": [
        ("What is 2 + 2? Answer with the number only.", "4"),
        ("Sam has 5 apples and buys 3 more. How many apples does Sam have? Answer with the number only.", "8"),
        ("What is 17 * 23? Answer with the number only.", "391"),
        ("How many legs does a spider have?", "#### 8"),
    ],
    "text": [
        ("Rewrite this sentence in the past tense: Maria walks to the market every day.",
         "Maria walked to the market every day."),
        ("Describe the fox in one sentence.", "The fox is a small mammal that lives in forests and eats mice."),
        ("Write a one-sentence polite reply declining an invitation to dinner on Friday.",
         "Thank you for inviting me to dinner, but I am sorry I cannot come on Friday."),
    ],
    "exact": [("What is the capital of France? Answer with one word.", "Paris"),
              ("What is the capital of Japan? Answer with one word.", "Tokyo"),
              ("What color is the sky on a clear day? Answer with one word.", "blue")],
}
CASES["contains"] = CASES["exact"]
CASES["label"] = CASES["exact"]
CASES["regex"] = CASES["exact"]
# SmolLM2 answers "The capital of France is Paris.": the word before the closing full stop
OPTIONS = {"regex": {"pattern": r"\bis (\w+)\.\s*$"}}
# one worked example as a previous chat turn: with it, the 135M model answers in JSON
SHOTS = {"json": [{"role": "user", "content": PERSON + "Lena Novak is 40 years old and lives in Prague."},
                  {"role": "assistant", "content": '{"name": "Lena Novak", "age": 40, "city": "Prague"}'}]}


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    from edgetune.runtimes import LlamaCppRuntime

    with LlamaCppRuntime(smollm2_gguf, n_ctx=1024, n_threads=1) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def smol_tok(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def items_for(name, tok):
    out = []
    for k, (question, reference) in enumerate(CASES[name]):
        text = tok.apply_chat_template(SHOTS.get(name, []) + [{"role": "user", "content": question}],
                                       tokenize=False, add_generation_prompt=True)
        out.append(TaskItem(f"{name}-{k}", tok(text, add_special_tokens=False)["input_ids"], reference))
    return out


@pytest.fixture(scope="module")
def runs(smol, smol_tok):
    """metric name -> (plan, result, the ids each item generated when asked again)."""
    out = {}
    decode = lambda ids: smol_tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    for name in CASES:
        items = items_for(name, smol_tok)
        plan = plan_task(items, smol_tok, MetricSpec(name=name, **OPTIONS.get(name, {})), None)
        result = run_task_metric(smol, items, make_metric(plan.metric), decode=decode,
                                 max_new_tokens=plan.max_new_tokens, stop_ids=stop_ids(smol_tok))
        again = [smol.generate(i.prompt_ids, plan.max_new_tokens, stop_ids(smol_tok)) for i in items]
        out[name] = (plan, result, again)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_records_hold_the_real_answer_and_its_score(runs, smol_tok, name):
    plan, result, again = runs[name]
    metric = make_metric(plan.metric)
    assert result.metric == name and result.n == len(CASES[name])
    for record, ids in zip(result.items, again, strict=True):
        assert record.output == smol_tok.decode(ids, skip_special_tokens=True)  # greedy: the same answer
        assert record.truncated == (len(ids) == plan.max_new_tokens)
        scored = metric.score(record.output, record.reference)
        assert (record.score, record.correct, record.detail) == (scored.score, scored.correct, scored.detail)
        if metric.binary:
            assert record.correct == (record.score == 1.0)
    assert result.score == pytest.approx(sum(r.score for r in result.items) / result.n)
    assert result.truncated == sum(r.truncated for r in result.items)
    print(name, [(r.output, r.score, r.truncated) for r in result.items])  # shown with -s


def test_budgets_are_derived_per_metric(runs, smol_tok):
    assert runs["label"][0].max_new_tokens == 4  # one-word labels: the budget label scoring always used
    longest_json = max(len(smol_tok(ref)["input_ids"]) for _, ref in CASES["json"])
    assert runs["json"][0].max_new_tokens > longest_json  # room for the whole object and its stop token


def test_the_model_stops_on_its_chat_stop_token(runs):
    # SmolLM2 ends a ChatML turn with <|im_end|>; with a budget above the references', most answers end there
    stopped = [r for name in ("json", "text") for r in runs[name][1].items if not r.truncated]
    assert stopped, "every answer ran to the budget: stop ids are not honoured"


def test_a_short_budget_truncates_real_answers(smol, smol_tok):
    items = items_for("text", smol_tok)
    result = run_task_metric(smol, items, make_metric(MetricSpec(name="text")),
                             decode=lambda ids: smol_tok.decode(ids, skip_special_tokens=True),
                             max_new_tokens=3, stop_ids=stop_ids(smol_tok))
    assert result.truncated == len(items) and all(r.truncated for r in result.items)
    assert all(len(smol_tok(r.output, add_special_tokens=False)["input_ids"]) <= 4 for r in result.items)


def outcomes(runs, name):
    return [r.score for r in runs[name][1].items]


def test_json_fields_on_real_answers(runs):
    records = runs["json"][1].items
    for r in records:
        got, want = json.loads(r.output), json.loads(r.reference)  # every answer is JSON with the worked example
        by_hand = {k: str(got.get(k)).strip().lower() == str(v).strip().lower() for k, v in want.items()}
        assert r.detail["parsed"] and r.detail["fields"] == by_hand
        assert r.score == pytest.approx(sum(by_hand.values()) / 3)
    scores = outcomes(runs, "json")
    assert 1.0 in scores and any(0 < s < 1 for s in scores)  # whole objects and partial credit both occur


def test_number_on_real_answers(runs):
    for r in runs["number"][1].items:
        ints = re.findall(r"-?\d+", r.output.split("####")[-1])
        assert r.detail["extracted"] == (float(ints[-1]) if ints else None)
        assert r.correct == (r.detail["extracted"] == r.detail["expected"])
    assert set(outcomes(runs, "number")) == {0.0, 1.0}


def lcs_f1(reference: str, answer: str) -> float:
    """ROUGE-L F1 written out independently: lowercase alphanumeric tokens, longest common subsequence."""
    a, b = re.findall(r"[a-z0-9]+", reference.lower()), re.findall(r"[a-z0-9]+", answer.lower())
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


def test_text_on_real_answers(runs):
    records = runs["text"][1].items
    for r in records:
        assert r.detail["rouge_l"] == pytest.approx(lcs_f1(r.reference, r.output), abs=1e-6)
        assert r.correct == (r.output.strip() == r.reference.strip())
    scores = outcomes(runs, "text")
    assert 1.0 in scores and any(0 < s < 1 for s in scores)  # a verbatim answer and partial overlaps


def test_string_metrics_order_on_real_answers(runs):
    exact, contains, regex = (outcomes(runs, n) for n in ("exact", "contains", "regex"))
    assert all(c >= e for e, c in zip(exact, contains, strict=True))  # contains never stricter than exact
    assert sum(contains) > sum(exact)  # full-sentence answers: contains finds the word, exact does not
    assert set(regex) == {0.0, 1.0}  # the pattern captures "Paris" but not "... deep, deep blue."


def test_the_sst2_default_still_scores_labels_with_four_tokens(smol_tok):
    """The embedded default (SST-2 on SmolLM2) must score exactly as before task metrics: label rule, 4 tokens."""
    from edgetune.data import SST2_LABELS
    from edgetune.evals.metrics import detect_metric
    from edgetune.evals.metrics.detect import derive_max_new_tokens

    references = list(SST2_LABELS) * 100
    assert detect_metric(references)[0] == "label"
    lengths = [len(smol_tok(r, add_special_tokens=False)["input_ids"]) for r in references]
    assert derive_max_new_tokens("label", lengths) == 4
