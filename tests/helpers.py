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
    """Load a GGUF in llama-cpp-python and count the tokens a greedy completion produces."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), n_ctx=256, n_threads=1, verbose=False)
    try:
        out = llm.create_completion("The capital of France is", max_tokens=max_tokens, temperature=0.0)
    finally:
        llm.close()
    return out["usage"]["completion_tokens"]
