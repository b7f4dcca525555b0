"""The runner end to end on x86: results and summary, greedy outputs equal to llama-cpp-python's on the same
token ids, resume after partial progress, the job lock, and each failure's exit code and message."""

from __future__ import annotations

import ast
import fcntl
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import MAX_TOKENS, RUNNER, greedy_reference, run_runner

ROW_KEYS = {"id", "output", "output_tokens", "output_token_ids", "prompt_tokens", "stop_type", "latency_s",
            "ttft_ms", "prompt_ms", "gen_ms", "prompt_tokens_per_s", "gen_tokens_per_s", "peak_rss_mb"}


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, varied_gguf, suite_file, llama_server):
    job = tmp_path_factory.mktemp("job") / "job"
    proc = run_runner("--job-dir", job, "--model", varied_gguf, "--suite", suite_file, "--server", llama_server,
                      "--threads", 1, "--ctx-size", 512)
    return job, proc


def test_runner_imports_only_the_standard_library():
    tree = ast.parse(RUNNER.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names - {"__future__"} <= sys.stdlib_module_names, names - sys.stdlib_module_names


def test_results_in_suite_order_with_timings(full_run, suite_rows):
    job, proc = full_run
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"status": "done", "results": str(job / "results.jsonl"), "summary": str(job / "summary.json"),
                   "items": len(suite_rows), "ran": len(suite_rows)}
    rows = rows_of(job / "results.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in suite_rows]  # ids keep their type (99 stays an int)
    for row, item in zip(rows, suite_rows):
        assert set(row) == ROW_KEYS
        assert row["output_tokens"] == len(row["output_token_ids"]) <= item["max_tokens"]
        assert row["stop_type"] in {"limit", "eos", "word"}
        if "prompt_ids" in item:
            assert row["prompt_tokens"] == len(item["prompt_ids"])
        assert row["latency_s"] > 0 and row["ttft_ms"] > 0 and row["prompt_tokens_per_s"] > 0
        assert row["gen_tokens_per_s"] > 0 and row["peak_rss_mb"] > 1
    assert not list(job.glob("*.tmp-*")) and not (job / ".lock").read_text()  # atomic writes, lock released


def test_outputs_equal_llama_cpp_python_greedy(full_run, suite_rows, varied_gguf):
    """The same token ids through llama-server (the runner) and llama-cpp-python (the host's edge eval)."""
    job, _ = full_run
    reference = greedy_reference(varied_gguf, suite_rows)
    rows = {r["id"]: r for r in rows_of(job / "results.jsonl")}
    assert len(set(map(tuple, reference.values()))) > 1  # varied text: agreement is not an accident
    for item_id, want in reference.items():
        got = rows[item_id]["output_token_ids"]
        assert got == want[: len(got)], item_id
        assert len(got) == MAX_TOKENS or rows[item_id]["stop_type"] == "eos", item_id


def test_summary_describes_device_and_run(full_run, suite_rows, varied_gguf):
    job, _ = full_run
    summary = json.loads((job / "summary.json").read_text())
    rows = rows_of(job / "results.jsonl")
    assert summary["items"] == len(suite_rows)
    assert summary["output_tokens"] == sum(r["output_tokens"] for r in rows)
    assert summary["peak_rss_mb"] >= max(r["peak_rss_mb"] for r in rows) > 1
    assert summary["job"]["model"] == str(varied_gguf) and summary["job"]["threads"] == 1
    assert summary["server_argv"][summary["server_argv"].index("-fa") + 1] == "off"
    device = summary["device"]
    assert device["machine"] == os.uname().machine and device["cpu_model"] != "unknown"
    assert device["ram_mb"] > 100 and device["cpu_count"] >= 1 and device["os"]
    assert set(device["temperature_c"]) == {"start", "end"} and "throttled" in device


def test_second_run_is_already_done(full_run, varied_gguf, suite_file, llama_server):
    job, _ = full_run
    before = (job / "results.jsonl").read_bytes()
    proc = run_runner("--job-dir", job, "--model", varied_gguf, "--suite", suite_file, "--server", llama_server)
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "already-done"
    assert (job / "results.jsonl").read_bytes() == before


def test_resume_runs_only_missing_items(full_run, tmp_path, varied_gguf, suite_file, suite_rows, llama_server):
    """Progress from a killed run (two items and a torn third line) is kept; only the rest is run."""
    done_job, _ = full_run
    job = tmp_path / "job"
    job.mkdir()
    shutil.copy(done_job / "job.json", job / "job.json")
    first = (done_job / "results.jsonl").read_text().splitlines()
    (job / "progress.jsonl").write_text(first[0] + "\n" + first[1] + "\n" + first[2][:25])
    proc = run_runner("--job-dir", job, "--model", varied_gguf, "--suite", suite_file, "--server", llama_server,
                      "--threads", 1, "--ctx-size", 512)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ran"] == len(suite_rows) - 2
    assert "resuming: 2 of 5 items already done" in proc.stderr
    rows, old = rows_of(job / "results.jsonl"), rows_of(done_job / "results.jsonl")
    assert rows[:2] == old[:2]  # untouched, latencies included: not re-run
    assert [r["output_token_ids"] for r in rows] == [r["output_token_ids"] for r in old]


def test_a_different_job_in_the_same_dir_is_refused(full_run, tmp_path, varied_gguf, suite_file, llama_server):
    done_job, _ = full_run
    job = tmp_path / "job"
    job.mkdir()
    shutil.copy(done_job / "job.json", job / "job.json")
    proc = run_runner("--job-dir", job, "--model", varied_gguf, "--suite", suite_file, "--server", llama_server,
                      "--threads", 2, "--ctx-size", 512)
    assert proc.returncode == 2
    assert f"job dir {job} holds a different job" in proc.stderr


def test_lock_held_by_another_runner(tmp_path, varied_gguf, suite_file, llama_server):
    job = tmp_path / "job"
    job.mkdir()
    with open(job / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("4242\n")
        fh.flush()
        proc = run_runner("--job-dir", job, "--model", varied_gguf, "--suite", suite_file, "--server", llama_server)
    assert proc.returncode == 75
    assert f"job dir {job} is locked by another runner (pid 4242)" in proc.stderr
    assert json.loads(proc.stdout) == {"status": "error", "exit_code": 75,
                                       "error": f"job dir {job} is locked by another runner (pid 4242)"}
    assert not (job / "results.jsonl").exists() and not (job / "server.log").exists()


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a gguf at all", "is not a GGUF file"),
], ids=["missing", "not-gguf"])
def test_bad_model_file(tmp_path, suite_file, llama_server, content, message):
    model = tmp_path / "model.gguf"
    if content is not None:
        model.write_bytes(content)
    proc = run_runner("--job-dir", tmp_path / "job", "--model", model, "--suite", suite_file, "--server", llama_server)
    assert proc.returncode == 4
    assert f"model file {model} {message}" in proc.stderr


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"prompt_ids": [1], "max_tokens": 2}', "'id' must be a non-empty string or an integer"),
    ('{"id": "a", "max_tokens": 2}', "give exactly one of 'prompt_ids' and 'prompt'"),
    ('{"id": "a", "prompt_ids": [1], "prompt": "x", "max_tokens": 2}', "give exactly one of"),
    ('{"id": "a", "prompt_ids": [1, -3], "max_tokens": 2}', "'prompt_ids' must be a non-empty list"),
    ('{"id": "a", "prompt_ids": "1 2", "max_tokens": 2}', "'prompt_ids' must be a non-empty list"),
    ('{"id": "a", "prompt_ids": [1]}', "'max_tokens' must be an integer >= 1"),
    ('{"id": "a", "prompt_ids": [1], "max_tokens": 0}', "'max_tokens' must be an integer >= 1"),
    ('{"id": "a", "prompt_ids": [1], "max_tokens": 600}',
     "prompt (1 tokens) + max_tokens (600) exceeds --ctx-size 512"),
    ('{"id": "q0", "prompt": "dup", "max_tokens": 2}', "duplicate id 'q0'"),
], ids=["json", "array", "id", "no-prompt", "two-prompts", "negative-id", "string-ids", "no-max", "zero-max",
        "too-long", "duplicate"])
def test_bad_suite_line_names_the_line(tmp_path, varied_gguf, suite_file, llama_server, line, message):
    suite = tmp_path / "suite.jsonl"
    suite.write_text(suite_file.read_text().splitlines()[0] + "\n\n" + line + "\n")
    job = tmp_path / "job"
    proc = run_runner("--job-dir", job, "--model", varied_gguf, "--suite", suite, "--server", llama_server,
                      "--ctx-size", 512)
    assert proc.returncode == 3, proc.stderr
    assert f"{suite} line 3: {message}" in proc.stderr
    assert not (job / "server.log").exists()  # refused before starting anything


def test_server_that_does_not_start_shows_its_log(tmp_path, varied_gguf, suite_file, llama_server):
    proc = run_runner("--job-dir", tmp_path / "job", "--model", varied_gguf, "--suite", suite_file,
                      "--server", llama_server, "--server-arg=--no-such-flag")
    assert proc.returncode == 5
    assert "llama-server exited with code" in proc.stderr and "before it was ready" in proc.stderr
    assert "--no-such-flag" in proc.stderr  # the end of its own log, not just our line


def test_corrupt_gguf_fails_to_load(tmp_path, varied_gguf, suite_file, llama_server):
    model = tmp_path / "cut.gguf"
    model.write_bytes(varied_gguf.read_bytes()[: 200_000])
    proc = run_runner("--job-dir", tmp_path / "job", "--model", model, "--suite", suite_file, "--server", llama_server)
    assert proc.returncode == 5
    assert "before it was ready" in proc.stderr


def test_missing_server_binary(tmp_path, varied_gguf, suite_file):
    proc = run_runner("--job-dir", tmp_path / "job", "--model", varied_gguf, "--suite", suite_file,
                      "--server", tmp_path / "bin" / "llama-server")
    assert proc.returncode == 5
    assert f"cannot execute {tmp_path / 'bin' / 'llama-server'}" in proc.stderr


def test_help_and_usage_errors():
    assert run_runner("--help").returncode == 0
    proc = run_runner("--model", "x.gguf")
    assert proc.returncode == 2 and "--job-dir" in proc.stderr
