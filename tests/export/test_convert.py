"""convert_to_gguf on the tiny random Llama (SmolLM2's real tokenizer) through llama.cpp's own converter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgetune.errors import ExportError
from edgetune.export.convert import convert_to_gguf, verify_conversion
from edgetune.export.inspect import field_value, read_gguf
from tests.helpers import generated_tokens

METADATA = {
    "general.name": "edgetune-tiny",
    "general.description": "2-layer random Llama for tests",
    "general.license.name": "apache-2.0",
    "general.source.url": "https://example.invalid/tiny-llama",
    "general.tags": ["edgetune", "test"],
}
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_model_dir, llama_tools) -> Path:
    out_dir = tmp_path_factory.mktemp("convert")
    return convert_to_gguf(tiny_model_dir, out_dir / "tiny.gguf", llama_tools, metadata=METADATA)


def copy_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, dst / name)
    return dst


def test_convert_leaves_only_the_gguf(converted):
    assert converted.is_file()
    assert [p.name for p in converted.parent.iterdir()] == ["tiny.gguf"]


def test_convert_keeps_metadata_template_and_eos(converted, tokenizer):
    reader = read_gguf(converted)
    for key, value in METADATA.items():
        assert field_value(reader, key) == value
    assert field_value(reader, "general.file_type") == 1  # MOSTLY_F16
    assert tokenizer.chat_template
    assert field_value(reader, "tokenizer.chat_template") == tokenizer.chat_template
    assert field_value(reader, "tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id


def test_converted_model_loads_and_generates(converted):
    assert generated_tokens(converted) > 0


def test_missing_model_dir(tmp_path, llama_tools):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    missing = tmp_path / "no-such-model"
    with pytest.raises(ExportError, match="does not exist") as err:
        convert_to_gguf(missing, out_dir / "x.gguf", llama_tools)
    assert str(missing) in str(err.value)
    assert err.value.hint
    assert list(out_dir.iterdir()) == []


def test_dir_without_weights(tmp_path, tiny_model_dir, llama_tools):
    model = copy_without_weights(tiny_model_dir, tmp_path / "no-weights")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ExportError, match="no \\*.safetensors weights"):
        convert_to_gguf(model, out_dir / "x.gguf", llama_tools)
    assert list(out_dir.iterdir()) == []


def test_dir_without_config(tmp_path, llama_tools):
    model = tmp_path / "empty"
    model.mkdir()
    with pytest.raises(ExportError, match="no config.json"):
        convert_to_gguf(model, tmp_path / "x.gguf", llama_tools)


def test_unsupported_architecture_names_it_and_the_revision(tmp_path, tiny_model_dir, llama_tools):
    model = copy_without_weights(tiny_model_dir, tmp_path / "weird-arch")
    (model / "model.safetensors").symlink_to(tiny_model_dir / "model.safetensors")
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ExportError, match="NoSuchModelForCausalLM") as err:
        convert_to_gguf(model, out_dir / "x.gguf", llama_tools)
    assert llama_tools.revision[:12] in str(err.value)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"general.license": "apache-2.0"}, "general.license"),  # the converter would drop it silently
        ({"edgetune.provenance": "{}"}, "cannot be set at conversion"),
        ({"general.tags": "not-a-list"}, "unsupported value"),
        ({"general.base_models": [{"name": "x", "licence": "y"}]}, "unsupported value"),
    ],
)
def test_rejects_metadata_the_converter_would_ignore(tmp_path, tiny_model_dir, llama_tools, metadata, match):
    with pytest.raises(ExportError, match=match):
        convert_to_gguf(tiny_model_dir, tmp_path / "x.gguf", llama_tools, metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_rejects_unknown_outtype(tmp_path, tiny_model_dir, llama_tools):
    with pytest.raises(ExportError, match="outtype"):
        convert_to_gguf(tiny_model_dir, tmp_path / "x.gguf", llama_tools, outtype="q4_0")


def test_verify_catches_a_changed_chat_template(tmp_path, tiny_model_dir, tiny_gguf):
    model = copy_without_weights(tiny_model_dir, tmp_path / "other-template")
    (model / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    with pytest.raises(ExportError, match="tokenizer.chat_template"):
        verify_conversion(tiny_gguf, model)


def test_verify_catches_a_different_eos(tmp_path, tiny_model_dir, tiny_gguf):
    model = copy_without_weights(tiny_model_dir, tmp_path / "other-eos")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["eos_token"] = "<|endoftext|>"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="EOS token id"):
        verify_conversion(tiny_gguf, model)
