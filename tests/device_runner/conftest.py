"""The on-device runner against a real x86 llama-server (built by scripts/build-llama-tools.sh from the same
llama.cpp as the bundles' aarch64 one) and the varied tiny GGUF. The runner runs as a subprocess under
`python -I -S`: no site-packages, so an accidental non-stdlib import fails here as it would on a board."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgetune.runtime_build import runner_source
from tests.helpers import chat_suite_rows

RUNNER = runner_source()
MAX_TOKENS = 6
QUESTIONS = ["What colour is grass?", "Name a prime number.", "Say hello.", "Count to three."]


@pytest.fixture(scope="session")
def llama_server(llama_tools) -> Path:
    return llama_tools.tool("llama-server")  # ToolError: run scripts/build-llama-tools.sh


@pytest.fixture(scope="session")
def suite_rows(tokenizer_dir) -> list[dict]:
    """Chat-templated prompts as token ids (what the pipeline passes), plus one plain-text prompt."""
    rows = chat_suite_rows(tokenizer_dir, QUESTIONS, MAX_TOKENS, reference="x")
    rows.append({"id": 99, "prompt": "Once upon a time", "max_tokens": 3})
    return rows


@pytest.fixture(scope="session")
def suite_file(tmp_path_factory, suite_rows) -> Path:
    path = tmp_path_factory.mktemp("suite") / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in suite_rows))
    return path


def run_runner(*args, timeout_s: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-I", "-S", str(RUNNER), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout_s, env=env, check=False)


def greedy_reference(gguf: Path, rows: list[dict]) -> dict:
    """x86 llama-cpp-python's greedy continuation of every token-id prompt, never stopping early."""
    from edgetune.runtimes import LlamaCppRuntime

    with LlamaCppRuntime(gguf, n_ctx=512, n_threads=1) as runtime:
        return {r["id"]: runtime.generate(r["prompt_ids"], r["max_tokens"], stop_ids=[])
                for r in rows if "prompt_ids" in r}
