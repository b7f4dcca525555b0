"""A base model without a chat template: refused with a hint naming train.chat_template_fallback; with the
fallback set it trains (with a warning), and the merged model's tokenizer carries the same template, so the
GGUF converted from it renders prompts as training did."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from edgetune import basemodel, merge, train
from edgetune.artifacts import Store
from edgetune.config import ModelConfig, TrainConfig, load_config
from edgetune.errors import TrainError
from edgetune import chat_templates as templates

from .conftest import FAST

MESSAGES = [{"role": "user", "content": "Colour of snow?"}, {"role": "assistant", "content": "white"}]


@pytest.fixture(scope="module")
def bare_base(tmp_path_factory, tiny_model_dir):
    """The tiny Llama with its chat template removed, as a base artifact."""
    src = tmp_path_factory.mktemp("bare-llama") / "model"
    shutil.copytree(tiny_model_dir, src)
    (src / "chat_template.jinja").unlink(missing_ok=True)
    config_path = src / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    store = Store(tmp_path_factory.mktemp("bare-store") / "store")
    return basemodel.run(ModelConfig(source=str(src)), store)


def test_no_template_and_no_fallback_is_refused_with_a_hint(bare_base, inputs, tmp_path):
    from transformers import AutoTokenizer

    assert not AutoTokenizer.from_pretrained(bare_base.model_dir).chat_template  # the fixture lacks one
    store = Store(tmp_path / "store")
    with pytest.raises(TrainError) as exc:
        train.run(FAST.model_copy(update={"max_steps": 2}), bare_base, inputs[1], store, threads=1)
    assert "has a tokenizer without a chat template" in exc.value.message
    assert "train.chat_template_fallback" in exc.value.hint
    assert not list(store.root.glob("train/*/artifact.json"))  # nothing half-written


def test_chatml_fallback_trains_and_the_merged_model_carries_it(bare_base, inputs, tmp_path, caplog, llama_tools):
    from edgetune.export.convert import convert_to_gguf
    from edgetune.export.inspect import field_value, read_gguf
    from transformers import AutoTokenizer

    store = Store(tmp_path / "store")
    cfg = FAST.model_copy(update={"max_steps": 2, "eval_items": 2, "chat_template_fallback": "chatml"})
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        trained = train.run(cfg, bare_base, inputs[1], store, threads=1)
    warning = next(r.getMessage() for r in caplog.records if "has no chat template" in r.getMessage())
    assert str(bare_base.model_dir) in warning and "fallback chatml" in warning
    assert trained.metrics["steps"] == 2 and trained.metrics["chat_template"] == "fallback:chatml"
    assert trained.file("chat_template").read_text() == templates.CHATML

    merged = merge.run(bare_base, trained, store)
    out = merged.path / merged.outputs["model_dir"]
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == templates.CHATML
    assert tok.apply_chat_template(MESSAGES, tokenize=False) == (
        "<|im_start|>user\nColour of snow?<|im_end|>\n<|im_start|>assistant\nwhite<|im_end|>\n")
    assert tok.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n")
    # llama.cpp's converter carries it into the GGUF (convert_to_gguf also verifies this itself)
    gguf = convert_to_gguf(out, tmp_path / "merged.gguf", llama_tools)
    assert field_value(read_gguf(gguf), "tokenizer.chat_template") == templates.CHATML


def test_a_model_with_its_own_template_ignores_the_fallback(inputs, tmp_path):
    base_art, data_art = inputs
    cfg = FAST.model_copy(update={"max_steps": 1, "eval_items": 0, "chat_template_fallback": "chatml"})
    trained = train.run(cfg, base_art, data_art, Store(tmp_path / "store"), threads=1)
    assert trained.metrics["chat_template"] == "model" and "chat_template" not in trained.outputs


def test_fallback_file_enters_the_cache_key(inputs, tmp_path):
    base_art, data_art = inputs
    path = tmp_path / "mine.jinja"
    path.write_text(templates.CHATML)
    cfg = FAST.model_copy(update={"chat_template_fallback": str(path)})
    key = train.stage.cache_key(cfg, base_art, data_art)
    path.write_text(templates.CHATML.replace("<|im_end|>", "</s>"))
    assert train.stage.cache_key(cfg, base_art, data_art) != key
    # unset, the new settings leave the keys of earlier runs as they were
    assert train.stage._key_params(FAST, "lora").keys().isdisjoint({"packing", "chat_template_fallback"})
    path.unlink()
    with pytest.raises(TrainError, match="cannot read"):
        train.stage.cache_key(cfg, base_art, data_art)


def test_bad_fallback_names_are_config_errors(tmp_path):
    from edgetune.errors import ConfigError

    path = tmp_path / "edgetune.yaml"
    path.write_text("train: {chat_template_fallback: llama3}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "neither a built-in template (chatml) nor a .jinja file" in exc.value.message
    assert TrainConfig(chat_template_fallback="x/t.jinja").chat_template_fallback == "x/t.jinja"
