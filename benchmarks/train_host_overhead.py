"""Host-side cost of a QLoRA training step: the step of train_throughput.py's model structure (NF4 base, LoRA r16 on
q/k/v/o, non-reentrant checkpointing of every layer) on tensors so small that the device's arithmetic is ~nothing,
so what is left is Python, dispatch and kernel launches: eager vs train.compile_layers (train/compile.py).

Issue 16 says the Llama-3.2-1B shape's step is bound by that overhead, not by FLOPs. Run on the GPU host with
--device cuda and compare ms per layer pass here with the real step's (train_throughput.py: s_per_step / 4
micro-batches / 16 layers): if they are close, the step is host-bound and fewer launches are what can win. On a CPU
the numbers are the Python and dispatch part alone (inductor's CPU kernels run inline, no launches).

Prints a table and one JSON line. Usage:
  python benchmarks/train_host_overhead.py [--device cpu|cuda] [--layers 16] [--steps 20] [--dropout 0.05]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build(device: str, layers: int, hidden: int, dropout: float, root: Path, method: str = "qlora"):
    import torch
    from edgetune.train.base import load_model
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    src = root / f"llama-{layers}x{hidden}"
    if not src.is_dir():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
        LlamaForCausalLM(cfg).save_pretrained(src)
    model = load_model(src, method, cuda=device == "cuda")  # the train stage's own loader (qlora: NF4)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    return model


def measure(model, device: str, tokens: int, steps: int, warmup: int) -> tuple[list[float], list[float]]:
    """(warm-up step seconds, measured step seconds) of forward + backward (the recompute included)."""
    import torch

    ids = torch.randint(0, 256, (1, tokens), generator=torch.Generator().manual_seed(1)).to(device)
    times = []
    for _ in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[:warmup], times[warmup:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", default="eager,compile")
    ap.add_argument("--method", default="qlora", choices=("qlora", "lora"), help="lora: a bf16/fp32 base, no NF4")
    args = ap.parse_args()
    import torch
    import transformers
    from edgetune.train.compile import compile_layer_parts

    root = Path(tempfile.mkdtemp(prefix="host-overhead-"))
    rows = []
    for variant in args.variants.split(","):
        torch._dynamo.reset()
        model = build(args.device, args.layers, args.hidden, args.dropout, root, args.method)
        if variant == "compile":
            compile_layer_parts(model)
        warm, measured = measure(model, args.device, args.tokens, args.steps, args.warmup)
        median = statistics.median(measured)
        rows.append({"variant": variant, "ms_per_step": round(1e3 * median, 2),
                     "ms_per_layer_pass": round(1e3 * median / args.layers, 3),  # forward + recompute + backward
                     "ms_min": round(1e3 * min(measured), 2), "warmup_s": [round(t, 2) for t in warm]})
    print(f"{'variant':<8} {'ms/step (median)':>16} {'ms/layer pass':>13} {'ms/step (min)':>13} {'warm-up s':>9}")
    for r in rows:
        print(f"{r['variant']:<8} {r['ms_per_step']:>16.2f} {r['ms_per_layer_pass']:>13.3f} {r['ms_min']:>13.2f} "
              f"{sum(r['warmup_s']):>9.1f}")
    print(json.dumps({"benchmark": "train_host_overhead", "date": time.strftime("%Y-%m-%d"), "device": args.device,
                      "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                      "torch": torch.__version__, "transformers": transformers.__version__, "layers": args.layers,
                      "hidden": args.hidden, "method": args.method, "tokens": args.tokens, "dropout": args.dropout, "steps": args.steps,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
