"""The base-model stage on real folders and GGUF files: used in place and keyed by content, dequantized from
GGUF, and refused with a ModelError (nothing written to the store) when the source is unusable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgetune import basemodel
from edgetune.artifacts import Store, sha256_file
from edgetune.config import ModelConfig
from edgetune.constants import ARTIFACT_FILE, Quant
from edgetune.errors import ModelError

PROBE = "The colour of grass is green, and the sky is blue."


def run(source: Path | str, store_dir: Path):
    return basemodel.run(ModelConfig(source=str(source)), Store(store_dir))


def logits(model_dir: Path, text: str = PROBE):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        return model(tok(text, return_tensors="pt").input_ids).logits


def store_is_empty(store_dir: Path) -> bool:
    return not store_dir.exists() or not any(store_dir.rglob("*"))


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


# --- a local Hugging Face folder --------------------------------------------------------------------------------


def test_local_folder_is_used_in_place(model_copy, tmp_path):
    art = run(model_copy, tmp_path / "store")
    assert art.model_dir == model_copy.resolve()
    assert not art.cached
    # nothing but the record is written: the weights are not copied into the store
    assert [p.name for p in art.path.iterdir()] == [ARTIFACT_FILE]
    assert art.record["inputs"] == {"source": str(model_copy)}


def test_local_folder_is_cached_while_unchanged(model_copy, tmp_path):
    first = run(model_copy, tmp_path / "store")
    again = run(model_copy, tmp_path / "store")
    assert again.cached
    assert (again.key, again.path) == (first.key, first.path)


def test_local_folder_is_keyed_by_content(model_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    first = run(model_copy, tmp_path / "store")
    weights = model_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"] = tensors["model.norm.weight"] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})

    changed = run(model_copy, tmp_path / "store")
    assert not changed.cached
    assert changed.key != first.key
    assert changed.outputs["source_sha256"] != first.outputs["source_sha256"]


def test_any_changed_file_changes_the_key(model_copy, tmp_path):
    first = run(model_copy, tmp_path / "store")
    template = model_copy / "chat_template.jinja"
    template.write_text(template.read_text() + "\n")
    assert run(model_copy, tmp_path / "store").key != first.key


def test_folder_without_config_is_refused(model_copy, tmp_path):
    (model_copy / "config.json").unlink()
    with pytest.raises(ModelError, match="has no config.json"):
        run(model_copy, tmp_path / "store")
    assert store_is_empty(tmp_path / "store")


def test_folder_with_only_pickled_weights_is_refused(model_copy, tmp_path):
    import torch
    from safetensors.torch import load_file

    weights = model_copy / "model.safetensors"
    torch.save(load_file(weights), model_copy / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ModelError, match=r"no \.safetensors weights") as info:
        run(model_copy, tmp_path / "store")
    assert "save_pretrained" in info.value.hint
    assert store_is_empty(tmp_path / "store")


# --- missing sources --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["missing-model", "missing.gguf"])
def test_missing_path_is_a_model_error(tmp_path, name):
    with pytest.raises(ModelError, match="base model not found"):
        run(tmp_path / name, tmp_path / "store")
    assert store_is_empty(tmp_path / "store")


def test_missing_relative_gguf_is_a_model_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="base model not found"):
        run("nowhere.gguf", tmp_path / "store")


def test_unreachable_hub_id_is_a_model_error(tmp_path, monkeypatch):
    """The hub path is real (from_pretrained); offline, an unknown id fails cleanly and publishes nothing."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="holds no model edgetune-tests/no-such-model@main") as exc:
        run("edgetune-tests/no-such-model", tmp_path / "store")
    assert exc.value.exit_code == 4 and "go online once" in exc.value.hint
    leftovers = list((tmp_path / "store").rglob("*"))
    assert all(p.is_dir() for p in leftovers), leftovers  # at most the empty kind folder, no temp build folder


def _hub_cache(root: Path, repo: str, model_dir: Path, sha: str) -> None:
    """huggingface_hub's cache layout: models--owner--name/snapshots/<commit>/ with the files, refs/main naming it."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(model_dir, repo_dir / "snapshots" / sha)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)


def test_hub_id_offline_loads_the_cached_commit_and_keys_on_it(tmp_path, monkeypatch, tiny_model_dir, caplog):
    """A hub id resolves to the commit the hub cache recorded (offline), loads that snapshot through
    from_pretrained, and names the commit in the record; when main moves, the key moves (no silent reuse)."""
    import json
    import logging

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    old, new = "1" * 40, "2" * 40
    _hub_cache(tmp_path / "hub", "someone/tiny", tiny_model_dir, old)
    with caplog.at_level(logging.WARNING):
        first = run("someone/tiny", tmp_path / "store")
    assert "HF_HUB_OFFLINE is set" in caplog.text and old[:12] in caplog.text
    record = json.loads((first.path / ARTIFACT_FILE).read_text())
    assert record["inputs"]["source"] == f"someone/tiny@{old} (main, resolved offline from the hub cache)"
    assert (first.model_dir / "config.json").is_file()
    assert run("someone/tiny", tmp_path / "store").key == first.key  # same commit: a cache hit
    shutil.copytree(tmp_path / "hub" / "models--someone--tiny" / "snapshots" / old,
                    tmp_path / "hub" / "models--someone--tiny" / "snapshots" / new)
    (tmp_path / "hub" / "models--someone--tiny" / "refs" / "main").write_text(new)
    assert run("someone/tiny", tmp_path / "store").key != first.key


# --- a GGUF source ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_q8_gguf(tmp_path_factory, tiny_gguf, llama_tools) -> Path:
    """The tiny Llama quantized to Q8_0 by llama.cpp: a really quantized file to dequantize."""
    from edgetune.export.quantize import quantize_gguf

    return quantize_gguf(tiny_gguf, tmp_path_factory.mktemp("tiny-q8") / "tiny-q8_0.gguf", Quant.Q8_0, llama_tools,
                         nthread=1)


@pytest.mark.parametrize("which", ["f16", "q8_0"])
def test_gguf_is_dequantized_to_a_safetensors_folder(tmp_path, tiny_model_dir, tiny_gguf, tiny_q8_gguf, which):
    import torch

    gguf = tiny_gguf if which == "f16" else tiny_q8_gguf
    art = run(gguf, tmp_path / "store")
    out = art.model_dir
    assert out.is_relative_to(art.path)  # materialised inside the artifact, not beside the source
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    assert not any(n.endswith(".bin") for n in names)
    assert art.outputs["source_sha256"] == sha256_file(gguf)  # keyed by the file's content
    assert run(gguf, tmp_path / "store").cached

    from safetensors import safe_open

    with safe_open(out / "model.safetensors", framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float32}

    # same network as the original fp32 model, up to the file's rounding
    tolerance = {"f16": 5e-3, "q8_0": 5e-2}[which]
    diff = (logits(out) - logits(tiny_model_dir)).abs().max().item()
    assert diff < tolerance, diff


@pytest.mark.slow
def test_embedded_smollm2_is_dequantized(tmp_path):
    """The embedded Q4_1 SmolLM2-135M (about 30 s): a real model's quantized weights, back to fp32."""
    import json

    art = basemodel.run(ModelConfig(), Store(tmp_path / "store"))
    out = art.model_dir
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (576, 30)
    assert (out / "model.safetensors").stat().st_size > 500e6  # 134.5M parameters in fp32
    assert "<|im_start|>" in (out / "chat_template.jinja").read_text()


def test_licence_is_read_from_the_model_card(tmp_path, tiny_model_dir):
    from edgetune.basemodel import _license_of

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    assert _license_of(model) is None
    (model / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n# card\n")
    assert _license_of(model) == "mit"
    # the hub's convention for a licence without an id: `other` plus its name
    (model / "README.md").write_text("---\nlicense: other\nlicense_name: llama3.2\n---\n# card\n")
    assert _license_of(model) == "llama3.2"
    (model / "README.md").write_text("# a card without metadata\nlicense: not front matter\n")
    assert _license_of(model) is None


def test_unreadable_card_metadata_is_a_warning_not_a_licence(tmp_path, tiny_model_dir, caplog):
    from edgetune.basemodel import _license_of

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "README.md").write_text("---\nlicense: [mit\n---\n# card\n")  # broken YAML
    with caplog.at_level("WARNING", logger="edgetune.basemodel"):
        assert _license_of(model) is None
    assert "has unreadable metadata" in caplog.text and str(model / "README.md") in caplog.text


def test_licence_is_read_from_a_gguf(smollm2_gguf):
    from edgetune.basemodel import _license_of

    assert _license_of(smollm2_gguf) == "apache-2.0"
