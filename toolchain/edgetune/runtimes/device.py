"""Run a bundled GGUF on a device over SSH: the bundle's own llama-server, driven by its on-device runner.

`DeviceRuntime(device, model, bundle_dir=BUNDLE)` deploys the bundle folder (idempotent, verified on the device;
device/transfer.py), or with `remote_bundle=PATH` uses one already there, then starts
`python3 runner/edgetune_runner.py serve --model MODEL` over one SSH channel (device/ssh.py `Session.stream`).
The runner starts llama-server once and answers one JSON line per call; every call sends token ids, so the device
scores exactly the ids the host build saw. Requests are sent in chunks of `chunk_size` so each line has a
bounded running time (`request_timeout_s`).

Exactness (llama-server at the vendored llama.cpp revision, see device_runner/edgetune_runner.py):
- generate: greedy over the raw logits, first index on ties (only the temperature-0 sampler runs), stopping
  before the first stop id; an end-of-generation token that is not a stop id is kept, as the local runtimes do.
- loglikelihood: per continuation token, the token is forced with a logit bias and llama-server reports its
  probability from the full-vocabulary softmax of the raw logits (`post_sampling_probs: false`, computed before
  any sampler). That is exact up to float32 rounding (llama-server works in float32 probabilities: ~1e-7
  relative); a token with log-prob below about -87 loses precision, and one below about -103 fails with
  EvalError instead of returning a wrong number. One HTTP request per continuation token, on the device.
- logits: not available. llama-server returns no logits; its `n_probs` gives float32 probabilities for the
  last prompt position only, so a row needs one request returning all n_vocab entries as JSON (~3 MB, 0.25 s on
  x86 for a 49k vocabulary), and probabilities under float32's range come back as log(0). `logits()` raises
  EvalError; compare distributions (fidelity KLD) with LlamaCppRuntime on the same GGUF on the host.

Threading: asyncssh is asynchronous and this interface is not. The runtime owns one event loop in a daemon
thread for its whole life, because the SSH connection and the runner's channel must outlive each call (they are
bound to the loop that made them, so `asyncio.run` per call cannot keep them), and because evals may be called
from code that already runs an event loop (the CLI's `asyncio.run`), where a nested loop in the same thread is
refused. `close()` closes the channel (the runner then stops llama-server), the connection, the loop and the
thread.

Raises ConfigError (bad arguments, a model the bundle does not hold), the device errors of device/ssh.py
(DeviceUnreachable, DeviceAuthError, HostKeyError, DeviceLost, DeviceError: the runner failed to start or died)
and EvalError (a request the runner refused or could not score).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgetune.bundle import RUNNER_FILE
from edgetune.device import remote
from edgetune.device.spec import Device
from edgetune.device.ssh import Stream, connect
from edgetune.device.transfer import deploy_session, remote_bundle_dir
from edgetune.errors import ConfigError, DeviceError, EvalError
from edgetune.runtimes.base import (
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Runtime,
    check_fits,
    check_ids,
    check_prompt,
    check_request,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class DeviceRuntime(Runtime):
    """A GGUF from a bundle, served by the bundle's llama-server on `device`. `model` is the file's path inside
    the bundle (e.g. "models/tiny-Q4_0.gguf"); `threads` None uses the runner's default (the target's cores)."""

    name = "device"

    def __init__(
        self,
        device: Device,
        model: str,
        *,
        bundle_dir: Path | None = None,
        remote_bundle: str | None = None,
        n_ctx: int = 2048,
        threads: int | None = None,
        accept_new_host_key: bool = False,
        startup_timeout_s: float = 300.0,
        request_timeout_s: float = 900.0,
        chunk_size: int = 32,
    ):
        if (bundle_dir is None) == (remote_bundle is None):
            raise ConfigError(
                "DeviceRuntime needs exactly one of bundle_dir and remote_bundle",
                "pass the local bundle folder (deployed first) or the bundle's path on the device",
            )
        if chunk_size < 1 or n_ctx < 16:
            raise ConfigError(
                f"DeviceRuntime: chunk_size must be >= 1 and n_ctx >= 16 (got {chunk_size}, {n_ctx})"
            )
        self.device, self.model = device, model
        self.request_timeout_s, self.chunk_size = request_timeout_s, chunk_size
        self._lock = threading.Lock()
        self._stack: contextlib.AsyncExitStack | None = None
        self._stream: Stream | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"edgetune-device-{device.name}", daemon=True
        )
        self._thread.start()
        try:
            ready = self._call(
                self._open(bundle_dir, remote_bundle, n_ctx, threads, accept_new_host_key, startup_timeout_s),
                timeout_s=None,
            )
        except BaseException:
            self.close()
            raise
        self.n_vocab = int(ready["n_vocab"])
        self.n_ctx = int(ready["n_ctx"])
        self.device_facts: dict[str, Any] = ready.get("device") or {}
        self.server_argv: list[str] = ready.get("server_argv") or []
        self.peak_rss_mb: float | None = None
        log.info("%s: serving %s (n_ctx %d, n_vocab %d)", device.name, model, self.n_ctx, self.n_vocab)

    # -- the connection ------------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    async def _open(
        self,
        bundle_dir: Path | None,
        remote_bundle: str | None,
        n_ctx: int,
        threads: int | None,
        accept_new_host_key: bool,
        startup_timeout_s: float,
    ) -> dict[str, Any]:
        manifest = _manifest(Path(bundle_dir), self.model) if bundle_dir is not None else None
        self._stack = contextlib.AsyncExitStack()
        session = await self._stack.enter_async_context(
            connect(self.device, accept_new_host_key=accept_new_host_key)
        )
        if bundle_dir is not None and manifest is not None:
            await deploy_session(session, Path(bundle_dir))
            remote_bundle = remote_bundle_dir(self.device, manifest)
        argv = [
            remote.PYTHON,
            f"{remote_bundle}/{RUNNER_FILE}",
            "serve",
            "--model",
            f"{remote_bundle}/{self.model}",
            "--ctx-size",
            str(n_ctx),
            "--request-timeout-s",
            f"{self.request_timeout_s:g}",
            "--startup-timeout-s",
            f"{startup_timeout_s:g}",
        ]
        if threads:
            argv += ["--threads", str(threads)]
        self._stream = await self._stack.enter_async_context(
            session.stream(argv, doing=f"serving {self.model} with the bundle's runner")
        )
        ready = _answer(self.device, await self._stream.readline(timeout_s=startup_timeout_s + 30))
        if ready.get("status") != "ready" or not isinstance(ready.get("n_vocab"), int):
            raise DeviceError(
                f"{self.device.name}: the runner did not start serving {self.model}: "
                f"{ready.get('error') or ready}",
                "see the runner's llama-server log on the device",
            )
        return ready

    def _ask(self, op: str, requests: list[Any]) -> list[Any]:
        """Send `requests` in chunks; return the runner's results in order. Raises EvalError for a refusal (the
        runtime stays usable) and DeviceError/DeviceLost when the channel fails (the runtime is then closed: a
        late answer would otherwise be read as the next one)."""
        results: list[Any] = []
        with self._lock:
            for start in range(0, len(requests), self.chunk_size):
                if self._stream is None:
                    raise EvalError(f"the device runtime for {self.device.name} is closed")
                line = json.dumps({"op": op, "requests": requests[start : start + self.chunk_size]})
                try:
                    reply = _answer(
                        self.device,
                        self._call(
                            self._stream.exchange(line, timeout_s=self.request_timeout_s), timeout_s=None
                        ),
                    )
                except DeviceError:
                    self.close()
                    raise
                if reply.get("status") == "error":  # the runner's fatal line: llama-server died
                    self.close()
                    raise DeviceError(
                        f"{self.device.name}: the runner stopped: {reply.get('error')}",
                        "see the llama-server log on the device; out of memory?",
                    )
                if not reply.get("ok"):
                    raise EvalError(f"{self.device.name}: {op} failed on the device: {reply.get('error')}")
                self.peak_rss_mb = reply.get("peak_rss_mb") or self.peak_rss_mb
                results.extend(reply["result"])
        return results

    # -- the Runtime interface -----------------------------------------------------------------------------

    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
        check_prompt(prompt_ids, max_new_tokens)
        self._check_ids(prompt_ids)
        # one position more than the local runtimes need: the runner's own suite check, which llama-server passes
        self._check_fits(len(prompt_ids) + max_new_tokens)
        if max_new_tokens == 0:
            return []
        request = {
            "prompt_ids": list(prompt_ids),
            "max_new_tokens": max_new_tokens,
            "stop_ids": list(stop_ids),
        }
        return [int(t) for t in self._ask("generate", [request])[0]]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        for ctx, cont in requests:
            check_request(ctx, cont)
            self._check_ids(ctx)
            self._check_ids(cont)
            self._check_fits(len(ctx) + len(cont))
        # sorted so that chunks hold neighbours that share prefixes (the runner reuses its KV cache for them)
        order = sorted(range(len(requests)), key=lambda i: list(requests[i][0]) + list(requests[i][1]))
        answers = self._ask("loglikelihood", [[list(requests[i][0]), list(requests[i][1])] for i in order])
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        for i, (total, greedy) in zip(order, answers, strict=True):
            results[i] = (float(total), bool(greedy))
        return results  # type: ignore[return-value]  # every slot is filled above

    def logits(self, ids: list[int]) -> np.ndarray:
        raise EvalError(
            f"the device runtime ({self.device.name}) cannot return full-vocabulary logits: llama-server exposes "
            "only float32 top-n probabilities of one position per request",
            "compare distributions (fidelity KLD) with LlamaCppRuntime on the same GGUF on the host; on the "
            "device use generate and loglikelihood",
        )

    def _check_ids(self, ids: Sequence[int]) -> None:
        check_ids(ids, self.n_vocab)

    def _check_fits(self, n_positions: int) -> None:
        check_fits(n_positions, self.n_ctx, "the device's llama-server context")

    def close(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is None or loop.is_closed():
            return
        stack, self._stack, self._stream = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(TimeoutError):  # the channel's end stops the server; do not hang here
                self._call(stack.aclose(), timeout_s=60)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            loop.close()


def _manifest(bundle_dir: Path, model: str) -> dict[str, Any]:
    """The bundle's manifest, once it is known to hold the runner and `model`. Raises BundleError (a damaged
    manifest) or ConfigError."""
    from edgetune.bundle_manifest import read_manifest

    manifest = read_manifest(bundle_dir)  # BundleError when absent or damaged
    for rel in (RUNNER_FILE, model):
        if rel not in manifest.get("files", {}):
            raise ConfigError(
                f"bundle {bundle_dir.name} has no file {rel}",
                "rebuild the bundle with its runtime, or pick one of its models: "
                + ", ".join(m["file"] for m in manifest.get("models", [])),
            )
    return manifest


def _answer(device: Device, line: str) -> dict[str, Any]:
    try:
        answer = json.loads(line)
    except ValueError as exc:
        raise DeviceError(
            f"{device.name}: unreadable answer from the runner: {line[:200]!r}",
            "is the bundle's runner the one this edgetune shipped?",
        ) from exc
    if not isinstance(answer, dict):
        raise DeviceError(f"{device.name}: unreadable answer from the runner: {line[:200]!r}")
    return answer
