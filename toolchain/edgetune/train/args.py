"""The trainer arguments (TRL's SFTConfig) for a TrainConfig: the one place the train stage's real defaults live,
so benchmarks measure exactly what the stage runs.

TRL's own defaults (bf16 on, gradient checkpointing on, lr 2e-5) do not suit a CPU; every one that matters is
set here explicitly (NOTES.md). TRL 1.16 spells the tutorial's removed `max_seq_length` as `max_length`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgetune.config import TrainConfig
from edgetune.errors import ConfigError

log = logging.getLogger("edgetune.train")


def gradient_checkpointing(cfg: TrainConfig, cuda: bool) -> bool:
    """None means on for CUDA (memory is the limit there) and off on CPU (recompute only costs time)."""
    return cuda if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing


def micro_batches(cfg: TrainConfig) -> tuple[int, int]:
    """(examples per forward pass, accumulation steps) for cfg's batch_size x grad_accum examples per step: the
    largest divisor of batch_size whose tokens fit train.micro_batch_tokens, accumulation making up the rest
    (transformers normalises the accumulated loss by the step's token count, so the gradient is the whole
    batch's). Off by default: on an H200 each pass costs ~0.45 s whatever its size (Mistral-7B shape), so smaller
    passes save memory but cost speed in proportion (docs/benchmarks.md)."""
    budget = cfg.micro_batch_tokens
    if budget is None or cfg.max_length is None:  # None: not yet sized from the data (train/lengths.py)
        return cfg.batch_size, cfg.grad_accum
    length = cfg.max_length
    micro = max((d for d in range(1, cfg.batch_size + 1)
                 if cfg.batch_size % d == 0 and d * length <= budget), default=1)
    return micro, cfg.grad_accum * (cfg.batch_size // micro)


def sft_config(cfg: TrainConfig, output_dir: Path | str, *, cuda: bool, liger: bool, **overrides: Any):
    """The SFTConfig the train stage trains with; `overrides` replace any argument (e.g. max_steps=20).

    Checkpoints (every `cfg.save_steps` steps, into `output_dir`) are on; the per-epoch held-out evaluation is
    off here (it needs an eval dataset) and switched on by the stage with `eval_strategy="epoch"`."""
    from trl import SFTConfig

    if cfg.max_length is None:  # TRL would then neither truncate nor pack, so nothing may reach it unsized
        raise ValueError("sft_config needs a sized train.max_length (the train stage sizes it: train/lengths.py)")
    recompute = gradient_checkpointing(cfg, cuda)
    if cfg.offload_activations and not recompute:  # nothing is checkpointed, so nothing could be offloaded
        raise ConfigError("train.offload_activations needs gradient checkpointing, which is off here "
                          f"({'train.gradient_checkpointing: false' if cuda else 'a CPU run'})",
                          "set train.gradient_checkpointing: true on a CUDA host, or drop offload_activations")
    # offloading is not a checkpoint argument here: train/offload.py's callback swaps the layers' checkpoint function
    checkpoint_kwargs = {"use_reentrant": False}
    micro, accum = micro_batches(cfg)
    if micro != cfg.batch_size:
        log.info("batch %d x %d tokens runs as %d micro-batches of %d (train.micro_batch_tokens=%s); accumulation "
                 "%d -> %d", cfg.batch_size, cfg.max_length, cfg.batch_size // micro, micro, cfg.micro_batch_tokens,
                 cfg.grad_accum, accum)
    args: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_length": cfg.max_length,
        "per_device_train_batch_size": micro,
        "per_device_eval_batch_size": micro,
        "gradient_accumulation_steps": accum,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,  # a float in [0, 1) is a ratio (transformers 5 dropped warmup_ratio)
        "num_train_epochs": cfg.epochs if cfg.epochs is not None else 1.0,  # the stage resolves None first
        "max_steps": cfg.max_steps or -1,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "bf16": cuda,
        "gradient_checkpointing": recompute,
        "gradient_checkpointing_kwargs": checkpoint_kwargs if recompute else None,
        # Liger's fused RMSNorm/SwiGLU/RoPE/linear-cross-entropy: 1.6x tok/s at 0.63x memory on a
        # Mistral-7B-shape QLoRA step on an H200 (benchmarks/train_throughput.py)
        "use_liger_kernel": liger,
        "use_cpu": not cuda,
        "logging_steps": 1,
        "include_num_input_tokens_seen": "non_padding",  # real tokens for tok/s, kept in checkpoints
        "save_strategy": "steps" if cfg.save_steps else "no",
        "save_steps": cfg.save_steps or 500,
        "save_total_limit": 2,  # the newest may be cut short by a kill; keep the one before it
        "eval_strategy": "no",
        # wandb and mlflow through transformers' own callbacks; tensorboard through one the stage adds, writing
        # into the artifact rather than output_dir (the checkpoints, removed after training): train/reporting.py
        "report_to": cfg.report_to if cfg.report_to in ("wandb", "mlflow") else "none",
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    if cfg.packing:
        # Best-fit decreasing packing is padding-free in TRL 1.16: one flat row per batch with position_ids
        # restarting at 0 for each example; transformers builds a block-diagonal mask from them (sdpa, eager) or
        # passes the boundaries to flash attention, so no example attends to another (tests/train/test_packing.py)
        args.update(packing=True, packing_strategy="bfd")
    args.update(overrides)
    sft = SFTConfig(**args)
    if sft.world_size == 1 and sft.n_gpu > 1:
        # One process sees several GPUs: transformers would wrap the model in nn.DataParallel, which TRL 1.16's
        # SFTTrainer refuses (ValueError, sft_trainer.py); the tutorial's single-GPU recipe then fails on any
        # multi-GPU host. Train on cuda:0, as device_map={"": 0} already places an NF4 base. Found on a 2x H200.
        log.warning("%d GPUs visible to one process: training on cuda:0 only; use --gpus %d to train on all "
                    "(accelerate launch)", sft.n_gpu, sft.n_gpu)
        sft._n_gpu = 1
    return sft
