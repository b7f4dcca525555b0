"""Runtimes over the tiny fixtures, plus an untied tiny Llama whose greedy output varies.

The shared tiny Llama ties its embeddings, and with random weights its argmax is then almost always the last
input token, so greedy text from it is one token repeated. Untying them (same shapes otherwise) gives varied
greedy sequences, which is what a test of decoding needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def hf_runtime(tiny_model_dir):
    from edgetune.runtimes import HFRuntime

    with HFRuntime(tiny_model_dir, batch_size=3) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def llama_runtime(tiny_gguf):
    from edgetune.runtimes import LlamaCppRuntime

    with LlamaCppRuntime(tiny_gguf, n_ctx=512, n_threads=1) as runtime:
        yield runtime


@pytest.fixture(scope="session")
def untied_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("untied-llama")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def untied_gguf(tmp_path_factory, untied_model_dir, llama_tools) -> Path:
    out = tmp_path_factory.mktemp("untied-gguf") / "untied-f16.gguf"
    subprocess.run(
        [
            sys.executable,
            str(llama_tools.converter),
            str(untied_model_dir),
            "--outfile",
            str(out),
            "--outtype",
            "f16",
        ],
        check=True,
        env=llama_tools.env(),
        capture_output=True,
    )
    return out
