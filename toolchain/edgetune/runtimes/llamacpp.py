"""Run a GGUF file in-process with llama-cpp-python (the same llama.cpp the bundle ships to devices).

Reads `gguf_path`. Token ids go straight into the model (no llama.cpp tokenisation), so a GGUF is scored on
the very ids its HF original saw. Scores come from `Llama.eval` + `Llama.scores` with `logits_all=True` (row i
predicts token i+1); the `echo=True` prompt logprobs of create_completion are off by one and are never used.

The KV cache is reused across calls: `Llama.eval` first drops every cached position at or after `n_tokens`
(`kv_cache_seq_rm(-1, n_tokens, -1)`), so setting `n_tokens` back to the length of the prefix shared with the
previous sequence and evaluating only the rest gives the same rows as a fresh evaluation (rows before that
point depend only on the shared tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgetune.errors import EvalError, ModelError
from edgetune.runtimes.base import (
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Runtime,
    check_prompt,
    check_request,
)

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


class LlamaCppRuntime(Runtime):
    """A GGUF model loaded with llama-cpp-python. `n_threads=None` lets llama.cpp choose."""

    name = "llama.cpp"

    def __init__(self, gguf_path: Path, *, n_ctx: int = 2048, n_threads: int | None = None):
        """Load `gguf_path`. Raises ModelError when the file is missing, not GGUF or refused by llama.cpp."""
        self.gguf_path = Path(gguf_path)
        _check_gguf_file(self.gguf_path)
        from llama_cpp import Llama

        try:
            self._llm = Llama(
                model_path=str(self.gguf_path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                logits_all=True,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file" / context creation
            raise ModelError(
                f"llama.cpp could not load {self.gguf_path}",
                "the file is truncated, corrupt or from a newer llama.cpp; re-run the export",
            ) from exc
        # llama.cpp may round the context up (64 -> 256), but llama-cpp-python sizes its token and score
        # arrays by the n_ctx we asked for; the smaller one is the real limit.
        self.n_ctx = min(n_ctx, self._llm.n_ctx(), len(self._llm.input_ids))
        self.n_vocab = self._llm.n_vocab()
        log.info("loaded %s (n_ctx %d)", self.gguf_path, self.n_ctx)

    # -- scoring -------------------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        for ctx, cont in requests:
            check_request(ctx, cont)
            self._check_ids(ctx)
            self._check_ids(cont)
            self._check_fits(len(ctx) + len(cont) - 1)
        # Lexicographic order puts sequences with the longest shared prefixes next to each other, so the
        # KV cache reuse below covers every request that shares a context, wherever it sits in the list.
        order = sorted(range(len(requests)), key=lambda i: list(requests[i][0]) + list(requests[i][1]))
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        for i in order:
            ctx, cont = list(requests[i][0]), list(requests[i][1])
            self._eval_sequence(ctx + cont[:-1])
            rows = self._llm.scores[len(ctx) - 1 : len(ctx) - 1 + len(cont)]
            results[i] = _score_rows(rows, cont)
        return results  # type: ignore[return-value]  # every slot is filled above

    # -- decoding ------------------------------------------------------------------------------------------

    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
        check_prompt(prompt_ids, max_new_tokens)
        self._check_ids(prompt_ids)
        self._check_fits(len(prompt_ids) + max_new_tokens - 1)
        stops = set(stop_ids)
        new: list[int] = []
        if max_new_tokens == 0:
            return new
        self._eval_sequence(list(prompt_ids))
        while True:
            # np.argmax takes the first index on ties, as torch.argmax does in the HF runtime
            token = int(np.argmax(self._llm.scores[self._llm.n_tokens - 1]))
            if token in stops:
                break
            new.append(token)
            if len(new) >= max_new_tokens:
                break
            self._eval([token])
        return new

    def logits(self, ids: list[int]) -> np.ndarray:
        check_prompt(ids, 0)
        self._check_ids(ids)
        self._check_fits(len(ids))
        self._eval_sequence(list(ids))
        return np.array(self._llm.scores[: len(ids)], dtype=np.float32)

    # -- KV cache ------------------------------------------------------------------------------------------

    def _eval_sequence(self, tokens: list[int]) -> None:
        """Make the KV cache and score rows 0..len(tokens)-1 hold `tokens`, evaluating only what is new."""
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens]
        shared = 0
        limit = min(len(cached), len(tokens))
        while shared < limit and cached[shared] == tokens[shared]:
            shared += 1
        llm.n_tokens = shared  # eval() drops cached positions >= n_tokens before decoding
        if shared < len(tokens):
            self._eval(tokens[shared:])

    def _eval(self, tokens: list[int]) -> None:
        try:
            self._llm.eval(tokens)
        except RuntimeError as exc:  # llama_decode returned an error code
            self._llm.reset()
            raise EvalError(f"llama.cpp failed to evaluate {len(tokens)} tokens: {exc}") from exc

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = [t for t in ids if not 0 <= t < self.n_vocab]
        if bad:
            raise EvalError(
                f"token id {bad[0]} is outside the model's vocabulary (0..{self.n_vocab - 1})",
                "tokenise with this model's own tokenizer",
            )

    def _check_fits(self, n_positions: int) -> None:
        if n_positions > self.n_ctx:
            raise EvalError(
                f"request needs {n_positions} positions but the llama.cpp context holds {self.n_ctx}",
                "raise n_ctx or shorten the prompt",
            )

    def close(self) -> None:
        if getattr(self, "_llm", None) is not None:
            self._llm.close()
            self._llm = None


def _check_gguf_file(path: Path) -> None:
    """Fail early, with a clear line, on what llama.cpp would reject with a generic message."""
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist", "check the path, or run the export stage")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"{path} is not a GGUF file (starts with {magic!r})", "re-run the export; the file is corrupt"
        )


def _score_rows(rows: np.ndarray, cont: list[int]) -> LoglikelihoodResult:
    """Sum of log-probs of `cont` under logit `rows` (row j predicts cont[j]) and whether all are argmaxes."""
    x = rows.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    logprobs = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    idx = np.arange(len(cont))
    target = np.asarray(cont)
    total = float(logprobs[idx, target].sum())
    greedy = bool((logprobs.argmax(axis=1) == target).all())
    return total, greedy
