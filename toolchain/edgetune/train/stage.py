"""The train stage: LoRA, DoRA, rsLoRA or IA3 adapters with peft + trl, on a full-precision or NF4 (QLoRA)
base, on CUDA or CPU.

Reads the base artifact (an HF folder) and the data artifact (train.jsonl, heldout.jsonl); writes the adapter
(`adapter/adapter_model.safetensors` + `adapter_config.json`), `train_log.jsonl` (one row per step) and
`eval_log.jsonl` (one row per epoch: held-out loss and exact-match accuracy). Checkpoints go beside the store's
artifacts (train/checkpoints.py) every `save_steps`, so a rerun of an interrupted build resumes; a CUDA OOM
steps through train/oom.py's fixes. Examples are rendered with the tokenizer's own chat template; only a model
without one uses `train.chat_template_fallback` (with a warning), stored as `chat_template.jinja` for the merge
stage. `train.max_length` (by default sized from the data) is met by shortening prompts, never answers
(train/lengths.py). `train.packing` packs examples padding-free (train/args.py). Raises ModelError for bad
target modules, TrainError for empty data, a tokenizer with no chat template and no fallback, a run without a
finite loss, or an OOM nothing fixes; DataError when every example's answer alone exceeds max_length.

Departures from the tutorial's recipe, each measured (../shared/NOTES.md): no `prepare_model_for_kbit_training`
(its fp32 upcast costs 1.25x speed and 1/0.76x memory on an H200, Mistral-7B shape, with the tutorial's bf16
autocast: benchmarks/results-train-throughput-2026-11-30.log; an older 2.5x/2x figure left autocast out), the
base stays bf16 around NF4 weights; TRL 1.16's `SFTConfig(max_length=...)` and `processing_class=` replace the
removed `max_seq_length`/`tokenizer` arguments; loss is on the answers only (prompt-completion examples; every
assistant turn of a multi-turn conversation: train/turns.py); on CPU, fp32 LoRA with bf16 and checkpointing off.
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

from edgetune import chat_templates as templates
from edgetune.artifacts import Builder, Store, stage_key
from edgetune.config import TrainConfig
from edgetune.data import read_examples
from edgetune.errors import DataError, TrainError
from edgetune.outputs import Adapter, BaseModel, DataSplit, TrainMetrics
from edgetune.progress import NullProgress, Progress
from edgetune.train import checkpoints, lengths, reporting
from edgetune.train.adapters import peft_config
from edgetune.train.args import gradient_checkpointing, micro_batches
from edgetune.train.attempt import Job
from edgetune.train.base import load_model as _load_model
from edgetune.train.base import CUDA_EXTRA, resolve_method
from edgetune.train.liger import available as liger_available
from edgetune.train.schedule import resolve_epochs
from edgetune.train.sharded import save_adapter
from edgetune.train.turns import training_rows

log = logging.getLogger("edgetune.train")  # one logger for the whole stage package

KIND = Adapter.KIND


def _key_params(cfg: TrainConfig, method: str, processes: int = 1) -> dict[str, Any]:
    """The settings that change the adapter: save_steps does not (a rerun with another value still resumes), nor
    does compile_layers (the same computation, fused: gradients equal to rounding, tests/train/test_compile.py),
    and each adapter kind ignores the other kind's module lists. N processes train N times the effective
    batch, so the process count is part of the key (left out at 1, so single-process keys stay as they were)."""
    params = {**cfg.model_dump(exclude={"save_steps", "report_to", "compile_layers"}), "method": method}
    # settings added later enter the key only when set, so keys of runs that never used them stay as they were
    if not cfg.packing:
        del params["packing"]
    if cfg.micro_batch_tokens is None:
        del params["micro_batch_tokens"]
    if cfg.chat_template_fallback is None:
        del params["chat_template_fallback"]
    else:  # the text trained with, not only its name: editing the .jinja file retrains
        params["chat_template_fallback"] = {"name": cfg.chat_template_fallback,
                                            "sha256": templates.digest(templates.load(cfg.chat_template_fallback))}
    if processes > 1:
        params["processes"] = processes
    unused = ("r", "alpha", "dropout", "target_modules") if cfg.adapter == "ia3" else (
        "ia3_target_modules", "ia3_feedforward_modules")
    return {k: v for k, v in params.items() if k not in unused}


def cache_key(cfg: TrainConfig, base: BaseModel, data: DataSplit, processes: int = 1) -> str:
    """The stage key `run` stores this training under (launchers check the cache with it before starting)."""
    return stage_key(KIND, _key_params(cfg, resolve_method(cfg), processes), {"base": base.key, "data": data.key})


def run(cfg: TrainConfig, base: BaseModel, data: DataSplit, store: Store, *, threads: int | None = None,
        progress: Progress | None = None, callbacks: tuple = (), oom_fallback: bool = True,
        processes: int = 1) -> Adapter:
    """Train an adapter, resuming this key's newest checkpoint if an earlier run was interrupted.

    `callbacks`: extra transformers TrainerCallbacks. `oom_fallback=False` turns train/oom.py's retries off (a
    multi-process run, whose ranks cannot change settings on their own); the fixes applied are recorded in
    `training.oom_fallback` and the cache key stays that of `cfg`. Checkpoints go under `store.root` (ranks
    must share it). Raises ModelError for bad target modules, TrainError for empty data, a run without a finite
    loss, or a CUDA OOM that no fallback fixes."""
    method = resolve_method(cfg)
    params = {**cfg.model_dump(), "method": method, "processes": processes}
    inputs = {"base": base.key, "data": data.key}
    key = cache_key(cfg, base, data, processes)
    ckpt_dir = checkpoints.checkpoint_dir(store, KIND, key)
    build = partial(_train, cfg, method, base, data, ckpt_dir, threads=threads, progress=progress,
                    callbacks=callbacks, oom_fallback=oom_fallback, processes=processes)
    # the key leaves out settings that do not change the adapter (_key_params); the record keeps every setting
    trained = Adapter.of(store.stage(KIND, params, inputs, build, key=key))
    checkpoints.remove(ckpt_dir)  # done with; or left by a run killed between committing and cleaning up
    return trained


def _train(cfg: TrainConfig, method: str, base: BaseModel, data: DataSplit, ckpt_dir: Path, b: Builder, *,
           threads: int | None, progress: Progress | None, callbacks: tuple, oom_fallback: bool,
           processes: int) -> None:
    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer

    from edgetune.train.callbacks import loss_check, warn_if_flat
    from edgetune.train.heldout import LOSS_ITEMS, task_items
    from edgetune.train.oom import run_with_fallback

    reporting.check(cfg.report_to)  # before any work: a missing package is one error line
    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    if method == "qlora" and not cuda:
        log.warning("train.method=qlora on CPU: NF4 is real but slow here; fp32 LoRA (method: lora) is faster")
    if cuda and cfg.method == "auto" and method == "lora":
        log.warning("train.method=auto on CUDA without bitsandbytes: training LoRA on a bf16 base, not QLoRA; "
                    "%s for the NF4 base", CUDA_EXTRA)
    examples = read_examples(data.train_path)
    if not examples:
        raise TrainError("the training split is empty", "lower data.heldout_size or add examples")
    heldout = read_examples(data.heldout_path)
    src = base.model_dir
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:  # the tutorial's pad fix, applied only where needed
        tok.pad_token = tok.eos_token
    fallback = apply_template_fallback(tok, cfg.chat_template_fallback, src)
    # the key holds the configured max_length (None: sized from the data, a function of the key's inputs)
    first = lengths.check(tok, examples, cfg.max_length, src)
    fits = {first.max_length: first}
    cfg = cfg.model_copy(update={"max_length": first.max_length})

    def train_data(max_length: int) -> Any:
        """The training set at `max_length` (the OOM fallback halves it: the prompts are shortened again)."""
        if max_length not in fits:
            fits[max_length] = lengths.check(tok, examples, max_length, src)
        return Dataset.from_list(training_rows(tok, fits[max_length].examples))

    cfg = resolve_epochs(cfg, len(first.examples), processes)  # the key above is the config's; this is the schedule
    fresh = [_load_model(src, method, cuda)]
    peft_config(cfg, fresh[0])  # checks the target modules before anything is written
    job = Job(src=src, method=method, cuda=cuda, tok=tok, n_examples=len(first.examples), ckpt_dir=ckpt_dir,
              train_data=train_data, eval_ds=_eval_dataset(tok, heldout[:LOSS_ITEMS], first.max_length),
              items=task_items(heldout, tok, cfg.eval_items), progress=progress or NullProgress(),
              callbacks=tuple(callbacks), fresh=fresh,
              tensorboard_dir=b.path / Adapter.TENSORBOARD_DIR if cfg.report_to == "tensorboard" else None)
    if cfg.save_steps:
        log.info("checkpoints every %d steps in %s (a rerun resumes from the newest)", cfg.save_steps, ckpt_dir)

    b.tools.update(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                   trl=trl.__version__)
    out, fallbacks = run_with_fallback(job.train_once, cfg) if oom_fallback else (job.train_once(cfg), [])
    log_history = out.state.log_history
    history = [{"step": r["step"], "epoch": r.get("epoch"), "loss": float(r["loss"]),
                "lr": float(r.get("learning_rate", 0.0)), "tokens": r.get("num_input_tokens_seen")}
               for r in log_history if "loss" in r]
    evals = [{"epoch": r.get("epoch"), "step": r["step"], "eval_loss": r["eval_loss"],
              "accuracy": r.get("eval_accuracy"), "n": r.get("eval_items", 0)}
             for r in log_history if "eval_loss" in r]
    if not history or not math.isfinite(history[-1]["loss"]):
        raise TrainError("training produced no finite loss", "lower train.learning_rate; check the data")
    check = loss_check(log_history)
    if not out.judged_live:  # resumed past epoch 1: judge from the restored log
        warn_if_flat(check, cfg.learning_rate, tok.pad_token)
    # FSDP on a rank other than 0 gathers {} and saves nothing: its artifact copy is scratch (train/worker.py)
    if out.adapter_state != {}:
        if out.adapter_state is None:
            out.model.save_pretrained(b.path / Adapter.ADAPTER_DIR)
        else:  # FSDP, rank 0: the gathered adapter (save_pretrained would write it empty: train/sharded.py)
            save_adapter(out.model, out.adapter_state, b.path / Adapter.ADAPTER_DIR)
        _check_saved(b.path / Adapter.ADAPTER_DIR, out.trainable)
    _write_jsonl(b.path / Adapter.LOG_FILE, history)
    _write_jsonl(b.path / Adapter.EVAL_LOG_FILE, evals)
    if fallback:  # the merge stage writes it into the merged tokenizer (merge.py)
        (b.path / Adapter.TEMPLATE_FILE).write_text(tok.chat_template, encoding="utf-8")
    steps = out.state.global_step
    fitted = fits.get(out.cfg.max_length or first.max_length, first)  # the length it really trained at
    Adapter.write(b, TrainMetrics(
        method=method, adapter=cfg.adapter, steps=steps, epochs_trained=cfg.epochs,
        loss_first=_mean(history[:5]),
        loss_last=_mean(history[-5:]), loss_check=check, epochs=evals,
        eval_loss_last=evals[-1]["eval_loss"] if evals else None,
        eval_accuracy_last=evals[-1]["accuracy"] if evals else None,
        # wall time of this session's trainer.train (evaluations included), and its real tokens
        train_s=round(out.train_s, 2), s_per_step=round(out.train_s / max(1, steps - (out.resumed_from or 0)), 3),
        tokens=out.state.num_input_tokens_seen, tokens_per_s=round(out.session_tokens / max(out.train_s, 1e-9), 1),
        trainable_params=out.trainable, total_params=out.total, trainable_share=out.trainable / out.total,
        n_examples=len(fitted.examples), n_heldout_loss=len(job.eval_ds) if job.eval_ds else 0,
        n_heldout_task=len(job.items), resumed_from_step=out.resumed_from, oom_fallback=fallbacks,
        device="cuda" if cuda else "cpu", liger=liger_available(cuda),
        # the settings the adapter was trained with: the config's, or the OOM fallback's last
        batch_size=out.cfg.batch_size, grad_accum=out.cfg.grad_accum,
        micro_batch=micro_batches(out.cfg)[0], max_length=out.cfg.max_length, max_length_why=fitted.why,
        longest_example=fitted.longest, shortened=fitted.shortened, most_cut=fitted.most_cut,
        dropped=fitted.dropped,
        gradient_checkpointing=gradient_checkpointing(out.cfg, cuda),
        offload_activations=out.offloaded, compile_layers=out.compiled,
        peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        chat_template=f"fallback:{cfg.chat_template_fallback}" if fallback else "model", packing=cfg.packing,
    ), chat_template=fallback, tensorboard=(b.path / Adapter.TENSORBOARD_DIR).is_dir())


def _eval_dataset(tok: Any, examples: list[dict[str, Any]], max_length: int) -> Any:
    """The held-out loss set, shortened as the training set is; None when there is none to score."""
    from datasets import Dataset

    try:
        fitted = lengths.fit(tok, examples, max_length, None)
    except DataError:  # every held-out answer is over the limit: no held-out loss, training goes on
        return None
    return Dataset.from_list(training_rows(tok, fitted.examples)) if fitted.examples else None


def apply_template_fallback(tok: Any, fallback: str | None, src: Path) -> bool:
    """Give `tok` the fallback chat template where it has none; True when the fallback is used. Raises
    TrainError for a tokenizer with neither."""
    if tok.chat_template:
        if fallback:
            log.info("%s has its own chat template: train.chat_template_fallback=%s is not used", src, fallback)
        return False
    if not fallback:
        raise TrainError(f"{src} has a tokenizer without a chat template",
                         "use an instruct model, add chat_template.jinja to it, or set "
                         "train.chat_template_fallback (chatml or a .jinja file)")
    tok.chat_template = templates.load(fallback)
    log.warning("%s has no chat template: training with the fallback %s (train.chat_template_fallback); the "
                "merged model and its GGUFs carry the same template", src, fallback)
    end = templates.END_OF_TURN.get(fallback)
    if end is not None and end != tok.eos_token:
        log.warning("the %s template ends turns with %s, but %s's EOS is %s: the model learns to write %s and "
                    "a runtime that stops only at EOS may run on", fallback, end, src, tok.eos_token, end)
    return True


def _check_saved(adapter_dir: Path, trainable: int) -> None:
    """A saved adapter must hold every trainable weight: an empty or partial file would merge as a no-op."""
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as fh:
        names = fh.keys()  # safe_open is not a mapping
        saved = sum(math.prod(fh.get_slice(k).get_shape()) for k in names)
    if saved != trainable:
        raise TrainError(f"the saved adapter holds {saved} weights, training had {trainable}",
                         "report this as a bug with the run's artifact.json; the trained model was not saved whole")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _mean(rows: list[dict[str, float]]) -> float:
    return sum(r["loss"] for r in rows) / max(1, len(rows))
