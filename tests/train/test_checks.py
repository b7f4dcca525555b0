"""The train stage's checks on a real tiny run: the tutorial's "loss not falling after epoch 1" warning, the
OOM fallback wired into the stage, and the SFTConfig the stage (and the GPU benchmark) trains with."""

from __future__ import annotations

import logging

import pytest
from edgetune import train
from edgetune.artifacts import Store
from edgetune.config import TrainConfig
from edgetune.train.callbacks import loss_check
from transformers import TrainerCallback

from .conftest import FAST


def _warnings(caplog, text):
    return [r.getMessage() for r in caplog.records
            if r.name == "edgetune.train" and r.levelno == logging.WARNING and text in r.getMessage()]


def test_flat_loss_warns_with_the_tutorial_checklist(inputs, tmp_path, caplog):
    """lr 1e-9 leaves the weights as they were: one epoch (4 steps) of a loss that does not fall."""
    base_art, data_art = inputs
    cfg = FAST.model_copy(update={"learning_rate": 1e-9, "max_steps": 4, "eval_items": 0})
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        art = train.run(cfg, base_art, data_art, Store(tmp_path / "store"), threads=1)
    (message,) = _warnings(caplog, "loss is not falling after the first epoch")
    for item in ("train.learning_rate=1e-09", "try 1e-4 or 5e-5", "chat template matches the model",
                 "pad token is set", "padding is not trained on"):
        assert item in message, item
    check = art.metrics["loss_check"]
    assert check["judged"] and not check["falling"] and check["steps"] == 4


@pytest.mark.parametrize("losses, judged, falling", [
    ([3.0, 2.9, 2.5, 2.2, 2.0, 1.9], True, True),
    ([3.0, 3.01, 2.99, 3.0, 3.02, 2.98], True, False),  # flat within 1%
    ([2.0, 2.2, 2.5, 3.0], True, False),  # rising
    ([3.0, 1.0, 0.5], False, None),  # too few steps to judge
])
def test_loss_check_judges_epoch_one_only(losses, judged, falling):
    history = [{"step": i + 1, "epoch": (i + 1) / len(losses), "loss": v} for i, v in enumerate(losses)]
    history += [{"step": len(losses) + 1, "epoch": 1.5, "loss": 99.0}, {"eval_loss": 5.0, "epoch": 1.0}]
    check = loss_check(history)
    assert check["judged"] is judged
    if judged:
        assert check["falling"] is falling and check["steps"] == len(losses)


class OutOfMemoryWhileBatched(TrainerCallback):
    """A CUDA OOM on the first step of any try with more than one example per device batch (the CPU has no
    CUDA memory to run out of; the error type and where it surfaces are the real ones)."""

    def on_step_begin(self, args, state, control, **kw):
        import torch

        if args.per_device_train_batch_size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test budget)")


def test_oom_falls_back_to_batch_one_and_records_it(inputs, tmp_path, caplog):
    base_art, data_art = inputs
    cfg = FAST.model_copy(update={"max_steps": 2, "eval_items": 0})
    store = Store(tmp_path / "store")
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        art = train.run(cfg, base_art, data_art, store, threads=1, callbacks=(OutOfMemoryWhileBatched(),))
    (message,) = _warnings(caplog, "CUDA out of memory")
    assert "train.batch_size -> 1 and train.grad_accum -> 8" in message
    assert art.metrics["oom_fallback"] == [message]
    assert art.metrics["steps"] == 2
    assert (art.metrics["batch_size"], art.metrics["grad_accum"]) == (1, 8)  # what it really trained with
    assert art.record["params"]["batch_size"] == 8  # the key and record stay those of the config asked for
    assert train.run(cfg, base_art, data_art, store, threads=1).cached


def test_sft_config_holds_the_stage_defaults(tmp_path):
    args = train.sft_config(TrainConfig(max_length=256), tmp_path, cuda=False, liger=False)
    assert (args.max_length, args.per_device_train_batch_size, args.learning_rate) == (256, 8, 2e-4)
    assert (args.bf16, args.gradient_checkpointing, args.use_cpu, args.use_liger_kernel) == (False, False, True, False)
    assert args.include_num_input_tokens_seen == "non_padding"
    assert (args.save_strategy, args.save_steps, args.eval_strategy) == ("steps", 50, "no")
    assert args.output_dir == str(tmp_path)

    args = train.sft_config(TrainConfig(gradient_checkpointing=True, save_steps=0, max_length=256), tmp_path,
                            cuda=False, liger=False, max_steps=3, eval_strategy="epoch")
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert (args.save_strategy, args.max_steps, args.eval_strategy) == ("no", 3, "epoch")


def test_the_cli_bar_shows_loss_and_tokens_per_second():
    from edgetune.cli.progress import format_fields

    assert format_fields({"loss": 2.41234, "tok/s": 1830.4}) == "loss=2.412  1,830 tok/s"
    assert format_fields({"loss": float("nan"), "tok/s": 0.0}) == "loss=–  0 tok/s"
    assert format_fields({"item": "sst2-3"}) == "item=sst2-3"


def test_heldout_exact_match_scores_batched_greedy_answers(tmp_path, tokenizer_dir):
    """Left-padded batches must answer as one-at-a-time greedy decoding does: references taken from the
    unbatched answers score 1.0, a wrong label scores 0. A varied tiny Llama (untied, wide init) gives real
    multi-token answers rather than a repeated token."""
    import torch
    from edgetune.train.heldout import HeldoutItem, answer_tokens, exact_match, task_items
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import make_tiny_llama

    model_dir = make_tiny_llama(tmp_path / "varied", tokenizer_dir, tie_embeddings=False, initializer_range=0.5)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [("Colour of grass?", "green"), ("Colour of the winter sky at night, far from any town?", "black"),
            ("Snow?", "white"), ("What colour is a ripe lemon in the sun?", "yellow"), ("Blood, colour of?", "red")]
    examples = [{"id": f"q{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                for i, (q, a) in enumerate(rows)]
    items = task_items(examples, tok, 16)
    assert [i.reference for i in items] == [a for _, a in rows]
    n_new = answer_tokens(items, tok)
    alone = []
    for item in items:
        out = model.generate(torch.tensor([item.prompt_ids]), max_new_tokens=n_new, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        alone.append(tok.decode(out[0, len(item.prompt_ids):], skip_special_tokens=True))
    assert len({len(i.prompt_ids) for i in items}) > 1  # the batch really is padded
    own = [HeldoutItem(i.id, i.prompt_ids, text) for i, text in zip(items, alone)]
    assert all(o.reference.strip() for o in own), alone
    result = exact_match(model.train(), tok, own, batch_size=4, max_new_tokens=n_new)
    assert result["outputs"] == alone and result["accuracy"] == 1.0 and result["n"] == 5
    assert model.training  # restored
    assert exact_match(model, tok, [HeldoutItem("x", items[0].prompt_ids, "no such label")])["accuracy"] == 0.0
