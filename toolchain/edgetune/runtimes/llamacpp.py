"""Run a GGUF file with llama-cpp-python (the same llama.cpp the bundle ships to devices).

`LlamaCppRuntime` is what callers use: the model lives in a child process (`runtimes/child.py`), so a crash
inside llama.cpp raises `NativeCrash` (exit 9) naming the file, its type and the call, instead of killing
edgetune. `LlamaCppEngine` is the in-process implementation the child runs; use it directly only where a
crash may take the process down (tests of its internals).

Reads `gguf_path`. Token ids go straight into the model (no llama.cpp tokenisation), so a GGUF is scored on
the very ids its HF original saw. Scores come from `Llama.eval` + `Llama.scores` with `logits_all=True` (row i
predicts token i+1); the `echo=True` prompt logprobs of create_completion are off by one and are never used.

Scoring (`loglikelihood`) runs on a second llama.cpp context over the same loaded weights, made for it:
several sequences in one unified KV cache. Requests are packed into batches by `prefix_batch.plan` (a prefix
shared by several requests, such as a question's context, is fed once and tagged with every request's
sequence id), and logits are computed only for the positions a continuation is read from. One `llama_decode`
then scores all the choices of a question, instead of one `eval` per choice with logits for every position.
On SmolLM2 Q4_1 with one thread that is 1.0-1.16x the first version and 0.95x `llama-perplexity --hellaswag`
on the same items (docs/benchmarks.md). llama.cpp's quantized CPU kernels round differently with the batch's
shape (the same sequence fed with n_ubatch 1 or 512 differs by up to 0.9 nats on Q4_0), so log-likelihoods
on quantized GGUFs match the one-sequence-per-eval path to kernel rounding, not bit for bit; on F16 they
match a fresh evaluation of each request alone to 1e-5 (tests/runtimes).

Decoding (`generate`, `logits`) reuses the KV cache across calls: `Llama.eval` first drops every cached
position at or after `n_tokens` (`kv_cache_seq_rm(-1, n_tokens, -1)`), so setting `n_tokens` back to the
length of the prefix shared with the previous sequence and evaluating only the rest gives the same rows as a
fresh evaluation (rows before that point depend only on the shared tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgetune.errors import EdgetuneError, EvalError, ModelError
from edgetune.runtimes.base import (
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Runtime,
    check_fits,
    check_ids,
    check_prompt,
    check_request,
)
from edgetune.runtimes.child import ChildRuntime
from edgetune.runtimes.prefix_batch import Limits, Pack, plan

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# One scoring batch: at most this many tokens (attention over masked cells of other sequences grows with it),
# requests, and logit rows (each n_vocab float32s: 256 rows of a 49k vocabulary are 50 MB).
SCORE_TOKENS = 512
SCORE_SEQS = 64
SCORE_OUTPUTS = 256


class LlamaCppRuntime(ChildRuntime):
    """A GGUF model (optionally with a LoRA GGUF applied at run time) loaded with llama-cpp-python in a child
    process. `n_threads=None` lets llama.cpp choose. Raises ModelError when the file is missing, not GGUF or
    refused by llama.cpp, and NativeCrash when llama.cpp dies."""

    def __init__(self, gguf_path: Path, *, n_ctx: int = 2048, n_threads: int | None = None,
                 lora_path: Path | None = None):
        self.gguf_path = Path(gguf_path)
        _check_gguf_file(self.gguf_path)  # here, not in the child: the common mistakes need no process
        super().__init__(f"{__name__}:LlamaCppEngine", self.gguf_path, n_ctx=n_ctx, n_threads=n_threads,
                         lora_path=lora_path, subject=describe_gguf(self.gguf_path, lora_path), name="llama.cpp")


def describe_gguf(path: Path, lora_path: Path | None = None) -> str:
    """'model-Q8_0.gguf (Q8_0)': the file and the type its header records, for error messages."""
    from gguf import Keys

    from edgetune.constants import Quant
    from edgetune.export.gguf_header import read_keys

    try:
        ftype = read_keys(path, [Keys.General.FILE_TYPE]).get(Keys.General.FILE_TYPE)
    except (OSError, EdgetuneError):
        ftype = None
    names = {q.file_type: q.value for q in Quant}
    text = f"{path} ({names.get(ftype, f'file type {ftype}') if ftype is not None else 'type unknown'})"
    return f"{text} with LoRA {lora_path}" if lora_path else text


class LlamaCppEngine(Runtime):
    """A GGUF model loaded in this process with llama-cpp-python. `n_threads=None` lets llama.cpp choose."""

    name = "llama.cpp"

    def __init__(self, gguf_path: Path, *, n_ctx: int = 2048, n_threads: int | None = None,
                 lora_path: Path | None = None):
        """Load `gguf_path` (and apply `lora_path`). Raises ModelError when the file is missing, not GGUF or
        refused by llama.cpp."""
        self.gguf_path = Path(gguf_path)
        _check_gguf_file(self.gguf_path)
        from llama_cpp import Llama

        try:
            self._llm = Llama(
                model_path=str(self.gguf_path),
                lora_path=str(lora_path) if lora_path else None,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                logits_all=True,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file" / context creation
            what = f"{self.gguf_path} with the LoRA GGUF {lora_path}" if lora_path else str(self.gguf_path)
            raise ModelError(
                f"llama.cpp could not load {what}",
                "the adapter and base must come from the same model" if lora_path else
                "the file is truncated, corrupt or from a newer llama.cpp; re-run the export",
            ) from exc
        # llama.cpp may round the context up (64 -> 256), but llama-cpp-python sizes its token and score
        # arrays by the n_ctx we asked for; the smaller one is the real limit.
        self.n_ctx = min(n_ctx, self._llm.n_ctx(), len(self._llm.input_ids))
        self.n_vocab = self._llm.n_vocab()
        self._score = None  # (context, batch) for loglikelihood, made on first use
        log.info("loaded %s (n_ctx %d)", self.gguf_path, self.n_ctx)

    # -- scoring -------------------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        for ctx, cont in requests:
            check_request(ctx, cont)
            self._check_ids(ctx)
            self._check_ids(cont)
            self._check_fits(len(ctx) + len(cont) - 1)
        limits = Limits(tokens=min(SCORE_TOKENS, self.n_ctx), seqs=SCORE_SEQS, outputs=SCORE_OUTPUTS)
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        for pack in plan(requests, limits):
            logits, row_of = self._decode_pack(pack)
            for i, nodes in pack.reads.items():
                results[i] = _score_rows(logits[row_of[nodes]], list(requests[i][1]))
        return results  # type: ignore[return-value]  # every request is in exactly one pack

    def _decode_pack(self, pack: Pack) -> tuple[np.ndarray, np.ndarray]:
        """Feed one pack into the cleared scoring context. Returns llama.cpp's logits (a view, valid until the
        next decode: one row per node asked for output) and each node's row in it."""
        ctx, batch = self._scoring_context()
        nodes = pack.nodes()
        b = batch.batch
        out_rows = np.zeros(len(nodes), dtype=np.int64)
        n_out = 0
        for k, node in enumerate(nodes):
            b.token[k] = node.token
            b.pos[k] = node.pos
            b.n_seq_id[k] = len(node.seq_ids)
            for j, seq in enumerate(node.seq_ids):
                b.seq_id[k][j] = seq
            b.logits[k] = node.output
            if node.output:
                out_rows[k] = n_out
                n_out += 1
        b.n_tokens = len(nodes)
        ctx.kv_cache_clear()
        try:
            ctx.decode(batch)
        except RuntimeError as exc:  # llama_decode returned an error code
            ctx.kv_cache_clear()
            raise EvalError(f"llama.cpp failed to score a batch of {len(nodes)} tokens: {exc}") from exc
        from llama_cpp import llama_get_logits

        return np.ctypeslib.as_array(llama_get_logits(ctx.ctx), shape=(n_out, self.n_vocab)), out_rows

    def _scoring_context(self):
        """The multi-sequence context and batch for scoring, made on first use (same weights, threads and
        attention settings as the decoding context; its own unified KV cache of `n_ctx` cells)."""
        if self._score is None:
            from llama_cpp import _internals

            src = self._llm.context_params
            params = type(src).from_buffer_copy(src)
            params.n_ctx = self.n_ctx
            params.n_batch = params.n_ubatch = self.n_ctx
            params.n_seq_max = SCORE_SEQS
            params.kv_unified = True
            try:
                ctx = _internals.LlamaContext(model=self._llm._model, params=params, verbose=False)
            except ValueError as exc:
                raise EvalError(f"llama.cpp could not create a scoring context for {self.gguf_path}") from exc
            batch = _internals.LlamaBatch(n_tokens=self.n_ctx, embd=0, n_seq_max=SCORE_SEQS, verbose=False)
            self._score = (ctx, batch)
        return self._score

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
        check_ids(ids, self.n_vocab)

    def _check_fits(self, n_positions: int) -> None:
        check_fits(n_positions, self.n_ctx, "the llama.cpp context")

    def close(self) -> None:
        if getattr(self, "_score", None) is not None:
            ctx, batch = self._score
            batch.close()
            ctx.close()
            self._score = None
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
