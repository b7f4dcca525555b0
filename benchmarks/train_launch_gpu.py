"""`edgetune train --gpus N` on real GPUs: the train stage under `accelerate launch` (DDP, or FSDP with --fsdp)
against the same stage in one process, on a random-weight Llama of a real shape with SmolLM2's tokenizer.

Checks that N processes really shared the work (N x batch examples per step, so the epoch advances N times as
fast) and saved a whole adapter (same tensors and shapes as one process's, every LoRA B trained), and reports
s/step for both. Prints a table and one JSON line; exit 0 when both runs trained.

  python benchmarks/train_launch_gpu.py --tokenizer DIR [--gpus 2] [--shape smollm2-135m] [--steps 20] [--fsdp]
                                        [--method lora|qlora]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from train_oom_gpu import long_rows
from train_stage_gpu import SHAPES, random_llama


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fsdp", action="store_true")
    ap.add_argument("--method", default="lora", choices=["lora", "qlora"],
                    help="qlora: each rank's NF4 base (bitsandbytes), packed in bf16 storage under FSDP")
    args = ap.parse_args()

    import torch
    from edgetune import basemodel, data
    from edgetune.artifacts import Store
    from edgetune.config import DataConfig, ModelConfig, TrainConfig
    from edgetune.train.launch import train_adapter

    work = Path(tempfile.mkdtemp(prefix="edgetune-launch-"))
    random_llama(args.tokenizer, args.shape, work / "base")
    (work / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long_rows(1034, n_words=200)))
    cfg = TrainConfig(method=args.method, batch_size=8, max_steps=args.steps, learning_rate=1e-3, eval_items=0,
                      save_steps=0, max_length=512)
    from safetensors.torch import load_file

    results, shapes = {}, {}
    for n in (1, args.gpus):
        store = Store(work / f"store-{n}")
        d = data.run(DataConfig(source=str(work / "data.jsonl"), heldout_size=10, train_size=None), store)
        b = basemodel.run(ModelConfig(source=str(work / "base")), store)
        started = time.time()
        t = train_adapter(cfg, b, d, store, gpus=n, fsdp=args.fsdp if n > 1 else None)
        rows = [json.loads(line) for line in t.artifact.file("log").read_text().splitlines()]
        tensors = load_file(t.artifact.file("adapter") / "adapter_model.safetensors")
        shapes[n] = {k: tuple(v.shape) for k, v in tensors.items()}
        b_trained = all(v.abs().max() > 0 for k, v in tensors.items() if "lora_B" in k)
        tm = t.artifact.training  # the typed train metrics (edgetune.outputs.TrainMetrics)
        results[n] = {"strategy": t.strategy, "wall_s": round(time.time() - started, 1),
                      "epoch_at_end": rows[-1]["epoch"], "adapter_tensors": len(tensors), "lora_b_trained": b_trained,
                      "steps": tm.steps, "s_per_step": tm.s_per_step, "loss_first": tm.loss_first,
                      "loss_last": tm.loss_last, "peak_gpu_gib": tm.peak_gpu_gib, "tokens_per_s": tm.tokens_per_s}
    print(f"{'gpus':>4} {'strategy':<8} {'steps':>5} {'epoch':>6} {'s/step':>7} {'wall s':>7} {'loss first':>10} "
          f"{'loss last':>9}")
    for n, r in results.items():
        print(f"{n:>4} {r['strategy']:<8} {r['steps']:>5} {r['epoch_at_end']:>6.3f} {r['s_per_step']:>7.3f} "
              f"{r['wall_s']:>7.1f} {r['loss_first']:>10.4f} {r['loss_last']:>9.4f}")
    one, many = results[1], results[args.gpus]
    shared = abs(many["epoch_at_end"] - args.gpus * one["epoch_at_end"]) < 1e-6
    # the adapter N processes saved (sharded under FSDP) has the same tensors and shapes as one process's
    same_adapter = shapes[1] == shapes[args.gpus] and one["lora_b_trained"] and many["lora_b_trained"]
    diff = {"only_1": sorted(set(shapes[1]) - set(shapes[args.gpus]))[:3],
            "only_n": sorted(set(shapes[args.gpus]) - set(shapes[1]))[:3],
            "shapes": [(k, shapes[1][k], shapes[args.gpus][k]) for k in shapes[1]
                       if k in shapes[args.gpus] and shapes[1][k] != shapes[args.gpus][k]][:3]}
    ok = shared and same_adapter and many["steps"] == one["steps"] == args.steps and many["loss_last"] < many["loss_first"]
    print(json.dumps({"benchmark": "train_launch_gpu", "date": time.strftime("%Y-%m-%d"), "shape": args.shape,
                      "method": args.method,
                      "gpu": torch.cuda.get_device_name(0), "gpus": args.gpus, "fsdp": args.fsdp,
                      "results": results, "work_shared": shared, "same_adapter": same_adapter, "adapter_diff": diff,
                      "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
