"""Training rows for chat examples: loss on every assistant turn of a conversation, and on nothing else.

A single-turn example (one assistant message, the last) goes to TRL as prompt + completion, which trains on the
completion only; the default SST-2 build is of this kind and tokenises exactly as before. A conversation with
several assistant turns cannot be one prompt/completion pair (today's `messages[:-1]` prompt trained the last
turn only). TRL's `assistant_only_loss` needs `{% generation %}` markers in the chat template, which SmolLM2's and
most stock templates lack (NOTES.md), so the rows are tokenised here: the conversation through the model's own
chat template, and each assistant turn's tokens found as the difference between the conversation rendered up to
that turn's generation prompt and up to the end of that turn, the way TRL finds a completion
(`common_prefix_length`). The result is TRL's own pre-tokenised form, `input_ids` + `labels` (-100 outside the
assistant turns), which its SFTTrainer takes as it is (truncation, packing and the collator included).
"""

from __future__ import annotations

from typing import Any

from edgetune.errors import DataError
from edgetune.train.lengths import token_ids

IGNORE = -100  # the label transformers' loss skips


def assistant_turns(messages: list[dict[str, str]]) -> int:
    return sum(m["role"] == "assistant" for m in messages)


def is_single_turn(examples: list[dict[str, Any]]) -> bool:
    """Every example has exactly one assistant message, and it is the last: prompt/completion says it all."""
    return all(assistant_turns(ex["messages"]) == 1 and ex["messages"][-1]["role"] == "assistant" for ex in examples)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenise(tok: Any, messages: list[dict[str, str]]) -> dict[str, list[int]]:
    """`input_ids` of the whole conversation through the chat template, and `labels` equal to them on the
    assistant turns' tokens (each answer and the end-of-turn the template writes after it) and -100 elsewhere.
    Raises DataError when the template renders a conversation so that no assistant token can be told apart."""
    ids = token_ids(tok, messages)
    labels = [IGNORE] * len(ids)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _common_prefix(token_ids(tok, messages[:k], generation_prompt=True), ids) if k else 0
        end = _common_prefix(token_ids(tok, messages[: k + 1]), ids)
        if k + 1 == len(messages):  # the last turn: whatever the template writes after it is the answer's end
            end = len(ids)
        labels[start:end] = ids[start:end]
    if all(label == IGNORE for label in labels):
        raise DataError("the chat template renders the conversation so that no assistant turn is found in it",
                        "use input/output columns, or a model whose chat template renders each turn in order")
    return {"input_ids": ids, "labels": labels}


def training_rows(tok: Any, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows SFTTrainer gets: prompt/completion pairs when every example is single-turn (TRL trains on the
    completion), else every example tokenised with its assistant turns labelled (`tokenise`)."""
    if is_single_turn(examples):
        return [{"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]} for ex in examples]
    return [tokenise(tok, ex["messages"]) for ex in examples]
