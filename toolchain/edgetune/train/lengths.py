"""Token lengths of the training examples against the training length, measured before any training.

`train.max_length` None sizes the training length from the data: the 99th percentile of the examples' tokenised
lengths (prompt and answer through the model's chat template, as TRL tokenises them), rounded up to a multiple
of 64 and capped by the model's context. An example longer than that is shortened in its prompt, never in its
answer (`fit`): tokens are cut from the middle of the longest prompt message, so its start (the instruction)
and its end nearest the answer (the question) stay, joined by " … ". An example whose answer alone leaves no
room is dropped and counted. The train stage applies the same `fit` to the same tokenizer, so what `check`
logs before training is what is trained. Raises DataError when nothing would be left to train on.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.errors import DataError

log = logging.getLogger("edgetune.train")

PERCENTILE = 0.99  # the longest 1% are shortened rather than sizing every batch for them
ROUND_TO = 64
MIN_LENGTH = 16  # TrainConfig.max_length's floor
MIN_KEPT = 8  # a prompt message keeps at least this many tokens, or the example is dropped
JOIN = " … "
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class Fit:
    """What the training length does to the examples: `examples` to train on (shortened where needed),
    how many were shortened (and the most tokens cut from one), and how many were dropped."""

    examples: list[dict[str, Any]]
    max_length: int
    why: str  # "train.max_length" or how it was sized from the data
    longest: int  # tokens of the longest example before any cut
    shortened: int = 0
    most_cut: int = 0
    dropped: int = 0

    def summary(self) -> str:
        n = len(self.examples) + self.dropped
        parts = [f"{n} training examples, longest {self.longest} tokens; train.max_length {self.max_length} "
                 f"({self.why})"]
        if self.shortened:
            parts.append(f"{self.shortened} shortened in the prompt (by up to {self.most_cut} tokens, from the "
                         "middle of the longest prompt message; answers are never cut)")
        if self.dropped:
            parts.append(f"{self.dropped} dropped (the answer alone leaves no room for the prompt)")
        if not (self.shortened or self.dropped):
            parts.append("none cut")
        return ": ".join(parts[:1]) + "; " + "; ".join(parts[1:])

    def to_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "why": self.why, "longest": self.longest, "n": len(self.examples),
                "shortened": self.shortened, "most_cut": self.most_cut, "dropped": self.dropped}


def token_ids(tok: Any, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> list[int]:
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def example_length(tok: Any, messages: list[dict[str, str]]) -> int:
    """Tokens of the whole example (prompt and answer), as TRL's prompt-completion tokenisation counts them."""
    return len(token_ids(tok, messages))


def model_context(model_dir: Path) -> int | None:
    """The positions the model was trained for, from its config.json; None when it does not say."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    config = {**config.get("text_config", {}), **config}
    return next((int(config[k]) for k in CONTEXT_KEYS if isinstance(config.get(k), int)), None)


def resolve_max_length(configured: int | None, lengths: list[int], context: int | None) -> tuple[int, str]:
    """(max_length, why): the configured value, or the data's 99th percentile rounded up to 64, capped by the
    model's context."""
    if configured is not None:
        return configured, "train.max_length"
    ordered = sorted(lengths)
    p99 = ordered[max(0, math.ceil(PERCENTILE * len(ordered)) - 1)] if ordered else MIN_LENGTH
    value = max(MIN_LENGTH, -(-p99 // ROUND_TO) * ROUND_TO)
    why = f"the data's 99th percentile, {p99} tokens, rounded up to {ROUND_TO}"
    if context is not None and value > context:
        value, why = context, f"the model's context ({context}); the data's 99th percentile is {p99} tokens"
    return value, why


def shorten(tok: Any, messages: list[dict[str, str]], max_length: int) -> tuple[list[dict[str, str]], int] | None:
    """`messages` with the prompt cut to fit `max_length` tokens, and the tokens cut; None when the answer alone
    leaves no room (each prompt message would keep fewer than MIN_KEPT tokens)."""
    total = example_length(tok, messages)
    cut_total = 0
    for _ in range(4):  # re-tokenising the joined text can differ by a token or two: measure again
        over = total - max_length
        if over <= 0:
            return messages, cut_total
        # earlier assistant turns of a conversation are answers too (train/turns.py): never cut
        prompt = [k for k, m in enumerate(messages[:-1]) if m["role"] not in ("system", "assistant")] or [
            k for k, m in enumerate(messages[:-1]) if m["role"] != "assistant"]
        if not prompt:
            return None
        k = max(prompt, key=lambda j: len(messages[j]["content"]))
        ids = tok(messages[k]["content"], add_special_tokens=False)["input_ids"]
        keep = len(ids) - over - len(tok(JOIN, add_special_tokens=False)["input_ids"]) - 1
        if keep < MIN_KEPT:
            return None
        head = keep // 4  # the instruction at the start; the rest for the end nearest the answer
        text = tok.decode(ids[:head]) + JOIN + tok.decode(ids[len(ids) - (keep - head):])
        messages = [*messages[:k], {**messages[k], "content": text}, *messages[k + 1:]]
        now = example_length(tok, messages)
        cut_total += total - now
        total = now
    return (messages, cut_total) if total <= max_length else None


def fit(tok: Any, examples: list[dict[str, Any]], configured: int | None, context: int | None) -> Fit:
    """Size the training length (`resolve_max_length`) and shorten or drop what exceeds it. Raises DataError
    when every example would be dropped."""
    lengths = [example_length(tok, ex["messages"]) for ex in examples]
    max_length, why = resolve_max_length(configured, lengths, context)
    kept: list[dict[str, Any]] = []
    shortened = most_cut = dropped = 0
    for ex, n in zip(examples, lengths):
        cut = (ex["messages"], 0) if n <= max_length else shorten(tok, ex["messages"], max_length)
        if cut is None:
            dropped += 1
            continue
        if n > max_length:
            ex, shortened, most_cut = {**ex, "messages": cut[0]}, shortened + 1, max(most_cut, cut[1])
        kept.append(ex)
    if examples and not kept:
        raise DataError(f"every training example's answer alone is longer than train.max_length {max_length} "
                        f"({why})", "raise train.max_length, or shorten the answers")
    return Fit(kept, max_length, why, max(lengths, default=0), shortened, most_cut, dropped)


def check(tok: Any, examples: list[dict[str, Any]], configured: int | None, model_dir: Path) -> Fit:
    """`fit` with the model's own context, logged in one line (what training will do to the examples)."""
    result = fit(tok, examples, configured, model_context(model_dir))
    (log.warning if result.shortened or result.dropped else log.info)("train: %s", result.summary())
    return result
