"""HFRuntime against plain transformers forward passes on the tiny Llama (no mocks)."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgetune.errors import ConfigError, EvalError, ModelError
from edgetune.runtimes import HFRuntime

CONTEXTS = ["Question: What is the capital of France?\nAnswer:", "The quick brown fox", "1 2 3"]
CONTINUATIONS = [" Paris", " London is a big city", " jumps over the lazy dog", ".", " 4 5 6 7 8"]


@pytest.fixture(scope="module")
def requests_(tokenizer):
    """Every context with every continuation: shared contexts, one-token and multi-token continuations."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    reqs = [(enc(c), enc(k)) for c in CONTEXTS for k in CONTINUATIONS]
    reqs.append((enc("Alone here"), enc(" with a context nobody shares")))
    reqs += [
        (enc("Pick one:"), enc(" A")),
        (enc("Pick one:"), enc(" B")),
    ]  # a group of one-token continuations
    return reqs


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@torch.inference_mode()
def manual_loglikelihood(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """One unpadded forward pass over context + continuation, no cache: the textbook definition."""
    logprobs = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), dim=-1)
    rows = logprobs[len(ctx) - 1 : len(ctx) + len(cont) - 1]
    target = torch.tensor(cont)
    return float(rows[torch.arange(len(cont)), target].sum()), bool((rows.argmax(-1) == target).all())


@torch.inference_mode()
def manual_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Argmax of a full forward pass per step, no KV cache."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_loglikelihood_equals_manual_forward(hf_runtime, reference_model, requests_):
    got = hf_runtime.loglikelihood(requests_)
    assert len(got) == len(requests_)
    for (ctx, cont), (lp, greedy) in zip(requests_, got, strict=True):
        want_lp, want_greedy = manual_loglikelihood(reference_model, ctx, cont)
        # fp32 both sides; padding, batching and the KV-cache path move only the last few bits (~1e-6 seen)
        assert lp == pytest.approx(want_lp, abs=1e-4)
        assert greedy == want_greedy


def test_loglikelihood_is_independent_of_batching_and_order(tiny_model_dir, hf_runtime, requests_):
    base = [lp for lp, _ in hf_runtime.loglikelihood(requests_)]
    with HFRuntime(tiny_model_dir, batch_size=1) as one_at_a_time:
        single = [one_at_a_time.loglikelihood([r])[0][0] for r in requests_]  # full-sequence path only
        reversed_ = [lp for lp, _ in one_at_a_time.loglikelihood(requests_[::-1])][::-1]
    assert single == pytest.approx(base, abs=1e-4)
    assert reversed_ == pytest.approx(base, abs=1e-4)


def test_greedy_flag_marks_exactly_the_greedy_continuation(hf_runtime, tokenizer):
    ctx = tokenizer.encode("Once upon a time", add_special_tokens=False)
    greedy = hf_runtime.generate(ctx, 3, stop_ids=[])
    other = greedy[:-1] + [(greedy[-1] + 1) % hf_runtime.n_vocab]
    (_, is_greedy), (_, is_other_greedy) = hf_runtime.loglikelihood([(ctx, greedy), (ctx, other)])
    assert is_greedy and not is_other_greedy


def test_generate_is_exactly_greedy(untied_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(untied_model_dir).eval()
    prompt = tokenizer.encode("The quick brown fox", add_special_tokens=False)
    with HFRuntime(untied_model_dir) as runtime:
        got = runtime.generate(prompt, 16, stop_ids=[])
    assert got == manual_greedy(model, prompt, 16)
    assert len(set(got)) > 4  # a varied sequence, so a cache or position bug would show


def test_generate_stops_before_a_stop_id(hf_runtime, untied_model_dir, tokenizer):
    prompt = tokenizer.encode("The quick brown fox", add_special_tokens=False)
    with HFRuntime(untied_model_dir) as runtime:
        full = runtime.generate(prompt, 16, stop_ids=[])
        stop = full[5]
        assert runtime.generate(prompt, 16, stop_ids=[stop]) == full[: full.index(stop)]
        assert runtime.generate(prompt, 3, stop_ids=[]) == full[:3]
        assert runtime.generate(prompt, 0, stop_ids=[]) == []


def test_bad_requests_raise_eval_error(hf_runtime):
    with pytest.raises(EvalError, match="empty context"):
        hf_runtime.loglikelihood([([], [1, 2])])
    with pytest.raises(EvalError, match="empty continuation"):
        hf_runtime.loglikelihood([([1], [])])
    with pytest.raises(EvalError, match="outside the model's vocabulary"):
        hf_runtime.loglikelihood([([1], [hf_runtime.n_vocab])])
    with pytest.raises(EvalError, match="empty prompt"):
        hf_runtime.generate([], 4, stop_ids=[])


def test_unloadable_models_raise_model_error(tmp_path, tiny_model_dir):
    with pytest.raises(ModelError, match="no config.json"):
        HFRuntime(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="could not load") as err:
        HFRuntime(broken)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown dtype"):
        HFRuntime(tiny_model_dir, dtype="float8")
