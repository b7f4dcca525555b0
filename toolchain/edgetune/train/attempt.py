"""One training try: a fresh peft model on the base, an SFTTrainer with the stage's callbacks, resumed from the
newest checkpoint of the stage key if there is one. The OOM fallback (train/oom.py) calls it again with smaller
settings; everything but the TrainConfig is fixed in a `Job`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.config import TrainConfig
from edgetune.progress import Progress
from edgetune.train import checkpoints, reporting
from edgetune.train.adapters import describe, peft_config
from edgetune.train.args import sft_config
from edgetune.train.base import load_model
from edgetune.train.liger import available as liger_available
from edgetune.train.liger import restored_modeling_module
from edgetune.train.sharded import gather_adapter

log = logging.getLogger("edgetune.train")

TRAINABLE_WARN_SHARE = 0.05


@dataclass
class Outcome:
    """What one training try leaves: the trained peft model, the trainer state and the session's numbers."""

    cfg: TrainConfig  # the settings this try trained with
    model: Any
    state: Any
    train_s: float
    session_tokens: int
    resumed_from: int | None
    trainable: int
    total: int
    judged_live: bool
    # under FSDP: the gathered adapter weights (rank 0) or {} (other ranks); None when save_pretrained works
    adapter_state: dict | None = None
    offloaded: bool = False  # checkpointed activations held in host memory (train.offload_activations, resolved)
    compiled: bool = False  # decoder layers run through torch.compile (train.compile_layers, resolved)


@dataclass
class Job:
    """Everything a training try needs besides its TrainConfig (which the OOM fallback varies)."""

    src: Path
    method: str
    cuda: bool
    tok: Any
    n_examples: int
    ckpt_dir: Path
    train_data: Callable[[int], Any]  # max_length -> the training Dataset, prompts shortened to fit it
    eval_ds: Any
    items: list
    progress: Progress
    callbacks: tuple
    fresh: list  # the model loaded up front (target check), used by the first try
    tensorboard_dir: Path | None = None  # train.report_to: tensorboard writes its event files here

    def train_once(self, c: TrainConfig) -> Outcome:
        """One training try with config `c`: a fresh model, resumed from this key's newest checkpoint if any."""
        import transformers
        from peft import get_peft_model
        from transformers.trainer_callback import PrinterCallback
        from trl import SFTTrainer

        from edgetune.train import compile as layer_compile
        from edgetune.train import offload
        from edgetune.train.callbacks import HeldoutTask, LossCheck, ProgressReport

        model = self.fresh.pop() if self.fresh else load_model(self.src, self.method, self.cuda)
        # adapter weights are drawn from the global RNG here, before the Trainer seeds it: seed now or runs differ
        transformers.set_seed(c.seed)
        model = get_peft_model(model, peft_config(c, model))
        trainable, total = model.get_nb_trainable_parameters()
        share = trainable / total
        log.info("%s: training %d of %d parameters (%.2f%%)", describe(c), trainable, total, 100 * share)
        if share > TRAINABLE_WARN_SHARE:
            log.warning("%.1f%% of parameters are trainable (over 5%%): train.r=%d is probably too high", 100 * share, c.r)
        resume = checkpoints.latest(self.ckpt_dir)
        if resume is not None:
            log.info("resuming from %s (step %d)", resume, checkpoints.step_of(resume))
        per_epoch = math.ceil(self.n_examples / (c.batch_size * c.grad_accum))
        liger = liger_available(self.cuda)
        args = sft_config(c, self.ckpt_dir, cuda=self.cuda, liger=liger,
                          **({"eval_strategy": "epoch"} if self.eval_ds else {}))
        loss_cb = LossCheck(c.learning_rate, self.tok.pad_token)
        # packed, the step count depends on how the examples pack (known only inside TRL): an open-ended bar
        steps_total = c.max_steps or (None if c.packing else max(1, math.ceil(per_epoch * (c.epochs or 1.0))))
        with self.progress.task("train", steps_total) as bar, \
                restored_modeling_module(model.config.model_type if liger else None):
            report = ProgressReport(bar)
            offloaded = offload.resolve(c.offload_activations, cuda=self.cuda, recompute=bool(args.gradient_checkpointing),
                                        hidden_size=getattr(model.config, "hidden_size", None),
                                        world_size=args.world_size)
            compiled = layer_compile.resolve(c.compile_layers, cuda=self.cuda,
                                             hidden_size=getattr(model.config, "hidden_size", None),
                                             world_size=args.world_size, offloaded=offloaded)
            if compiled:
                layer_compile.keep_liger_off_the_layers(args)
            extra = [*reporting.callbacks(c.report_to, self.tensorboard_dir), *offload.callbacks(offloaded, self.cuda),
                     *layer_compile.callbacks(compiled)]
            trainer = SFTTrainer(model=model, args=args, train_dataset=self.train_data(c.max_length), eval_dataset=self.eval_ds,
                                 processing_class=self.tok, callbacks=[
                                     report, HeldoutTask(self.tok, self.items, c.batch_size), loss_cb, *extra,
                                     *self.callbacks])
            # transformers prints every log dict to stdout when tqdm is off; stdout belongs to --json output
            trainer.remove_callback(PrinterCallback)
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        adapter_state = gather_adapter(trainer, model)
        state = trainer.state
        return Outcome(c, model, state, report.elapsed(), state.num_input_tokens_seen - report.tokens0,
                       checkpoints.step_of(resume) if resume else None, trainable, total, loss_cb.judged,
                       adapter_state, offloaded, compiled)
