"""The train stage's CUDA path (opt-in, `-m gpu`, run through the device tool): each adapter kind on an NF4 or
bf16 base with gradient checkpointing, per-epoch held-out evaluation and the fp32 merge; and an interrupted
run resumed. A random-weight model of SmolLM2-135M's shape with SmolLM2's tokenizer (from `.gpu-assets/` at the
repo root where the machine cannot build it, as on the GPU host)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_SHAPE = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                 "num_key_value_heads": 3, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def gpu_inputs(tmp_path_factory, request):
    from edgetune import basemodel, data
    from edgetune.artifacts import Store
    from edgetune.config import DataConfig, ModelConfig
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    assets = ROOT / ".gpu-assets"
    tok_dir = assets if (assets / "tokenizer.json").is_file() else request.getfixturevalue("tokenizer_dir")
    work = tmp_path_factory.mktemp("gpu-train")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SMOLLM2_SHAPE))
    model.save_pretrained(work / "base")
    tok.save_pretrained(work / "base")
    colours = ["red", "green", "blue", "yellow", "black", "white"]
    rows = [{"input": f"What colour is item {i}?", "output": colours[i % len(colours)]} for i in range(120)]
    (work / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = Store(work / "inputs")
    d = data.run(DataConfig(source=str(work / "data.jsonl"), heldout_size=20, train_size=64), store)
    b = basemodel.run(ModelConfig(source=str(work / "base")), store)
    return b, d


@pytest.mark.parametrize("method, adapter", [("qlora", "lora"), ("qlora", "dora"), ("qlora", "ia3"),
                                             ("lora", "rslora")])
def test_cuda_adapter_trains_evaluates_each_epoch_and_merges(gpu_inputs, tmp_path, method, adapter):
    from edgetune import merge, train
    from edgetune.artifacts import Store
    from edgetune.config import TrainConfig

    b, d = gpu_inputs
    store = Store(tmp_path / "store")
    cfg = TrainConfig(method=method, adapter=adapter, epochs=2, batch_size=8, warmup_ratio=0.0, eval_items=8,
                      learning_rate=1e-2 if adapter == "ia3" else 1e-3, save_steps=4)
    art = train.run(cfg, b, d, store)
    m = art.metrics
    print(adapter, method, json.dumps({k: m[k] for k in ("steps", "s_per_step", "tokens_per_s", "peak_gpu_gib",
                                                         "loss_first", "loss_last", "trainable_share")}))
    assert (m["device"], m["method"], m["adapter"], m["gradient_checkpointing"]) == ("cuda", method, adapter, True)
    assert m["steps"] == 16 and m["tokens"] > 16 * 8 and m["tokens_per_s"] > 0
    assert [(e["epoch"], e["step"]) for e in m["epochs"]] == [(1.0, 8), (2.0, 16)], m["epochs"]
    for e in m["epochs"]:
        assert math.isfinite(e["eval_loss"]) and e["n"] == 8 and 0 <= e["accuracy"] <= 1, e
    assert m["loss_check"]["judged"] and m["loss_last"] < m["loss_first"]
    assert not (store.root / "train" / f".{art.key[:16]}.checkpoints").exists()
    merged = merge.run(b, art, store)  # fp32 merge on the full-precision base, logit-checked
    assert merged.metrics["max_logit_diff"] < merge.MAX_LOGIT_DIFF


def test_cuda_run_resumes_after_an_interrupt(gpu_inputs, tmp_path):
    from edgetune import train
    from edgetune.artifacts import Store
    from edgetune.config import TrainConfig
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 7:
                raise KeyboardInterrupt

    b, d = gpu_inputs
    cfg = TrainConfig(epochs=2, batch_size=8, learning_rate=1e-3, warmup_ratio=0.0, eval_items=4, save_steps=3)
    store = Store(tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, b, d, store, callbacks=(Interrupt(),))
    art = train.run(cfg, b, d, store)
    assert art.metrics["resumed_from_step"] == 6 and art.metrics["steps"] == 16
    steps = [json.loads(line)["step"] for line in art.file("log").read_text().splitlines()]
    assert steps == list(range(1, 17))
