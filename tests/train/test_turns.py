"""Multi-turn chat trains on every assistant turn, and on nothing else (train/turns.py), on the embedded SmolLM2's
own chat template; single-turn examples keep TRL's prompt/completion tokenisation token for token."""

from __future__ import annotations

import pytest
from edgetune.errors import DataError
from edgetune.train.args import sft_config
from edgetune.train.turns import IGNORE, tokenise, training_rows

from .conftest import FAST

CHAT = [
    {"role": "system", "content": "You name colours."},
    {"role": "user", "content": "Colour of snow?"},
    {"role": "assistant", "content": "white"},
    {"role": "user", "content": "And of grass?"},
    {"role": "assistant", "content": "green, mostly"},
    {"role": "user", "content": "And the sky at noon?"},
    {"role": "assistant", "content": "blue"},
]
SINGLE = [{"id": str(k), "messages": [{"role": "user", "content": f"Colour number {k}?"},
                                      {"role": "assistant", "content": c}]}
          for k, c in enumerate(["red", "dark blue", "a pale yellow"])]


def _spans(labels: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for k, label in enumerate([*labels, IGNORE]):
        if label != IGNORE and start is None:
            start = k
        elif label == IGNORE and start is not None:
            spans.append((start, k))
            start = None
    return spans


def test_every_assistant_turn_is_labelled_and_nothing_else(tokenizer):
    row = tokenise(tokenizer, CHAT)
    ids, labels = row["input_ids"], row["labels"]
    assert ids == tokenizer.apply_chat_template(CHAT, tokenize=True)["input_ids"]  # the template's own rendering
    spans = _spans(labels)
    answers = [m["content"] for m in CHAT if m["role"] == "assistant"]
    assert len(spans) == len(answers)  # one labelled run per assistant turn
    for (start, end), answer in zip(spans, answers):
        assert labels[start:end] == ids[start:end]
        # the answer and the end of its turn, no part of the user's message or the next turn's header
        assert tokenizer.decode(ids[start:end]) == answer + "<|im_end|>\n"
        assert tokenizer.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    unlabelled = tokenizer.decode([i for i, lab in zip(ids, labels) if lab == IGNORE])
    for m in CHAT:
        if m["role"] != "assistant":
            assert m["content"] in unlabelled


def test_single_turn_rows_stay_prompt_completion_and_match_trls_labels(tokenizer, tiny_model_dir, tmp_path):
    """The default build's shape: TRL's own tokenisation; and `tokenise` of the same example gives TRL's labels,
    so a data set mixing single- and multi-turn examples trains each single-turn one exactly as before."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    rows = training_rows(tokenizer, SINGLE)
    assert rows == [{"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]} for ex in SINGLE]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cfg = FAST.model_copy(update={"save_steps": 0, "max_length": 128})

    def prepared(data):
        trainer = SFTTrainer(model=model, args=sft_config(cfg, tmp_path / "out", cuda=False, liger=False),
                             processing_class=tokenizer, train_dataset=Dataset.from_list(data))
        return [(r["input_ids"], r["labels"]) for r in trainer.train_dataset]

    by_trl = prepared(rows)
    ours = prepared([tokenise(tokenizer, ex["messages"]) for ex in SINGLE])
    assert ours == by_trl
    assert all(any(lab != IGNORE for lab in labels) for _, labels in by_trl)


def test_a_multi_turn_set_is_tokenised_with_every_turn(tokenizer):
    examples = [{"id": "a", "messages": CHAT}, *SINGLE]
    rows = training_rows(tokenizer, examples)
    assert all(set(r) == {"input_ids", "labels"} for r in rows)
    assert len(_spans(rows[0]["labels"])) == 3


def test_a_template_that_hides_the_turns_is_refused(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}"
    with pytest.raises(DataError, match="no assistant turn"):
        tokenise(tok, CHAT[:3])


def test_the_stage_trains_a_multi_turn_set(tmp_path, tiny_model_dir):
    """sharegpt conversations through the data and train stages: the loss is finite and every example kept (the
    held-out loss and greedy check work on conversations too)."""
    import json

    from edgetune import basemodel, data, train
    from edgetune.artifacts import Store
    from edgetune.config import DataConfig, ModelConfig

    rows = [{"conversations": [{"from": "human", "value": f"Colour {i}?"}, {"from": "gpt", "value": "red"},
                               {"from": "human", "value": "Again?"}, {"from": "gpt", "value": f"blue {i % 3}"}]}
            for i in range(42)]
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = Store(tmp_path / "store")
    data_art = data.run(DataConfig(source=str(src), heldout_size=10, train_size=32), store)
    base_art = basemodel.run(ModelConfig(source=str(tiny_model_dir)), store)
    cfg = FAST.model_copy(update={"max_steps": 3, "save_steps": 0})
    trained = train.run(cfg, base_art, data_art, store, threads=1)
    m = trained.training
    assert m.steps == 3 and m.n_examples == 32 and m.loss_last == m.loss_last  # finite, not NaN
    assert m.eval_loss_last is not None
