"""The runner with --lora: llama-server applies a LoRA GGUF on top of the model (how a bundle's recovery adapter is
measured on the board, `edgetune eval --recovery`). Real llama-server, a real adapter converted by llama.cpp's
convert_lora_to_gguf.py, and llama-cpp-python with the same adapter as the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import greedy_reference, run_runner


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, tokenizer_dir, llama_tools) -> tuple[Path, Path]:
    """(F16 GGUF, LoRA GGUF) of the varied tiny Llama (untied, wide weights: varied, decisive greedy text) and a
    peft adapter with random non-zero B on every projection, scaled up so that it moves greedy tokens."""
    import subprocess
    import sys

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from edgetune.export.lora import convert_lora
    from tests.conftest import make_tiny_llama

    root = tmp_path_factory.mktemp("lora-runner")
    model_dir = make_tiny_llama(root / "model", tokenizer_dir, tie_embeddings=False, initializer_range=0.5)
    gguf = root / "varied-f16.gguf"
    subprocess.run([sys.executable, str(llama_tools.converter), str(model_dir), "--outfile", str(gguf),
                    "--outtype", "f16"], check=True, env=llama_tools.env(), capture_output=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, init_lora_weights=False,
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                  "gate_proj", "up_proj", "down_proj"]))
    peft_model.save_pretrained(root / "adapter")
    return gguf, convert_lora(root / "adapter", model_dir, root / "tiny-F16-recovery-f16.gguf", llama_tools)


def test_lora_run_equals_llama_cpp_python_with_the_same_adapter(tmp_path, adapted, suite_file, suite_rows,
                                                                  llama_server):
    from edgetune.runtimes import LlamaCppRuntime

    gguf, lora = adapted
    job = tmp_path / "job"
    proc = run_runner("--job-dir", job, "--model", gguf, "--lora", lora, "--suite", suite_file,
                      "--server", llama_server, "--threads", 1, "--ctx-size", 512, "--bench", llama_server)
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in map(json.loads, (job / "results.jsonl").read_text().splitlines())}
    token_rows = [r for r in suite_rows if "prompt_ids" in r]
    with LlamaCppRuntime(gguf, n_ctx=512, n_threads=1, lora_path=lora) as runtime:
        want = {r["id"]: runtime.generate(r["prompt_ids"], r["max_tokens"], stop_ids=[]) for r in token_rows}
    plain = greedy_reference(gguf, token_rows)
    assert want != plain  # the adapter moves greedy tokens: agreement below is the adapter's, not the base's
    for item_id, tokens in want.items():
        got = rows[item_id]["output_token_ids"]
        assert got == tokens[: len(got)], item_id
    summary = json.loads((job / "summary.json").read_text())
    assert summary["job"]["lora"] == str(lora) and summary["job"]["lora_size_bytes"] == lora.stat().st_size
    argv = summary["server_argv"]
    assert argv[argv.index("--lora") + 1] == str(lora)
    assert all(r["gen_tokens_per_s"] > 0 for r in rows.values())  # the adapted model's speed, per item
    # llama-bench cannot apply an adapter: skipped with the reason, never run on the bare model instead
    assert summary["bench"]["skipped"].startswith("llama-bench cannot apply a LoRA adapter")
    assert not (job / "bench.log").exists()


@pytest.mark.parametrize("content, message", [(None, "does not exist"), (b"GGUX", "is not a GGUF file")],
                         ids=["missing", "not-gguf"])
def test_bad_lora_file_is_refused_before_the_server_starts(tmp_path, adapted, suite_file, llama_server, content,
                                                           message):
    gguf, _ = adapted
    lora = tmp_path / "adapter.gguf"
    if content is not None:
        lora.write_bytes(content)
    job = tmp_path / "job"
    proc = run_runner("--job-dir", job, "--model", gguf, "--lora", lora, "--suite", suite_file,
                      "--server", llama_server)
    assert proc.returncode == 4
    assert f"LoRA adapter file {lora} {message}" in proc.stderr
    assert not (job / "server.log").exists()
