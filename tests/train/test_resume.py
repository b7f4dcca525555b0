"""Interruption and resumption for real: a training run stopped by a Ctrl-C (KeyboardInterrupt from a callback)
leaves its checkpoints beside the store; the rerun of the same key resumes from the newest, reports progress
from there, ends where an uninterrupted run ends, and removes the checkpoints once the artifact is committed."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from edgetune import train
from edgetune.artifacts import Store
from edgetune.train import checkpoints
from transformers import TrainerCallback

from .conftest import FAST

CFG = FAST.model_copy(update={"max_steps": 6, "save_steps": 2, "eval_items": 2})


class Interrupt(TrainerCallback):
    """A Ctrl-C at the end of optimizer step `at` (before that step's checkpoint would be written)."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise KeyboardInterrupt(f"stopped at step {self.at}")


class Recorder:
    """A Progress that keeps every task's total and advances."""

    def __init__(self):
        self.tasks: list[dict] = []

    @contextmanager
    def task(self, description, total):
        rec = {"description": description, "total": total, "advances": []}
        self.tasks.append(rec)

        class _Task:
            def advance(self, n=1, **fields):
                rec["advances"].append((n, fields))

        yield _Task()


def _rows(artifact, name):
    return [json.loads(line) for line in artifact.file(name).read_text().splitlines()]


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(inputs, tmp_path):
    import torch
    from safetensors.torch import load_file

    base_art, data_art = inputs
    whole = train.run(CFG, base_art, data_art, Store(tmp_path / "whole"), threads=1)

    store = Store(tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):
        train.run(CFG, base_art, data_art, store, threads=1, callbacks=(Interrupt(3),))
    assert store.lookup(train.KIND, whole.key) is None  # nothing half-written was published
    ckpt_dir = checkpoints.checkpoint_dir(store, train.KIND, whole.key)
    assert checkpoints.latest(ckpt_dir).name == "checkpoint-2"
    assert [p.name for p in (store.root / train.KIND).iterdir()] == [ckpt_dir.name]  # no temp build folder

    progress = Recorder()
    resumed = train.run(CFG, base_art, data_art, store, threads=1, progress=progress)
    assert resumed.key == whole.key and not resumed.cached
    assert resumed.metrics["resumed_from_step"] == 2
    assert resumed.metrics["steps"] == 6
    assert not ckpt_dir.exists()

    # the bar starts at the checkpoint's step, then moves one step at a time, with loss and real tok/s
    (task,) = progress.tasks
    steps = [n for n, _ in task["advances"] if n]
    assert task["total"] == 6 and steps == [2, 1, 1, 1, 1]
    last = task["advances"][-1][1]
    assert set(last) == {"loss", "tok/s"} and last["tok/s"] > 0 and last["loss"] == pytest.approx(
        _rows(resumed, "log")[-1]["loss"])

    # the same run as if never stopped: every step's loss (restored log + new steps) and the adapter
    assert [r["step"] for r in _rows(resumed, "log")] == list(range(1, 7))
    for a, b in zip(_rows(resumed, "log"), _rows(whole, "log")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a, b)
        assert a["tokens"] == b["tokens"]
    first = load_file(whole.file("adapter") / "adapter_model.safetensors")
    second = load_file(resumed.file("adapter") / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=1e-5, atol=1e-6)
    assert [(r["epoch"], r["step"]) for r in _rows(resumed, "eval_log")] == [(1.0, 4), (1.5, 6)]
    for a, b in zip(_rows(resumed, "eval_log"), _rows(whole, "eval_log")):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)


def test_an_incomplete_checkpoint_is_skipped(tmp_path):
    folder = tmp_path / "ckpts"
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / "checkpoint-2" / checkpoints.STATE_FILE).write_text('{"global_step": 2}')
    (folder / "checkpoint-4").mkdir()  # killed while saving: no trainer state yet
    (folder / "checkpoint-6").mkdir()
    (folder / "checkpoint-6" / checkpoints.STATE_FILE).write_text('{"global_st')  # cut mid-write
    assert checkpoints.latest(folder) == folder / "checkpoint-2"
    assert checkpoints.latest(tmp_path / "absent") is None
