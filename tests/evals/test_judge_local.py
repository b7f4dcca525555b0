"""The judge against a REAL local OpenAI-compatible server: llama.cpp's native `llama-server` (several slots),
over the tiny random Llama (fast; quality irrelevant) and, once, the embedded SmolLM2."""

from __future__ import annotations

import json
import logging
import os
import urllib.request

import pytest
from edgetune.errors import JudgeError
from edgetune.evals.judge import JudgeItem, judge_pairwise, judge_single
from edgetune.judge_config import JudgeConfig
from edgetune.evals.judge_server import judge_endpoint, local_judge_server
from edgetune.evals.suites import load_rubric

ITEMS = [JudgeItem("capital", "What is the capital of France?"), JudgeItem("sum", "What is 2 + 3?")]
ANSWERS = ["Paris.", "5"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def tiny_server(tiny_gguf, tmp_path_factory):
    # 512: the tiny model's training context, which llama-server caps a slot at
    with local_judge_server(tiny_gguf, n_ctx=512, log_dir=tmp_path_factory.mktemp("judge-log")) as server:
        yield server
    assert not _alive(server.pid)  # stopped by PID when the block ended


def test_local_server_serves_the_openai_api(tiny_server, tiny_gguf):
    with urllib.request.urlopen(f"{tiny_server.base_url}/models", timeout=5) as resp:
        models = json.load(resp)
    assert [m["id"] for m in models["data"]] == [tiny_server.model]
    assert tiny_server.model.startswith(f"local-{tiny_gguf.stem}-") and _alive(tiny_server.pid)
    assert tiny_server.base_url.startswith("http://127.0.0.1:")
    # several slots, each with the context asked for (one KV pool shared by all)
    with urllib.request.urlopen(f"{tiny_server.base_url.removesuffix('/v1')}/slots", timeout=5) as resp:
        slots = json.load(resp)
    assert len(slots) == tiny_server.n_parallel == tiny_server.config().concurrency == 4
    assert {slot["n_ctx"] for slot in slots} == {512}


def test_grammar_forces_a_valid_verdict_even_from_random_weights(tiny_server, tmp_path):
    cfg = tiny_server.config()
    rubric = load_rubric("helpfulness")
    result = judge_single(cfg, rubric, ITEMS, ANSWERS, tmp_path)
    assert result.calls == 2 and result.n_valid == 2
    assert all(1 <= item.rating <= 10 for item in result.items)
    again = judge_single(cfg, rubric, ITEMS, ANSWERS, tmp_path)
    assert again.calls == 0 and again.items == result.items
    pair = judge_pairwise(cfg, rubric, ITEMS, ANSWERS, ["Lyon.", "5"], tmp_path)
    assert pair.calls == 2 and pair.identical == 1 and pair.invalid == 0  # "5" vs "5" is never sent


def test_free_text_from_a_random_model_is_invalid_not_guessed(tiny_server, tmp_path):
    cfg = tiny_server.config(json_schema_grammar=False, max_tokens=16)
    result = judge_single(cfg, load_rubric("helpfulness"), ITEMS[:1], ANSWERS[:1], tmp_path)
    assert result.n_valid == 0 and result.mean_rating is None
    assert result.items[0].reason == 'no "Rating: N" line' and result.items[0].raw


def test_no_judge_configured_starts_a_local_one_and_warns(tiny_gguf, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="edgetune.evals.judge_server")
    with judge_endpoint(None, tiny_gguf, n_ctx=512, log_dir=tmp_path) as cfg:
        assert (
            cfg.api_key_env is None
            and cfg.json_schema_grammar
            and cfg.base_url.startswith("http://127.0.0.1")
        )
        result = judge_single(
            cfg,
            load_rubric("helpfulness"),
            ITEMS[:1],
            ANSWERS[:1],
            tmp_path / "cache",
        )
    assert result.n_valid == 1
    assert "A tiny judge is weak" in caplog.text and "judge.base_url" in caplog.text
    assert "judge.api_key_env" in caplog.text
    configured = JudgeConfig(base_url="https://judge.example/v1", model="big")
    with judge_endpoint(configured, tiny_gguf) as cfg:
        assert cfg is configured


def test_server_that_cannot_start_is_a_clear_error(tmp_path):
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with (
        pytest.raises(JudgeError, match="exited with code") as info,
        local_judge_server(broken, log_dir=tmp_path, startup_timeout_s=60),
    ):
        pass
    assert "llama-server-" in info.value.hint
    with pytest.raises(JudgeError, match="does not exist"), local_judge_server(tmp_path / "missing.gguf"):
        pass


def test_smollm2_judges_one_pair_end_to_end(smollm2_gguf, tmp_path):
    """One real pairwise comparison (two calls) by the embedded SmolLM2 with llama.cpp's JSON grammar."""
    with local_judge_server(smollm2_gguf, n_ctx=1024, log_dir=tmp_path) as server:
        result = judge_pairwise(
            server.config(),
            load_rubric("helpfulness"),
            ITEMS[:1],
            ["Paris."],
            ["I do not know."],
            tmp_path / "cache",
            names=("gpu", "Q4_0"),
        )
    assert result.calls == 2 and result.invalid == 0 and result.n == 1
    assert result.items[0].verdict_ab in ("A", "B", "tie") and result.items[0].verdict_ba in ("A", "B", "tie")
    assert not _alive(server.pid)


def test_sync_judge_works_inside_a_running_event_loop(tiny_server, tmp_path):
    # a notebook, a caller's async code, or a library that left its loop running (the full test suite once
    # did): asyncio.run refuses to nest, so the sync wrappers run the judge on a worker thread instead
    import asyncio

    cfg = tiny_server.config()
    rubric = load_rubric("helpfulness")

    async def inside_a_loop():
        return (judge_single(cfg, rubric, ITEMS, ANSWERS, tmp_path),
                judge_pairwise(cfg, rubric, ITEMS, ANSWERS, ["Lyon.", "5"], tmp_path))

    single, pair = asyncio.run(inside_a_loop())
    assert single.n_valid == 2 and all(1 <= item.rating <= 10 for item in single.items)
    assert pair.identical == 1 and pair.invalid == 0
