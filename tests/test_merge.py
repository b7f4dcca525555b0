"""The merge stage on a real adapter trained on the tiny Llama: the fold changes no logit (checked by the stage
and again here, independently), the merged folder is complete, and an adapter from another model is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgetune import basemodel, data, merge, train
from edgetune.artifacts import Artifact, Store
from edgetune.config import DataConfig, ModelConfig, TrainConfig
from edgetune.constants import ARTIFACT_FILE
from edgetune.errors import ExportError
from edgetune.outputs import Adapter

CFG = TrainConfig(method="lora", r=8, alpha=16, max_steps=6, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0)
PROBES = ["Colour of grass? (#3)", "An unrelated sentence about boats, rivers and the sea."]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("merge") / "store")


@pytest.fixture(scope="module")
def data_art(store, colour_jsonl):
    return data.run(DataConfig(source=str(colour_jsonl), heldout_size=10, train_size=32), store)


@pytest.fixture(scope="module")
def base(store, tiny_model_dir):
    return basemodel.run(ModelConfig(source=str(tiny_model_dir)), store)


@pytest.fixture(scope="module")
def trained(store, base, data_art):
    return train.run(CFG, base, data_art, store, threads=1)


@pytest.fixture(scope="module")
def merged(store, base, trained):
    return merge.run(base, trained, store)


def probe_ids(model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    chat = tok.apply_chat_template([{"role": "user", "content": PROBES[0]}], tokenize=False,
                                   add_generation_prompt=True)
    return [tok(text, return_tensors="pt").input_ids for text in [chat, *PROBES]]


def all_logits(model, ids_list):
    import torch

    with torch.inference_mode():
        return [model(ids).logits for ids in ids_list]


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def test_stage_records_the_logit_check(merged):
    assert not merged.cached
    assert 0 <= merged.metrics["max_logit_diff"] <= merge.MAX_LOGIT_DIFF
    assert merged.record["params"] == {"dtype": "float32", "max_logit_diff": merge.MAX_LOGIT_DIFF}


def test_merged_logits_equal_the_adapter_model(merged, base, trained):
    """Load the adapter model and the merged folder separately and compare them on fresh inputs."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir = base.model_dir
    ids = probe_ids(base_dir)
    plain = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    base_logits = all_logits(plain, ids)
    adapted = PeftModel.from_pretrained(plain, trained.file("adapter")).eval()
    adapter_logits = all_logits(adapted, ids)
    folded = AutoModelForCausalLM.from_pretrained(merged.file("model_dir"), dtype=torch.float32).eval()
    merged_logits = all_logits(folded, ids)

    assert max_diff(merged_logits, adapter_logits) < 1e-3
    # and the adapter is really in there: the merged model is not the base model
    assert max_diff(merged_logits, base_logits) > 1e-2


def test_merged_folder_is_a_complete_model(merged, base):
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    out = merged.file("model_dir")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors", "pytorch_model.bin"}
    with safe_open(out / "model.safetensors", framework="pt") as fh:
        keys = list(fh.keys())
        assert not [k for k in keys if "lora" in k]
        assert {fh.get_tensor(k).dtype for k in keys} == {torch.float32}
    base_dir = base.model_dir
    assert (out / "chat_template.jinja").read_text() == (base_dir / "chat_template.jinja").read_text()
    tok = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "Colour of snow?"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        AutoTokenizer.from_pretrained(base_dir).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 64


def test_second_call_is_cached(merged, store, base, trained):
    again = merge.run(base, trained, store)
    assert again.cached and (again.key, again.path) == (merged.key, merged.path)


# --- adapters that do not fit the base --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def narrow_trained(tmp_path_factory, tokenizer_dir, data_art):
    """A real adapter trained on a hidden-32 Llama (same tokenizer and module names as the tiny one)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("narrow")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    store = Store(root / "store")
    narrow_base = basemodel.run(ModelConfig(source=str(root / "model")), store)
    return train.run(CFG.model_copy(update={"max_steps": 1}), narrow_base, data_art, store, threads=1)


def assert_nothing_published(store_dir: Path) -> None:
    merge_dir = store_dir / merge.KIND
    assert not merge_dir.exists() or not any(merge_dir.iterdir()), list(merge_dir.iterdir())


def test_adapter_from_another_model_is_refused(tmp_path, base, narrow_trained):
    store_dir = tmp_path / "store"
    with pytest.raises(ExportError) as info:
        merge.run(base, narrow_trained, Store(store_dir))
    err = info.value
    assert "does not fit base model" in err.message
    assert "size mismatch" in err.message and "torch.Size([8, 32])" in err.message
    assert "retrain" in err.hint
    assert isinstance(err.__cause__, RuntimeError)
    assert_nothing_published(store_dir)


def test_adapter_for_absent_modules_is_refused(tmp_path, base, trained):
    """An adapter whose config names modules this base lacks (a folder edited or from another family)."""
    copy = Path(shutil.copytree(trained.path, tmp_path / "foreign-adapter"))
    config_path = copy / trained.outputs["adapter"] / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = ["qkv_proj", "dense"]
    config_path.write_text(json.dumps(config))
    record = json.loads((copy / ARTIFACT_FILE).read_text())
    foreign = Adapter.of(Artifact("train", "f" * 64, copy, record))

    store_dir = tmp_path / "store"
    with pytest.raises(ExportError, match="does not fit base model") as info:
        merge.run(base, foreign, Store(store_dir))
    assert isinstance(info.value.__cause__, ValueError)
    assert_nothing_published(store_dir)
