"""train.packing: TRL's best-fit-decreasing packing, padding-free. A packed batch must give the loss of the same
examples unpacked: position_ids restart at each example and transformers turns them into a block-diagonal mask
(sdpa and eager, on CPU), so no example attends to another. The same batch with one causal mask over the whole
row (what a wrong packing does) gives another loss: the comparison can fail."""

from __future__ import annotations

import math

import pytest
from edgetune import train
from edgetune.artifacts import Store
from edgetune.train.args import sft_config
from edgetune.train.turns import training_rows

from tests.conftest import make_tiny_llama

from .conftest import FAST

# prompts and answers of different lengths, so the packed row holds examples of different sizes
EXAMPLES = [{"messages": [{"role": "user", "content": "Colour of " + "very " * n + "old snow?"},
                          {"role": "assistant", "content": " ".join(["white"] * (n % 4 + 1))}]}
            for n in (0, 9, 3, 14, 6, 1)]


@pytest.fixture(scope="module")
def decisive_model_dir(tmp_path_factory, tokenizer_dir):
    # a wider initializer than the default makes the logits far from flat, so attention leaks move the loss
    return make_tiny_llama(tmp_path_factory.mktemp("packing-llama"), tokenizer_dir, tie_embeddings=False,
                           initializer_range=0.2)


def _first_batch_loss(model_dir, tmp_path, *, packing: bool, attn: str):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    cfg = FAST.model_copy(update={"packing": packing, "batch_size": len(EXAMPLES), "save_steps": 0, "max_length": 256})
    args = sft_config(cfg, tmp_path / f"out-{packing}-{attn}", cuda=False, liger=False)
    trainer = SFTTrainer(model=model, args=args, processing_class=tok,
                         train_dataset=Dataset.from_list(training_rows(tok, EXAMPLES)))
    batch = next(iter(trainer.get_train_dataloader()))  # every example in one batch: the mean is order-free
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch)).item()
    return loss, batch, model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_batch_has_the_loss_of_its_examples_apart(decisive_model_dir, tmp_path, attn):
    import torch

    unpacked, plain, _ = _first_batch_loss(decisive_model_dir, tmp_path, packing=False, attn=attn)
    packed, batch, model = _first_batch_loss(decisive_model_dir, tmp_path, packing=True, attn=attn)
    # really packed: one row, no attention mask, position_ids restarting at each of the six examples
    assert plain["input_ids"].shape[0] == len(EXAMPLES) and "attention_mask" in plain
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    assert int((batch["position_ids"][0] == 0).sum()) == len(EXAMPLES)
    # the same completion tokens are scored in both
    assert int((batch["labels"] != -100).sum()) == int((plain["labels"] != -100).sum())
    assert abs(packed - unpacked) < 1e-4, (packed, unpacked)

    # the check has teeth: one causal mask over the whole row lets examples see each other and moves the loss
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], labels=batch["labels"],
                      attention_mask=torch.ones_like(batch["input_ids"])).loss.item()
    assert abs(leaky - unpacked) > 1e-2, (leaky, unpacked)


def test_the_stage_trains_packed(inputs, tmp_path):
    base_art, data_art = inputs
    cfg = FAST.model_copy(update={"packing": True, "max_steps": 2, "eval_items": 0})
    trained = train.run(cfg, base_art, data_art, Store(tmp_path / "store"), threads=1)
    assert trained.metrics["packing"] is True and trained.metrics["steps"] == 2
    assert math.isfinite(trained.metrics["loss_last"]) and trained.metrics["tokens"] > 0
    assert train.stage.cache_key(cfg, base_art, data_art) != train.stage.cache_key(FAST.model_copy(
        update={"max_steps": 2, "eval_items": 0}), base_art, data_art)
