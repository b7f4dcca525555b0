"""edgetune's own train and merge stages on CUDA (QLoRA NF4, bf16, Liger when installed), end to end.

CI has no GPU, so this script is how the CUDA path of `edgetune.train` / `edgetune.merge` is exercised: on the
device machine, a random-weight model of SmolLM2-135M's shape (or Llama-3.2-1B's) with SmolLM2's real
tokenizer trains on a small deterministic task through `train.run` (TRL SFTTrainer, method auto → qlora),
then merges in fp32 with the logit check. Prints a table and one JSON line.

  python benchmarks/train_stage_gpu.py --tokenizer DIR [--shape smollm2-135m|llama-1b] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, tie_word_embeddings=True),
}


def random_llama(tokenizer_dir: Path, shape: str, out: Path, *, max_positions: int = 2048):
    """A seeded random-weight Llama of `shape` with the given tokenizer, saved (weights + tokenizer) to `out`.
    Returns the tokenizer. Shared by the GPU benchmarks: no weights can reach the GPU host."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), max_position_embeddings=max_positions,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id, **SHAPES[shape]))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return tok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()

    import torch

    from edgetune import basemodel, data, merge, train
    from edgetune.artifacts import Store
    from edgetune.config import DataConfig, ModelConfig, TrainConfig

    work = Path(tempfile.mkdtemp(prefix="edgetune-gpu-"))
    random_llama(args.tokenizer, args.shape, work / "base")
    colours = ["red", "green", "blue", "yellow", "black", "white"]
    rows = [{"input": f"What colour is item {i}?", "output": colours[i % len(colours)]} for i in range(300)]
    (work / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    store = Store(work / "store")
    d = data.run(DataConfig(source=str(work / "data.jsonl"), heldout_size=20, train_size=256), store)
    b = basemodel.run(ModelConfig(source=str(work / "base")), store)
    started = time.time()
    t = train.run(TrainConfig(max_steps=args.steps, batch_size=8, learning_rate=1e-3), b, d, store)
    train_s = time.time() - started
    m = merge.run(b, t, store)
    tm = t.training  # the typed train metrics (edgetune.outputs.TrainMetrics)
    print(f"{'shape':<14} {'method':<6} {'liger':<6} {'steps':>5} {'s/step':>7} {'peak GiB':>8} {'loss first':>10} "
          f"{'loss last':>9} {'merge max|dlogit|':>17}")
    print(f"{args.shape:<14} {tm.method:<6} {str(tm.liger):<6} {tm.steps:>5} {tm.s_per_step:>7.3f} "
          f"{(tm.peak_gpu_gib or 0):>8.2f} {tm.loss_first:>10.4f} {tm.loss_last:>9.4f} "
          f"{m.max_logit_diff:>17.2e}")
    ok = tm.method == "qlora" and tm.device == "cuda" and tm.loss_last < tm.loss_first
    # the JSON line keeps the artifacts' whole records
    print(json.dumps({"benchmark": "train_stage_gpu", "date": time.strftime("%Y-%m-%d"), "shape": args.shape,
                      "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "train": t.metrics,
                      "train_wall_s": round(train_s, 2), "merge": m.metrics, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
