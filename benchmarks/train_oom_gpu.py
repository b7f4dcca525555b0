"""The OOM fallback against a real CUDA out-of-memory: edgetune's train stage under a GPU memory cap.

CI has no GPU, so this is where train/oom.py meets torch.cuda.OutOfMemoryError for real. On the device machine:
a random-weight Llama of a real shape (train_stage_gpu.SHAPES) with SmolLM2's tokenizer, long examples (~1,500
tokens), and a config that cannot fit under `torch.cuda.set_per_process_memory_fraction` (batch 16 x
max_length 2048, gradient checkpointing off). `train.run` must step through the fixes (batch 1 with 16x
accumulation, checkpointing on, max_length halved...) and finish. Prints the steps, a table and one JSON line;
exit 0 when at least one fix was applied and training finished.

  python benchmarks/train_oom_gpu.py --tokenizer DIR [--shape llama-1b] [--limit-gib 6] [--batch 16]
      [--max-length 2048] [--steps 3] [--method lora]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from train_stage_gpu import SHAPES, random_llama  # the same random-weight shapes as the train-stage benchmark

WORDS = ["river", "stone", "light", "paper", "garden", "window", "silver", "morning", "table", "letter", "mountain", "engine", "quiet", "yellow", "market", "winter", "number", "simple", "forest", "circle", "bridge", "signal", "orange", "marble", "harbor", "candle", "desert"]


def long_rows(n: int, n_words: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "black", "white"]
    return [{"input": " ".join(rng.choice(WORDS) for _ in range(n_words)) + f"\nWhich colour is item {i}?",
             "output": colours[i % len(colours)]} for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--shape", default="llama-1b", choices=sorted(SHAPES))
    ap.add_argument("--limit-gib", type=float, default=6.0, help="GPU memory cap for this process")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--method", default="lora", choices=["lora", "qlora"])
    ap.add_argument("--words", type=int, default=1200, help="words per prompt (~1.2 tokens each)")
    args = ap.parse_args()

    import torch
    from edgetune import basemodel, data, train
    from edgetune.artifacts import Store
    from edgetune.config import DataConfig, ModelConfig, TrainConfig
    from edgetune.errors import TrainError

    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="edgetune-oom-"))
    tok = random_llama(args.tokenizer, args.shape, work / "base", max_positions=4096)
    rows = long_rows(74, n_words=args.words)
    (work / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompt_tokens = len(tok(rows[0]["input"])["input_ids"])

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, args.limit_gib * 2**30 / total), 0)
    store = Store(work / "store")
    d = data.run(DataConfig(source=str(work / "data.jsonl"), heldout_size=10, train_size=None), store)
    b = basemodel.run(ModelConfig(source=str(work / "base")), store)
    cfg = TrainConfig(method=args.method, batch_size=args.batch, grad_accum=1, max_length=args.max_length,
                      gradient_checkpointing=False, max_steps=args.steps, learning_rate=1e-3, eval_items=0,
                      save_steps=0)
    started = time.time()
    try:
        t = train.run(cfg, b, d, store)
        failed = None
    except TrainError as exc:
        t, failed = None, str(exc)
    wall_s = time.time() - started
    tm = t.training if t else None  # the typed train metrics (edgetune.outputs.TrainMetrics)
    fixes = tm.oom_fallback if tm else []
    print(f"cap {args.limit_gib:.1f} GiB of {total / 2**30:.0f}; asked: batch {args.batch} x max_length "
          f"{args.max_length}, checkpointing off; prompts ~{prompt_tokens} tokens")
    for i, fix in enumerate(fixes, 1):
        print(f"  fix {i}: {fix}")
    if tm is None:
        print(f"  gave up: {failed}")
    else:
        print(f"{'shape':<14} {'method':<6} {'fixes':>5} {'steps':>5} {'s/step':>7} {'peak GiB':>8} {'loss last':>9}")
        print(f"{args.shape:<14} {tm.method:<6} {len(fixes):>5} {tm.steps:>5} {tm.s_per_step:>7.3f} "
              f"{(tm.peak_gpu_gib or 0):>8.2f} {tm.loss_last:>9.4f}")
    ok = tm is not None and len(fixes) >= 1 and tm.steps == args.steps and tm.device == "cuda"
    print(json.dumps({"benchmark": "train_oom_gpu", "date": time.strftime("%Y-%m-%d"), "shape": args.shape,
                      "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "limit_gib": args.limit_gib,
                      "asked": {"batch": args.batch, "max_length": args.max_length}, "fixes": fixes,
                      "error": failed, "train": t.metrics if t else {}, "wall_s": round(wall_s, 2), "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
