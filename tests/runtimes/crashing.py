"""A runtime that really crashes its process (a NULL read in native code, as a broken llama.cpp kernel does), for
the crash-isolation tests: llama.cpp's own crash (the AMX path) cannot be produced on every CPU."""

from __future__ import annotations

import ctypes

from edgetune.errors import EvalError
from edgetune.runtimes.base import Runtime


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


class CrashingRuntime(Runtime):
    name = "crashing"

    def __init__(self, path=None, *, crash_on: str = "generate", **_: object):
        self.n_ctx, self.n_vocab, self.crash_on = 64, 100, crash_on
        if crash_on == "load":
            segfault()

    def generate(self, prompt_ids, max_new_tokens, stop_ids):
        if self.crash_on == "generate":
            segfault()
        return list(prompt_ids[:max_new_tokens])

    def loglikelihood(self, requests):
        if self.crash_on == "loglikelihood":
            segfault()
        return [(-1.0, True) for _ in requests]

    def logits(self, ids):
        raise EvalError("this runtime has no logits", "use generate")
