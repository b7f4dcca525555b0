"""A local judge when none is configured: llama.cpp's native `llama-server` (OpenAI-compatible) over a local GGUF.

`local_judge_server(gguf)` starts the `llama-server` that set-up builds from the same llama.cpp as
llama-cpp-python (scripts/build-llama-tools.sh, in `$EDGETUNE_HOME/llama.cpp/<version>/bin`) on 127.0.0.1 at a
free port with `n_parallel` slots (continuous batching: that many verdicts decode together), waits until its
`/health` answers, yields a `LocalJudgeServer` (its `base_url`, the model name and `config()`, whose
concurrency is the slot count), and stops the process by PID on exit, however the block ends. The server's
output goes to a log file whose tail is quoted when it fails to start. `judge_endpoint(cfg, fallback_gguf)`
yields `cfg` when a judge is configured, else a local one, with a WARNING that a tiny judge is weak and how to
configure a strong one. (A long-running server does not fit `proc.run_tool`, which runs a tool to completion;
this module is the one door for the judge server.)

Raises JudgeError when llama-server is not built, the GGUF is missing, or the server dies or stays silent.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.errors import JudgeError, ToolError
from edgetune.hash_memo import sha256_file_memo
from edgetune.judge_config import JudgeConfig
from edgetune.llamacpp import LlamaCppTools

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVER_TOOL = "llama-server"
STRONG_JUDGE_HINT = (
    "point judge.base_url (an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1), judge.model and "
    "judge.api_key_env (the NAME of the environment variable holding the key) at a strong model"
)


@dataclass(frozen=True)
class LocalJudgeServer:
    base_url: str
    model: (
        str  # "local-<gguf stem>-<sha256[:12]>": verdicts of different local models never share a cache key
    )
    pid: int
    log_path: Path
    n_parallel: int = 1

    def config(self, **overrides: Any) -> JudgeConfig:
        """A JudgeConfig for this server: no key, one request in flight per slot, the JSON-schema
        response_format on (llama-server turns it into a grammar, so even a tiny model gives a parseable
        verdict)."""
        settings = {
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": None,
            "concurrency": self.n_parallel,
            "timeout_s": 300.0,
            # a verdict is a handful of tokens, but llama.cpp's JSON grammar allows up to 22 whitespace
            # characters between tokens, which a weak model may take: room for that, never a cut-off verdict
            "max_tokens": 128,
            "json_schema_grammar": True,
        }
        return JudgeConfig(**{**settings, **overrides})


def local_model_name(gguf_path: Path) -> str:
    return f"local-{gguf_path.stem}-{sha256_file_memo(gguf_path)[:12]}"


@contextmanager
def local_judge_server(
    gguf_path: Path,
    *,
    tools: LlamaCppTools | None = None,
    n_ctx: int = 2048,
    n_parallel: int = 4,
    n_threads: int = 1,
    startup_timeout_s: float = 120.0,
    log_dir: Path | None = None,
) -> Iterator[LocalJudgeServer]:
    """Serve `gguf_path` on 127.0.0.1 at a free port for the duration of the block (see module docstring).

    `n_ctx`: tokens of context per slot (prompt and verdict of one request); `tools`: the set-up llama.cpp
    tools (default: those under $EDGETUNE_HOME for the installed llama-cpp-python)."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise JudgeError(f"local judge model {gguf_path} does not exist", STRONG_JUDGE_HINT)
    if n_parallel < 1:
        raise JudgeError(f"n_parallel must be 1 or more, got {n_parallel}")
    server = _server_binary(tools)
    model = local_model_name(gguf_path)
    port = _free_port()
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="edgetune-judge-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"llama-server-{port}.log"
    # n_ctx tokens of context in each slot, the KV cache sized for all of them at start (no surprise later)
    argv = [
        str(server),
        "--model", str(gguf_path),
        "--host", HOST,
        "--port", str(port),
        "--parallel", str(n_parallel),
        "--kv-unified-per-slot", str(n_ctx),
        "--threads", str(n_threads),
        "--threads-batch", str(n_threads),
        "--alias", model,
        "--no-webui",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(n_threads)}
    log.info("starting local judge server: %s (log %s)", " ".join(argv), log_path)
    with log_path.open("wb") as log_fh:
        proc = subprocess.Popen(
            argv,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, f"http://{HOST}:{port}", startup_timeout_s, log_path)
        base_url = f"http://{HOST}:{port}/v1"
        log.info("local judge server ready at %s (pid %d, %d slots)", base_url, proc.pid, n_parallel)
        yield LocalJudgeServer(base_url, model, proc.pid, log_path, n_parallel)
    finally:
        _stop(proc)


def _server_binary(tools: LlamaCppTools | None) -> Path:
    from edgetune.llamacpp import load_tools

    try:
        if tools is None:
            from edgetune.home import edgetune_home

            tools = load_tools(edgetune_home())
        return tools.tool(SERVER_TOOL)
    except ToolError as exc:
        raise JudgeError(
            f"the local judge needs llama.cpp's {SERVER_TOOL}: {exc.message}",
            f"run scripts/build-llama-tools.sh (scripts/setup.sh does it), or configure a judge endpoint: "
            f"{STRONG_JUDGE_HINT}",
        ) from exc


@contextmanager
def judge_endpoint(
    cfg: JudgeConfig | None, fallback_gguf: Path, **server_options: Any
) -> Iterator[JudgeConfig]:
    """`cfg` when a judge is configured; otherwise a local llama.cpp judge over `fallback_gguf` (a deliberate,
    logged degradation: record `JudgeConfig.describe()` with the results)."""
    if cfg is not None:
        yield cfg
        return
    log.warning(
        "no judge configured (judge: unset): using a local llama.cpp judge over %s. A tiny judge is weak: "
        "its verdicts are a smoke test, not evidence. For real verdicts %s.",
        Path(fallback_gguf).name,
        STRONG_JUDGE_HINT,
    )
    with local_judge_server(fallback_gguf, **server_options) as server:
        yield server.config()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, root_url: str, timeout_s: float, log_path: Path) -> None:
    """Until llama-server's /health says 200 (it answers 503 while the model loads)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise JudgeError(
                f"the local judge server exited with code {proc.returncode} before it was ready: "
                f"{_tail(log_path)}",
                f"see {log_path}",
            )
        try:
            with urllib.request.urlopen(f"{root_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise JudgeError(
        f"the local judge server did not answer within {timeout_s:g}s: {_tail(log_path)}",
        f"see {log_path}; raise startup_timeout_s on a slow machine",
    )


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the server by PID: SIGTERM (llama-server shuts down cleanly), SIGKILL after `grace_s`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("local judge server (pid %d) ignored SIGTERM for %gs; killing it", proc.pid, grace_s)
        proc.kill()
        proc.wait()
    log.info("local judge server (pid %d) stopped", proc.pid)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"
