"""Recovery adapter: a small LoRA trained on the *quantized* model to give back what quantization took.

The student is the full-precision architecture (the merged HF folder) with every weight replaced by the
quantized GGUF's own values, dequantized by gguf-py, so the adapter sees exactly the rounding llama.cpp will
run with. The teacher is the GPU build (the merged model itself). The loss is KL(teacher || student) over every
next-token distribution of the training prompts (distillation; no labels needed). The adapter is saved as a
PEFT folder for export.lora.convert_lora, which llama.cpp applies at run time on top of the quantized base.
Raises ExportError for a GGUF whose tensors do not match the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.errors import ExportError

log = logging.getLogger(__name__)

# GGUF llama tensor names → transformers Llama parameter names ({} is the layer number)
_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
    "attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
}
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class RecoveryConfig:
    rank: int = 8
    alpha: int = 16
    steps: int = 120
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class RecoveryResult:
    adapter_dir: Path
    first_kld: float  # mean KL over the first 10 steps' batches
    last_kld: float  # and over the last 10
    steps: int
    train_s: float


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's converter's rotary reordering of q/k rows (its LlamaModel.permute)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_dequantized(model_dir: Path, gguf_path: Path):
    """The HF model of `model_dir` with each weight replaced by the GGUF's dequantized value (fp32)."""
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = model.config
    params = dict(model.named_parameters())
    seen = set()
    for t in GGUFReader(gguf_path).tensors:
        if t.name.startswith("blk."):
            _, layer, rest = t.name.split(".", 2)
            name = _NAMES.get(rest, "").format(layer)
        else:
            name = _NAMES.get(t.name, "")
        if name not in params:
            continue
        w = dequantize(t.data, t.tensor_type).reshape(tuple(reversed([int(d) for d in t.shape])))
        if ".q_proj." in name:
            w = _unpermute(w, cfg.num_attention_heads)
        elif ".k_proj." in name:
            w = _unpermute(w, cfg.num_key_value_heads)
        if tuple(w.shape) != tuple(params[name].shape):
            raise ExportError(f"{gguf_path.name}: {t.name} has shape {w.shape}, the model wants "
                              f"{tuple(params[name].shape)}", "the GGUF must be exported from this model")
        with torch.no_grad():
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
        seen.add(name)
    missing = [n for n in params if n not in seen and not (n == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing:
        raise ExportError(f"{gguf_path.name} lacks {len(missing)} of the model's weights (e.g. {missing[0]})",
                          "the GGUF must be exported from this model")
    return model


def train_recovery(teacher_dir: Path, quantized_gguf: Path, sequences: Sequence[Sequence[int]], out_dir: Path,
                   cfg: RecoveryConfig = RecoveryConfig(),
                   on_step: Callable[[int, float], None] | None = None) -> RecoveryResult:
    """Train the recovery LoRA on `sequences` (token ids: the training prompts with their answers) and save it
    as a PEFT folder `out_dir`."""
    import time

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if not sequences:
        raise ExportError("no training sequences for the recovery adapter", "the training set must not be empty")
    torch.manual_seed(cfg.seed)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    student = load_dequantized(teacher_dir, quantized_gguf)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=list(TARGET_MODULES),
                      task_type="CAUSAL_LM")
    student = get_peft_model(student, lora)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.learning_rate,
                            weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    rng = np.random.default_rng(cfg.seed)
    pad = 0
    losses: list[float] = []
    started = time.perf_counter()
    student.train()
    for step in range(cfg.steps):
        idx = rng.choice(len(sequences), size=min(cfg.batch_size, len(sequences)), replace=False)
        batch = [list(sequences[i]) for i in idx]
        width = max(len(s) for s in batch)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in batch])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch])
        with torch.no_grad():
            t_logp = torch.log_softmax(teacher(input_ids=ids, attention_mask=mask).logits, dim=-1)
        s_logp = torch.log_softmax(student(input_ids=ids, attention_mask=mask).logits, dim=-1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # KL(teacher || student) per position
        weight = mask[:, 1:].float()  # position 0 predicts from the BOS alone: as the fidelity check, skip it
        loss = (kl[:, 1:] * weight).sum() / weight.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    student.save_pretrained(str(out_dir))
    n = min(10, len(losses))
    return RecoveryResult(out_dir, float(np.mean(losses[:n])), float(np.mean(losses[-n:])), cfg.steps,
                          time.perf_counter() - started)
