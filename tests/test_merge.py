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
    # the tiny base is saved in fp32, so its merge is too (the base's dtype)
    assert {k: merged.record["params"][k] for k in ("dtype", "max_logit_diff")} == \
        {"dtype": "float32", "max_logit_diff": merge.MAX_LOGIT_DIFF}
    assert merged.dtype == "float32"


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


# --- the base's dtype, the model card, `edgetune export` ---------------------------------------------------------


@pytest.fixture(scope="module")
def bf16_base(tmp_path_factory, tiny_model_dir, store):
    """The tiny Llama saved in bf16 (as most hub models are), with a model card naming its licence."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("bf16") / "Tiny-Llama-2M"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    (out / "README.md").write_text("---\nlicense: mit\n---\n# Tiny\n")
    return basemodel.run(ModelConfig(source=str(out)), store)


@pytest.fixture(scope="module")
def bf16_trained(store, bf16_base, data_art):
    return train.run(CFG, bf16_base, data_art, store, threads=1)


def weight_dtypes(model_dir: Path) -> set:
    from safetensors import safe_open

    with safe_open(model_dir / "model.safetensors", framework="pt") as fh:
        return {fh.get_tensor(k).dtype for k in fh.keys()}


def test_bf16_base_gives_a_bf16_merge_with_a_card(store, bf16_base, bf16_trained):
    import torch
    from huggingface_hub import ModelCard

    from edgetune.model_card import CardInfo

    assert bf16_base.license == "mit"  # read with huggingface_hub.ModelCard
    card = CardInfo(base_model="org/Tiny-Llama-2M", datasets=("org/colours",), license=bf16_base.license,
                    tags=("edgetune", "fine-tuned"), title="Tiny-2M-colours")
    merged = merge.run(bf16_base, bf16_trained, store, card=card)
    out = merged.model_dir
    assert merged.dtype == "bfloat16" and weight_dtypes(out) == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    data = ModelCard.load(out / "README.md").data
    assert (data.base_model, data.base_model_relation, data.datasets, data.license) == \
        ("org/Tiny-Llama-2M", "finetune", ["org/colours"], "mit")
    assert {"edgetune", "lora"} <= set(data.tags)
    assert (out / "chat_template.jinja").read_text() == (bf16_base.model_dir / "chat_template.jinja").read_text()
    fp32 = merge.run(bf16_base, bf16_trained, store, dtype="float32", card=card)  # the config flag
    assert fp32.key != merged.key and weight_dtypes(fp32.model_dir) == {torch.float32}
    # bf16 holds half the bytes: the point of saving in the base's dtype
    assert (out / "model.safetensors").stat().st_size < 0.6 * (fp32.model_dir / "model.safetensors").stat().st_size


def test_full_precision_gives_back_the_fp32_merge(store, bf16_base, bf16_trained):
    """GGUFs are converted from this folder: the fp32 merge, equal to the adapter model, not the bf16 copy."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = merge.run(bf16_base, bf16_trained, store)
    ids = probe_ids(bf16_base.model_dir)
    with merge.full_precision(merged, bf16_base, bf16_trained) as folder:
        assert folder != merged.model_dir and weight_dtypes(folder) == {torch.float32}
        assert (folder / "chat_template.jinja").is_file() and (folder / "README.md").is_file()
        fp32_logits = all_logits(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), ids)
    assert not folder.exists()
    plain = AutoModelForCausalLM.from_pretrained(bf16_base.model_dir, dtype=torch.float32).eval()
    adapted = PeftModel.from_pretrained(plain, bf16_trained.adapter_dir).eval()
    assert max_diff(fp32_logits, all_logits(adapted, ids)) < merge.MAX_LOGIT_DIFF
    with merge.full_precision(merge.run(bf16_base, bf16_trained, store, dtype="float32"), bf16_base,
                              bf16_trained) as same:
        assert same.name == "model"  # already fp32: the folder itself, nothing redone


REPORT = {"title": "t", "builds": [
    {"name": "gpu", "kind": "GPU build (HF fp32, merged)", "accuracy": 0.8, "size_bytes": 8_000_000},
    {"name": "Q4_0", "kind": "GGUF", "accuracy": 0.75, "size_bytes": 2_000_000, "delta_vs_gpu": -0.05},
    {"name": "Q8_0", "kind": "GGUF", "accuracy": 0.8, "size_bytes": 3_000_000, "delta_vs_gpu": 0.0}],
    "recommendation": {"quant": "Q8_0", "reason": "the smallest not-worse build"}}


@pytest.fixture
def run_dir(tmp_path, store, bf16_base, bf16_trained, tiny_bundle):
    """A run folder as `edgetune build` leaves it: run.json naming the stage artifacts, and report.json."""
    from edgetune.model_card import CardInfo

    merged = merge.run(bf16_base, bf16_trained, store, card=CardInfo(
        base_model="org/Tiny-Llama-2M", datasets=("org/colours",), license="mit", title="Tiny-2M-colours"))
    run = tmp_path / "runs" / "rpi5-8gb"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"stages": {"merge": str(merged.path), "train": str(bf16_trained.path),
                                                         "bundle": str(tiny_bundle.path)}}))
    (run / "report.json").write_text(json.dumps(REPORT))
    return run


def test_export_writes_a_hub_ready_folder(run_dir, tmp_path, monkeypatch, bf16_base):
    import torch
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.clirun import run_edgetune

    import socket

    attempts: list[object] = []

    def no_network(self, address):  # the export is local: any connection attempt fails the test
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    to = tmp_path / "share"
    with monkeypatch.context() as m:
        m.setattr(socket.socket, "connect", no_network)
        m.setattr(socket.socket, "connect_ex", no_network)
        m.setattr(socket, "create_connection", lambda address, *a, **k: no_network(None, address))
        result = run_edgetune(monkeypatch, "--json", "export", run_dir, "--to", to)
    assert result.exit_code == 0, result.stderr
    assert attempts == []
    shared = json.loads(result.stdout)
    files = set(shared["files"])
    assert {"README.md", "config.json", "model.safetensors", "chat_template.jinja", "tokenizer.json",
            "tiny-Q4_0.gguf", "tiny-Q4_0.Modelfile", "tiny-Q8_0.gguf", "tiny-Q8_0.Modelfile",
            "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/README.md"} <= files
    assert files == {p.relative_to(to).as_posix() for p in to.rglob("*") if p.is_file()}
    assert shared["ggufs"] == {"Q4_0": "tiny-Q4_0.gguf", "Q8_0": "tiny-Q8_0.gguf"}
    card = ModelCard.load(to / "README.md")
    assert (card.data.base_model, card.data.base_model_relation, card.data.license) == \
        ("org/Tiny-Llama-2M", "finetune", "mit")
    assert "| Q4_0 (GGUF) | `tiny-Q4_0.gguf` | 2.0 MB | 75.0% | -5.0 pts |" in card.text
    assert "Recommendation: Q8_0 (the smallest not-worse build)" in card.text
    adapter_card = ModelCard.load(to / "adapter" / "README.md").data
    assert (adapter_card.base_model_relation, adapter_card.library_name) == ("adapter", "peft")
    # it loads as the hub would serve it: the merged model at the root, the adapter in its subfolder
    model = AutoModelForCausalLM.from_pretrained(to, dtype=torch.float32)
    assert next(model.parameters()).shape[-1] == 64
    base = AutoModelForCausalLM.from_pretrained(bf16_base.model_dir, dtype=torch.float32)
    PeftModel.from_pretrained(base, to / "adapter")
    gguf_modelfile = (to / "tiny-Q4_0.Modelfile").read_text()
    assert "FROM ./tiny-Q4_0.gguf" in gguf_modelfile and 'TEMPLATE """' in gguf_modelfile


def test_export_refuses_a_non_empty_folder_unless_forced(run_dir, tmp_path, monkeypatch):
    from tests.clirun import run_edgetune

    to = tmp_path / "share"
    to.mkdir()
    (to / "keep.txt").write_text("mine")
    result = run_edgetune(monkeypatch, "export", run_dir, "--to", to)
    assert result.exit_code == 6 and "is not empty" in result.stderr and "--force" in result.stderr
    assert [p.name for p in to.iterdir()] == ["keep.txt"]
    result = run_edgetune(monkeypatch, "export", run_dir, "--to", to, "--force")
    assert result.exit_code == 0, result.stderr
    assert not (to / "keep.txt").exists() and (to / "README.md").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".share.")]  # no temp folder left
