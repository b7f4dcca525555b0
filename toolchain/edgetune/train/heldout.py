"""The held-out check run after each epoch: greedy answers to a few held-out prompts, scored by exact match
after label normalisation (edgetune.labels, the rule the evals stage uses). The held-out loss itself comes from
the trainer's own evaluation on the held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgetune.labels import label_matches

# The held-out loss is measured on at most this many held-out examples: enough for a stable mean, small enough
# that a CPU epoch is not dominated by evaluation.
LOSS_ITEMS = 64
MAX_ANSWER_TOKENS = 32


@dataclass(frozen=True)
class HeldoutItem:
    id: str
    prompt_ids: list[int]
    reference: str


def task_items(examples: list[dict[str, Any]], tok, n: int) -> list[HeldoutItem]:
    """The first `n` held-out examples as chat-templated prompts (generation prompt added) and their answers."""
    items = []
    for ex in examples[:n]:
        ids = tok.apply_chat_template(ex["messages"][:-1], add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        items.append(HeldoutItem(ex["id"], list(ids), ex["messages"][-1]["content"]))
    return items


def answer_tokens(items: list[HeldoutItem], tok) -> int:
    """Greedy tokens to generate: the longest reference plus a few (room for a trailing stop), capped."""
    longest = max((len(tok(i.reference, add_special_tokens=False)["input_ids"]) for i in items), default=1)
    return min(MAX_ANSWER_TOKENS, longest + 3)


def exact_match(model, tok, items: list[HeldoutItem], *, batch_size: int = 8,
                max_new_tokens: int | None = None, bf16: bool = False) -> dict[str, Any]:
    """Greedy-decode each item (left-padded batches, the model in eval mode, then restored) and score it.
    `max_new_tokens` defaults to answer_tokens(items); `bf16` runs under CUDA bf16 autocast as training does
    (an IA3 adapter on an NF4 base mixes fp32 and bf16 outside it; found on an H200). Returns {"accuracy", "n",
    "outputs"}; outputs are the decoded answers, in item order."""
    import contextlib

    import torch

    was_training = model.training
    model.eval()
    max_new = max_new_tokens or answer_tokens(items, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(model.parameters()).device
    outputs: list[str] = []
    try:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            width = max(len(i.prompt_ids) for i in batch)
            ids = torch.tensor([[pad_id] * (width - len(i.prompt_ids)) + i.prompt_ids for i in batch], device=device)
            mask = torch.tensor([[0] * (width - len(i.prompt_ids)) + [1] * len(i.prompt_ids) for i in batch],
                                device=device)
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device.type == "cuda" else \
                contextlib.nullcontext()
            with torch.no_grad(), autocast:
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                     pad_token_id=pad_id, eos_token_id=tok.eos_token_id)
            outputs.extend(tok.decode(row[width:], skip_special_tokens=True) for row in out)
    finally:
        model.train(was_training)
    correct = sum(label_matches(o, i.reference) for o, i in zip(outputs, items))
    return {"accuracy": correct / len(items) if items else None, "n": len(items), "outputs": outputs}
