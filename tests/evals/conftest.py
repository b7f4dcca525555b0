"""Real runtimes over the shared tiny Llama fixtures, for the evals' tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def hf_runtime(tiny_model_dir):
    from edgetune.runtimes import HFRuntime

    with HFRuntime(tiny_model_dir, batch_size=4) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def llama_runtime(tiny_gguf):
    from edgetune.runtimes import LlamaCppRuntime

    with LlamaCppRuntime(tiny_gguf, n_ctx=1024, n_threads=1) as runtime:
        yield runtime
