"""The one interface every way of running a model offers (HF on the build host, llama.cpp locally, a device).

Runtimes speak token ids only: the caller tokenises once, with the model's HF tokenizer, so every build of
the same model (fp32 HF, F16 or quantized GGUF, a remote device) is scored on exactly the same tokens. Evals
depend on this module alone and never on a backend.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

import numpy as np

from edgetune.errors import EvalError

# (context_ids, continuation_ids) -> (sum of log-probs of the continuation, continuation is the greedy one)
LoglikelihoodRequest = tuple[list[int], list[int]]
LoglikelihoodResult = tuple[float, bool]


class Runtime(abc.ABC):
    """A loaded model that can decode greedily and score continuations. Use as a context manager."""

    name: str = "runtime"

    @abc.abstractmethod
    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
        """Greedy (argmax, first index on ties) continuation of `prompt_ids`.

        Returns at most `max_new_tokens` new ids; decoding stops at the first id in `stop_ids`, which is not
        included. Raises EvalError for an empty prompt or one that does not fit the runtime's context."""

    @abc.abstractmethod
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """For each (context_ids, continuation_ids): the summed natural-log probability of the continuation
        given the context, and whether greedy decoding from the context would produce exactly the
        continuation. Results are in request order. Raises EvalError for an empty context or continuation."""

    @abc.abstractmethod
    def logits(self, ids: list[int]) -> np.ndarray:
        """Raw next-token logits for every position of `ids`: float32 array [len(ids), n_vocab], row i is the
        distribution over the token after ids[i]. Used to compare builds distribution by distribution (KLD).
        Raises EvalError for empty ids or ids that do not fit the context."""

    def close(self) -> None:  # optional hook: not every backend holds resources
        """Free the model. Idempotent."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def check_request(context_ids: Sequence[int], continuation_ids: Sequence[int]) -> None:
    """Reject requests no runtime can score: the first continuation token needs a context to condition on."""
    if not context_ids:
        raise EvalError(
            "log-likelihood request with an empty context",
            "start the context with BOS (or any prompt) so the first continuation token is predicted",
        )
    if not continuation_ids:
        raise EvalError(
            "log-likelihood request with an empty continuation", "every choice must have at least one token"
        )


def check_prompt(prompt_ids: Sequence[int], max_new_tokens: int) -> None:
    if not prompt_ids:
        raise EvalError("generate called with an empty prompt", "pass at least one token (e.g. BOS)")
    if max_new_tokens < 0:
        raise EvalError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def check_ids(ids: Sequence[int], n_vocab: int) -> None:
    """Reject token ids outside the vocabulary (another model's tokenizer, a corrupt suite)."""
    bad = [t for t in ids if not 0 <= t < n_vocab]
    if bad:
        raise EvalError(f"token id {bad[0]} is outside the model's vocabulary (0..{n_vocab - 1})",
                        "tokenise with this model's own tokenizer")


def check_fits(n_positions: int, n_ctx: int, where: str) -> None:
    if n_positions > n_ctx:
        raise EvalError(f"request needs {n_positions} positions but {where} holds {n_ctx}",
                        "raise n_ctx or shorten the prompt")
