"""The same model, two runtimes: HF fp32 safetensors and its llama.cpp F16 GGUF must agree on the same ids.

Tolerance, measured on these fixtures with 160 MMLU cloze requests (40 items x 4 choices):
|HF - llama.cpp| per continuation token was at most 2.0e-4 (tied) and 1.4e-4 (untied), mean 3e-5. The
difference comes from F16: weights, the KV cache and the activations fed to F16 matmuls are rounded to an
11-bit mantissa (unit roundoff 2^-11 = 4.9e-4). We allow 1e-3 per token (5x the worst seen, about two F16
roundoffs); a real bug (an off-by-one row, a wrong position, a stale KV entry) moves these near-uniform
log-probs (about -10.8 per token) by far more.

The error grows with the size of the logits, so this bound is for these fixtures only. On real SmolLM2-135M
(fp32 safetensors vs its F16 GGUF, 57 MMLU items, 228 requests) the per-token difference was at most 1.5e-2,
mean 2.0e-3, with every prediction and 8/8 16-token greedy generations the same.
"""

from __future__ import annotations

import pytest
import torch

from edgetune.evals.forgetting import mmlu_items
from edgetune.runtimes import HFRuntime, LlamaCppRuntime

TOLERANCE_PER_TOKEN = 1e-3
PROMPTS = ["The quick brown fox", "Question: What is the capital of France?\nAnswer:", "def add(a, b):\n"]


def test_loglikelihoods_agree_within_f16_tolerance(hf_runtime, llama_runtime, tokenizer):
    items = mmlu_items(tokenizer, n_items=12, seed=3)
    requests = [(item.context_ids, ids) for item in items for ids in item.choice_ids]
    from_hf = hf_runtime.loglikelihood(requests)
    from_llama = llama_runtime.loglikelihood(requests)
    for (_, cont), (lp_hf, greedy_hf), (lp_llama, greedy_llama) in zip(
        requests, from_hf, from_llama, strict=True
    ):
        assert abs(lp_hf - lp_llama) <= TOLERANCE_PER_TOKEN * len(cont)
        assert greedy_hf == greedy_llama


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generations_agree(untied_model_dir, untied_gguf, tokenizer, prompt):
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    with HFRuntime(untied_model_dir) as hf, LlamaCppRuntime(untied_gguf, n_ctx=512, n_threads=1) as llama:
        from_hf = hf.generate(ids, 16, stop_ids=[])
        from_llama = llama.generate(ids, 16, stop_ids=[])
        if from_hf != from_llama:
            # Only a genuine near-tie may flip an argmax between fp32 and F16: report the gap otherwise.
            step = next(i for i, (a, b) in enumerate(zip(from_hf, from_llama, strict=True)) if a != b)
            with torch.inference_mode():
                logits = hf._model(torch.tensor([ids + from_hf[:step]])).logits[0, -1]
            gap = float(logits[from_hf[step]] - logits[from_llama[step]])
            assert gap <= 2 * TOLERANCE_PER_TOKEN, (
                f"greedy paths split at step {step} with a logit gap of {gap}"
            )
        assert len(set(from_hf)) > 4  # a varied sequence, not one token repeated
