"""Run a runtime in a child process, so that a crash in native code becomes an error instead of our death.

llama.cpp is C++: a bad kernel (the AMX path on some x86 hosts, NOTES.md) kills the process that loaded it with
SIGSEGV, which in-process would take `edgetune build` (and pytest) down with no message. `ChildRuntime` starts a
fresh interpreter (`spawn`: no fork of a process holding torch threads), builds the real runtime there from an
importable factory, and forwards each call over a pipe. Errors raised in the child (EdgetuneError and its
hints) come back as they were; a child that dies raises `NativeCrash` naming the signal, the call and the file.
Costs: one interpreter start and import per model load (~1 s) and a copy of each result through the pipe.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgetune.errors import EdgetuneError, EvalError, NativeCrash
from edgetune.proc import signal_name
from edgetune.runtimes.base import LoglikelihoodRequest, LoglikelihoodResult, Runtime

log = logging.getLogger(__name__)

_ATTRS = ("n_ctx", "n_vocab")  # read once from the child's runtime after it loads


def _serve(conn, factory: str, args: tuple, kwargs: dict) -> None:
    """The child's loop: build the runtime, then answer (method, args) until told to close or the pipe ends."""
    import importlib

    module, _, name = factory.partition(":")
    try:
        runtime = getattr(importlib.import_module(module), name)(*args, **kwargs)
    except EdgetuneError as exc:
        conn.send(("err", exc))
        return
    conn.send(("ok", {a: getattr(runtime, a, None) for a in _ATTRS}))
    try:
        while True:
            try:
                method, call_args = conn.recv()
            except EOFError:
                return
            if method == "close":
                return
            try:
                conn.send(("ok", getattr(runtime, method)(*call_args)))
            except EdgetuneError as exc:
                conn.send(("err", exc))
    finally:
        runtime.close()
        conn.close()


class ChildRuntime(Runtime):
    """A `Runtime` built by `factory` ("module:callable") in a child process. `subject` names the model in
    crash messages (the GGUF file and its type)."""

    def __init__(self, factory: str, *args: Any, subject: str, name: str = "runtime", **kwargs: Any):
        self.name, self.subject = name, subject
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child_conn, factory, args, kwargs), daemon=True,
                                 name=f"edgetune-{name}")
        self._proc.start()
        child_conn.close()  # ours is closed so the pipe reports EOF when the child dies
        try:
            attrs = self._receive("loading")
        except EdgetuneError:
            self._shutdown()
            raise
        for key, value in attrs.items():
            setattr(self, key, value)

    def _receive(self, what: str) -> Any:
        try:
            status, payload = self._conn.recv()
        except (EOFError, ConnectionResetError):
            self._proc.join(timeout=10)
            code = self._proc.exitcode
            self._shutdown()
            raise NativeCrash(what, signal_name(code), self.subject) from None
        if status == "err":
            raise payload
        return payload

    def _call(self, method: str, *args: Any) -> Any:
        if self._proc is None:
            raise EvalError(f"{self.name} runtime for {self.subject} is closed", "open the runtime again")
        self._conn.send((method, args))
        return self._receive({"generate": "generating with", "loglikelihood": "scoring with",
                              "logits": "computing logits of"}.get(method, f"in {method} on"))

    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
        return self._call("generate", list(prompt_ids), max_new_tokens, list(stop_ids))

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        return self._call("loglikelihood", [(list(c), list(x)) for c, x in requests])

    def logits(self, ids: list[int]) -> np.ndarray:
        return self._call("logits", list(ids))

    def _shutdown(self) -> None:
        if self._proc is None:
            return
        self._conn.close()
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._proc = None

    def close(self) -> None:
        if getattr(self, "_proc", None) is None:
            return
        try:
            self._conn.send(("close", ()))
        except (BrokenPipeError, OSError):
            pass  # the child is already gone; _shutdown reaps it
        self._shutdown()
