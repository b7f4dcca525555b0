"""Shared fixtures: real but tiny models built from the embedded SmolLM2 tokenizer, and the set-up
llama.cpp tools. Nothing here is mocked; fixtures that take seconds are session-scoped."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

from tests import tiers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_a_tier_skip(report, nodeid: str, *, gpu: bool = False) -> None:
    """Under EDGETUNE_REQUIRE_TIERS=1 a skipped test (or module) fails, naming its tier and the skip's reason."""
    if not report.skipped or hasattr(report, "wasxfail") or gpu:
        return
    tier = tiers.must_not_skip(nodeid)
    if tier is not None:
        report.outcome = "failed"
        report.longrepr = f"tier {tier} did not run ({tiers.REQUIRE_ENV}=1): {_skip_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_a_tier_skip(outcome.get_result(), item.nodeid, gpu=item.get_closest_marker("gpu") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level importorskip skips the whole module at collection
    _fail_a_tier_skip(outcome.get_result(), collector.nodeid)


# the user's own target profiles and suites (~/.config/edgetune) never change what the tests see
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="edgetune-test-config-")


@pytest.fixture(autouse=True)
def _edgetune_logs_reach_caplog(monkeypatch):
    """Every test starts with the edgetune logger propagating to the root, where caplog listens: an in-process CLI
    run earlier in the session (cli/logs.py's configure_logging) turns propagation off, so a test's log assertions
    would otherwise depend on which tests ran before it."""
    monkeypatch.setattr(logging.getLogger("edgetune"), "propagate", True)


@pytest.fixture(scope="session")
def edgetune_home() -> Path:
    from edgetune.home import edgetune_home as home

    return home()


@pytest.fixture(scope="session")
def llama_tools(edgetune_home):
    from edgetune.llamacpp import load_tools

    return load_tools(edgetune_home)


@pytest.fixture(scope="session")
def cross_runtime(edgetune_home):
    """llama.cpp cross-built for the Pi 5's -mcpu by scripts/cross-build-llama.sh (cached: seconds; the first time
    5-12 min on 2 cores). Skips where the script cannot build here (exit 9: no aarch64 compiler and not root to
    install one, or no llama.cpp sdist); any other failure fails."""
    import subprocess
    import sys

    from edgetune.runtime_build import find_runtime
    from edgetune.targets import get_target

    target = get_target("rpi5")
    # PYTHON: this interpreter (the script's default, the checkout's .venv, is absent in a worktree)
    env = {**os.environ, "EDGETUNE_HOME": str(edgetune_home), "PYTHON": sys.executable}
    done = subprocess.run([str(REPO / "scripts" / "cross-build-llama.sh"), target.cpu.mcpu], capture_output=True,
                          text=True, env=env, timeout=3600, check=False)
    if done.returncode == 9:
        pytest.skip(f"cannot cross-build llama.cpp here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, f"scripts/cross-build-llama.sh failed:\n{done.stderr[-2000:]}"
    return find_runtime(edgetune_home, target.arch, target.cpu.mcpu)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from edgetune.assets import smollm2_gguf

    return smollm2_gguf()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, smollm2_gguf) -> Path:
    """SmolLM2's real tokenizer (with its ChatML template), saved as an HF folder."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    tok = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    tok.save_pretrained(out)
    return out


def make_tiny_llama(out: Path, tokenizer_dir: Path, seed: int = 0, tie_embeddings: bool = True,
                    initializer_range: float = 0.02) -> Path:
    """A 2-layer, hidden-64 Llama with random weights and SmolLM2's tokenizer (~13 MB fp32). With tied
    embeddings its greedy output is mostly the last input token repeated; untie them for varied text. At the
    default initializer_range its logits are nearly flat (top-2 gaps of 1e-4 occur), so greedy tokens can flip
    between two correct kernels; a wider range makes the argmax decisive."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=tie_embeddings, initializer_range=initializer_range, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    """The tiny Llama's tokenizer (SmolLM2's), loaded once."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_model_dir, llama_tools) -> Path:
    """The tiny Llama as an F16 GGUF, made by llama.cpp's own converter (set up by scripts/setup.sh)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny-f16.gguf"
    subprocess.run(
        [sys.executable, str(llama_tools.converter), str(tiny_model_dir), "--outfile", str(out), "--outtype", "f16"],
        check=True, env=llama_tools.env(), capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def varied_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """The tiny Llama with untied embeddings (varied greedy text) and wide random weights (decisive argmaxes): what
    tests comparing greedy outputs across kernels (x86 vs aarch64) use. A repeated token would agree by accident;
    a near-tie (measured: a 2.8e-4 top-2 gap at the default init) would differ by accident."""
    return make_tiny_llama(tmp_path_factory.mktemp("varied-llama"), tokenizer_dir, tie_embeddings=False,
                           initializer_range=0.5)


@pytest.fixture(scope="session")
def varied_gguf(tmp_path_factory, varied_model_dir, llama_tools) -> Path:
    """varied_model_dir as an F16 GGUF, made by llama.cpp's own converter."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("varied-gguf") / "varied-f16.gguf"
    subprocess.run(
        [sys.executable, str(llama_tools.converter), str(varied_model_dir), "--outfile", str(out), "--outtype", "f16"],
        check=True, env=llama_tools.env(), capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_gguf, llama_tools):
    """A real bundle for rpi5: the tiny GGUF quantized to Q4_0 and Q8_0 by llama.cpp (export stage), then
    bundle.run, all in a Store under a temp folder. Returns the bundle Artifact. Its files are hard-linked to
    the store's GGUFs: copy the folder before changing anything in it."""
    import shutil

    from edgetune import bundle
    from edgetune.artifacts import Store, sha256_file, stage_key
    from edgetune.constants import Quant
    from edgetune.export import stage as export
    from edgetune.outputs import GGUFFile
    from edgetune.targets import get_target

    store = Store(tmp_path_factory.mktemp("bundle-store"))
    params, inputs = {"quant": "F16", "name": "tiny"}, {"source": sha256_file(tiny_gguf)}
    with store.build(export.KIND, stage_key(export.KIND, params, inputs), params, inputs) as b:
        shutil.copy2(tiny_gguf, b.path / export.FILE)
        GGUFFile.write(b, quant="F16", size_bytes=tiny_gguf.stat().st_size, sha256=sha256_file(tiny_gguf))
    ggufs = export.quantize(GGUFFile.of(b.artifact), [Quant.Q4_0, Quant.Q8_0], llama_tools, store, threads=1)
    return bundle.run(get_target("rpi5"), ggufs, {"base": {"source": str(tiny_gguf)}},
                      {"llama-cpp-python": llama_tools.version, "llama.cpp": llama_tools.revision},
                      store, model_name="tiny")


COLOURS = {"grass": "green", "sky": "blue", "snow": "white", "coal": "black", "blood": "red",
           "lemon": "yellow", "milk": "white", "night": "black"}


def write_colour_task(path: Path, n_rows: int = 42) -> Path:
    """A deterministic toy task as jsonl: "Colour of X? (#i)" → one fixed word per X."""
    import json

    things = sorted(COLOURS)
    with path.open("w") as fh:
        for i in range(n_rows):
            thing = things[i % len(things)]
            fh.write(json.dumps({"id": f"colour-{i}", "input": f"Colour of {thing}? (#{i})",
                                 "output": COLOURS[thing]}) + "\n")
    return path


@pytest.fixture(scope="session")
def colour_jsonl(tmp_path_factory) -> Path:
    """42 rows of the colour task: 10 held out + 32 to train on."""
    return write_colour_task(tmp_path_factory.mktemp("colour-task") / "colours.jsonl")


@pytest.fixture(scope="session")
def inputs(tmp_path_factory, tiny_model_dir, colour_jsonl):
    """(base artifact, data artifact) for training tests: the tiny Llama in place, 32 train rows, 10 held out."""
    from edgetune import basemodel, data
    from edgetune.artifacts import Store
    from edgetune.config import DataConfig, ModelConfig

    store = Store(tmp_path_factory.mktemp("train-inputs") / "store")
    data_art = data.run(DataConfig(source=str(colour_jsonl), heldout_size=10, train_size=32), store)
    base_art = basemodel.run(ModelConfig(source=str(tiny_model_dir)), store)
    return base_art, data_art
