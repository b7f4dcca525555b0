"""Small helpers shared by test packages (fixtures live in conftest.py files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def chat_suite_rows(tokenizer_dir: Path, questions: Sequence[str], max_tokens: int,
                    reference: str | None = None) -> list[dict]:
    """Runner suite rows: each question rendered with the chat template, as the token ids the pipeline passes."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = []
    for i, question in enumerate(questions):
        text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
        row = {"id": f"q{i}", "prompt_ids": tok(text, add_special_tokens=False)["input_ids"], "max_tokens": max_tokens}
        if reference is not None:
            row["reference"] = reference
        rows.append(row)
    return rows


def generated_tokens(gguf_path: Path, max_tokens: int = 4) -> int:
    """Load a GGUF through edgetune's llama.cpp runtime (a child process: a crash fails the test, not pytest)
    and count the tokens a greedy continuation of a short SmolLM2-tokenised prompt produces before EOS."""
    from edgetune.runtimes import LlamaCppRuntime

    with LlamaCppRuntime(gguf_path, n_ctx=256, n_threads=1) as runtime:
        return len(runtime.generate(list(SMOLLM2_PROMPT_IDS), max_tokens, stop_ids=[SMOLLM2_EOS_ID]))


SMOLLM2_PROMPT_IDS = (1, 504, 3137, 282, 4649, 314)  # "<|im_start|>" then a few words, in SmolLM2's vocabulary
SMOLLM2_EOS_ID = 2
