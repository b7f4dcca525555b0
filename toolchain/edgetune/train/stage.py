"""The train stage: LoRA or QLoRA adapters with peft + trl, on CUDA or CPU.

Reads the base artifact (an HF folder) and the data artifact (train.jsonl); writes the adapter
(`adapter/adapter_model.safetensors` + `adapter_config.json`) and `train_log.jsonl`.

Departures from the tutorial's recipe, each measured (../shared/NOTES.md): no `prepare_model_for_kbit_training`
(its fp32 upcast costs 2.5x speed and 2x memory on an H200), the base stays bf16 around NF4 weights; TRL 1.16's
`SFTConfig(max_length=...)` and `processing_class=` replace the removed `max_seq_length`/`tokenizer` arguments;
loss is on completions only (prompt-completion examples); on CPU, fp32 LoRA with bf16 and checkpointing off.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from edgetune.artifacts import Artifact, Store, stage_key
from edgetune.basemodel import model_dir
from edgetune.config import TrainConfig
from edgetune.data import read_examples
from edgetune.errors import TrainError
from edgetune.modules import resolve_targets
from edgetune.progress import NullProgress, Progress

log = logging.getLogger("edgetune.train")  # one logger for the whole stage package

KIND = "train"
TRAINABLE_WARN_SHARE = 0.05


def resolve_method(cfg: TrainConfig) -> str:
    """auto → qlora only where NF4 pays off (CUDA with bitsandbytes); a CPU gets fp32 LoRA."""
    if cfg.method != "auto":
        return cfg.method
    import importlib.util

    import torch

    return "qlora" if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") else "lora"


def _load_model(path: Path, method: str, cuda: bool):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if cuda else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        kwargs["dtype"] = compute
        kwargs["device_map"] = {"": 0} if cuda else {"": "cpu"}
    else:
        kwargs["dtype"] = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if method == "qlora" and not cuda:
        # bitsandbytes on CPU repacks NF4 weights into an inference-only format on first use, after which
        # layer gradients silently vanish (NOTES.md); keep the trainable format.
        import bitsandbytes as bnb

        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False
    return model


def _to_prompt_completion(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]} for ex in examples]


def run(cfg: TrainConfig, base: Artifact, data: Artifact, store: Store, *, threads: int | None = None,
        progress: Progress | None = None) -> Artifact:
    """Train an adapter. Raises ModelError for bad target modules, TrainError for empty data or a failed run."""
    method = resolve_method(cfg)
    params = {**cfg.model_dump(), "method": method}
    key = stage_key(KIND, params, {"base": base.key, "data": data.key})
    if hit := store.lookup(KIND, key):
        return hit
    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    liger = cuda and importlib.util.find_spec("liger_kernel") is not None
    if method == "qlora" and not cuda:
        log.warning("train.method=qlora on CPU: NF4 is real but slow here; fp32 LoRA (method: lora) is faster")
    examples = read_examples(data.file("train"))
    if not examples:
        raise TrainError("the training split is empty", "lower data.heldout_size or add examples")
    src = model_dir(base)
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:  # the tutorial's pad fix, applied only where needed
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise TrainError(f"{src} has a tokenizer without a chat template", "use an instruct model or add chat_template.jinja")
    model = _load_model(src, method, cuda)
    targets = resolve_targets(model, cfg.target_modules)
    # LoRA A is drawn from the global RNG here, before the Trainer seeds it: seed now or runs differ
    transformers.set_seed(cfg.seed)
    model = get_peft_model(model, LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none", task_type="CAUSAL_LM",
        target_modules="all-linear" if targets == ["all-linear"] else targets,  # peft takes the preset as a str
    ))
    trainable, total = model.get_nb_trainable_parameters()
    share = trainable / total
    log.info("training %d of %d parameters (%.2f%%)", trainable, total, 100 * share)
    if share > TRAINABLE_WARN_SHARE:
        log.warning("%.1f%% of parameters are trainable (over 5%%): train.r=%d is probably too high", 100 * share, cfg.r)

    steps_per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.grad_accum))
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    history: list[dict[str, float]] = []

    with store.build(KIND, key, params, {"base": base.key, "data": data.key}, tools={
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "trl": trl.__version__,
    }) as b, (progress or NullProgress()).task("train", total_steps) as bar:

        class _Report(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    history.append({"step": state.global_step, "loss": float(logs["loss"]),
                                    "lr": float(logs.get("learning_rate", 0.0))})

            def on_step_end(self, args, state, control, **kw):
                bar.advance(1, loss=history[-1]["loss"] if history else float("nan"))

        sft = SFTConfig(
            output_dir=str(b.path / "checkpoints"),
            max_length=cfg.max_length,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler,
            warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio (transformers 5 dropped warmup_ratio)
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
            seed=cfg.seed,
            data_seed=cfg.seed,
            bf16=cuda,
            gradient_checkpointing=cuda,
            gradient_checkpointing_kwargs={"use_reentrant": False} if cuda else None,
            # Liger's fused RMSNorm/SwiGLU/RoPE/linear-cross-entropy: 1.6x tok/s at 0.63x memory on a
            # Mistral-7B-shape QLoRA step on an H200 (benchmarks/train_throughput.py)
            use_liger_kernel=liger,
            use_cpu=not cuda,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        with _restored_modeling_module(model.config.model_type if liger else None):
            trainer = SFTTrainer(model=model, args=sft, train_dataset=Dataset.from_list(_to_prompt_completion(examples)),
                                 processing_class=tok, callbacks=[_Report()])
            # transformers prints every log dict to stdout when tqdm is off; stdout belongs to --json output
            trainer.remove_callback(PrinterCallback)
            started = time.time()
            result = trainer.train()
        elapsed = time.time() - started
        if not history or not math.isfinite(history[-1]["loss"]):
            raise TrainError("training produced no finite loss", "lower train.learning_rate; check the data")
        model.save_pretrained(b.path / "adapter")
        with (b.path / "train_log.jsonl").open("w") as fh:
            for row in history:
                fh.write(json.dumps(row) + "\n")
        first, last = _mean(history[:5]), _mean(history[-5:])
        if len(history) >= 10 and last >= first:
            log.warning("loss did not fall (%.3f -> %.3f): try a lower learning rate (1e-4, 5e-5), check the chat "
                        "template matches the model and that padding is not trained on", first, last)
        b.outputs.update(adapter="adapter", log="train_log.jsonl")
        b.metrics.update(
            method=method, steps=result.global_step, loss_first=first, loss_last=last, train_s=round(elapsed, 2),
            s_per_step=round(elapsed / max(1, result.global_step), 3), trainable_params=trainable,
            total_params=total, trainable_share=share, n_examples=len(examples), device="cuda" if cuda else "cpu",
            liger=liger, peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        )
    return b.artifact


@contextlib.contextmanager
def _restored_modeling_module(model_type: str | None):
    """Liger patches transformers' modeling module globally (classes, functions, forward methods); restore
    them after training so later stages in this process (the CPU fp32 merge, evals) run stock code.
    Found on an H200: without this the merge's CPU RMSNorm ran Liger's Triton kernel and failed."""
    if model_type is None:
        yield
        return
    module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    saved = dict(vars(module))
    forwards = {obj: vars(obj)["forward"] for obj in saved.values() if isinstance(obj, type) and "forward" in vars(obj)}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
        for cls, forward in forwards.items():
            cls.forward = forward


def _mean(rows: list[dict[str, float]]) -> float:
    return sum(r["loss"] for r in rows) / max(1, len(rows))
