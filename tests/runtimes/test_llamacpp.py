"""LlamaCppRuntime on the tiny F16 GGUF: KV-cache reuse, decoding, and clean errors (no mocks)."""

from __future__ import annotations

import pytest

from edgetune.errors import EvalError, ModelError
from edgetune.runtimes import LlamaCppRuntime

TEXTS = [
    (
        "Question: What is the capital of France?\nAnswer:",
        [" Paris", " London is a big city", " Berlin, Germany", "."],
    ),
    ("Question: What is 2 + 2?\nAnswer:", [" 4", " four, of course"]),
    ("Question: What", [" is the capital", " time is it?"]),  # a prefix of the contexts above
]


@pytest.fixture(scope="module")
def requests_(tokenizer):
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    return [(enc(ctx), enc(cont)) for ctx, conts in TEXTS for cont in conts]


def test_shared_prefix_reuse_equals_fresh_evaluation(tiny_gguf, llama_runtime, requests_):
    shared = llama_runtime.loglikelihood(requests_)
    fresh = []
    for request in requests_:
        with LlamaCppRuntime(tiny_gguf, n_ctx=512, n_threads=1) as runtime:  # empty KV cache every time
            fresh.extend(runtime.loglikelihood([request]))
    # Measured bit-identical: rows before the reuse point are never recomputed and llama.cpp's CPU kernels
    # compute a row the same way whatever else is in the batch. The tolerance only allows other CPUs' kernels.
    for (lp_shared, g_shared), (lp_fresh, g_fresh) in zip(shared, fresh, strict=True):
        assert lp_shared == pytest.approx(lp_fresh, abs=1e-5)
        assert g_shared == g_fresh


def test_results_keep_request_order(llama_runtime, requests_):
    forward = llama_runtime.loglikelihood(requests_)
    backward = llama_runtime.loglikelihood(requests_[::-1])[::-1]
    assert [lp for lp, _ in backward] == pytest.approx([lp for lp, _ in forward], abs=1e-5)


def test_generate_is_unaffected_by_cached_state(tiny_gguf, untied_gguf, tokenizer):
    prompt = tokenizer.encode("The quick brown fox", add_special_tokens=False)
    with LlamaCppRuntime(untied_gguf, n_ctx=512, n_threads=1) as runtime:
        first = runtime.generate(prompt, 16, stop_ids=[])
        runtime.loglikelihood([(prompt[:2], prompt[2:]), (prompt + first[:3], [5, 6, 7])])
        again = runtime.generate(prompt, 16, stop_ids=[])
        after_longer = runtime.generate(prompt[:3], 4, stop_ids=[])  # cache holds a longer sequence
        stop = first[5]
        stopped = runtime.generate(prompt, 16, stop_ids=[stop])
        ((_, is_greedy),) = runtime.loglikelihood([(prompt, first)])
    with LlamaCppRuntime(untied_gguf, n_ctx=512, n_threads=1) as fresh:
        assert fresh.generate(prompt[:3], 4, stop_ids=[]) == after_longer
    assert again == first and len(set(first)) > 4
    assert stopped == first[: first.index(stop)]
    assert is_greedy


def test_request_longer_than_context_raises_eval_error(tiny_gguf):
    with LlamaCppRuntime(tiny_gguf, n_ctx=64, n_threads=1) as runtime:
        with pytest.raises(EvalError, match="llama.cpp context holds 64"):
            runtime.loglikelihood([(list(range(1, 60)), list(range(1, 10)))])
        with pytest.raises(EvalError, match="llama.cpp context holds 64"):
            runtime.generate(list(range(1, 60)), 10, stop_ids=[])
        with pytest.raises(EvalError, match="outside the model's vocabulary"):
            runtime.loglikelihood([([1], [runtime.n_vocab + 5])])
        # the runtime is still usable after refusing requests
        assert runtime.loglikelihood([([1, 2], [3])])[0][0] < 0


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.gguf", None, "does not exist"),
        ("tiny.bin", lambda data: b"PK\x03\x04" + data[4:1000], "is not a GGUF file"),
        ("truncated.gguf", lambda data: data[: len(data) // 3], "llama.cpp could not load"),
        ("garbled.gguf", lambda data: data[:4] + bytes(range(256)) * 8, "llama.cpp could not load"),
    ],
)
def test_corrupt_gguf_raises_one_line_model_error(tmp_path, tiny_gguf, name, make, message):
    path = tmp_path / name
    if make is not None:
        path.write_bytes(make(tiny_gguf.read_bytes()))
    with pytest.raises(ModelError, match=message) as err:
        LlamaCppRuntime(path, n_threads=1)
    assert "\n" not in str(err.value) and err.value.hint
