"""QLoRA training throughput: the tutorial's recipe vs edgetune's default, side by side in one run.

Random-weight models of real shapes (no weights can reach the GPU host): Llama-3.2-1B and Mistral-7B, saved
once as bf16 safetensors and loaded through the real bitsandbytes NF4 path (double quantization, bf16 compute).
LoRA r16 on q/k/v/o, batch 4 x 2048 tokens, AdamW lr 2e-4, bf16 autocast, the same seeded token batches for
every variant. Each variant runs in its own process so peak memory is its own.

Variants:
  tutorial        prepare_model_for_kbit_training (fp32 upcast of embeddings, norms, head; reentrant
                  gradient checkpointing), as in the tutorial users start from
  edgetune-plain  edgetune's loader (no upcast, bf16 around NF4), non-reentrant checkpointing of every layer
  edgetune        edgetune-plain + Liger fused kernels (RMSNorm, SwiGLU, RoPE, fused linear cross-entropy: the
                  [tokens x vocab] logits are never materialised) when liger-kernel is installed
  edgetune-half   edgetune with only every other decoder layer checkpointed (selective recompute)

Trainer-level variants (the issue's comparison: whole recipes through TRL's SFTTrainer, batch 4 x 2048 with
4-step gradient accumulation as in the tutorial, the same pre-tokenised random sequences for both):
  tutorial-trl    the tutorial's Steps 1-4 made to run on TRL 1.16 (SFTConfig instead of the removed
                  arguments), prepare_model_for_kbit_training, TRL's defaults for everything it leaves unset
  edgetune-trl    edgetune's train stage on CUDA: its loader and its own SFTConfig
                  (edgetune.train.args.sft_config), Liger layer kernels when installed, train.offload_activations
                  false (the stage's default, None, is this row below hidden size 4096 and -offload from it)
  edgetune-trl-mbN  the same with N examples per forward pass (train.micro_batch_tokens = N x seq),
                  accumulation making up the batch: less activation memory, fewer tok/s
  edgetune-trl-offload  edgetune-trl with train.offload_activations: the checkpointed layers' saved inputs held
                  in pinned host memory, copied on a side stream (train/offload.py)
  edgetune-trl-offload-hf  the same through transformers' own offload (save_on_cpu, copies on the compute stream)
  edgetune-trl-d0, edgetune-trl-offload-d0  with lora_dropout 0, as Unsloth's fast path
  edgetune-trl-half     edgetune-trl checkpointing every other layer (every_n_layers=2)
  edgetune-trl-compile  edgetune-trl with train.compile_layers: torch.compile of each decoder layer's parts
                  (train/compile.py), Liger kept only for the fused linear cross-entropy (-d0: lora_dropout 0)
  edgetune-trl-compile-liger-d0  the same with Liger's layer kernels left in the compiled layers
  edgetune-trl-compile-offload-d0  compile, streamed offload and lora_dropout 0 together
  unsloth-trl     Unsloth's FastLanguageModel (its NF4 loader, LoRA kernels and offloaded "unsloth" gradient
                  checkpointing) through the same SFTTrainer settings, lora_dropout 0 (its fast path)
  unsloth-trl-d05 the same with lora_dropout 0.05, as every other variant
                  Unsloth pins trl <= 1.15 and datasets < 5, so it runs from its own site folder: pass
                  --unsloth-wheels DIR (wheels of unsloth, unsloth_zoo, trl 1.15, datasets 4.3 and their extra
                  dependencies, fetched where PyPI is reachable with `pip download --no-deps`); the script installs
                  them with `pip install --no-deps --no-index --target` and puts that folder first on the variant's
                  PYTHONPATH. Unsloth reads the tokenizer from the model folder, so --tokenizer is copied there.

Prints a table and one JSON line. Usage:
  python benchmarks/train_throughput.py [--shapes llama-1b,mistral-7b] [--variants ...] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {
    # a smoke-test shape so the script itself can be checked on a CPU
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=True, max_position_embeddings=512),
    "llama-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                     max_position_embeddings=4096, rope_theta=500000.0),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32768, tie_word_embeddings=False,
                       max_position_embeddings=4096, rope_theta=1000000.0, sliding_window=None),
}
VARIANTS = ("tutorial", "edgetune-plain", "edgetune", "edgetune-half")
TRAINER_VARIANTS = ("tutorial-trl", "edgetune-trl", "edgetune-trl-mb4", "edgetune-trl-mb2", "edgetune-trl-mb1",
                    "edgetune-trl-offload", "edgetune-trl-offload-hf", "edgetune-trl-offload-d0", "edgetune-trl-d0",
                    "edgetune-trl-half", "edgetune-trl-compile", "edgetune-trl-compile-d0",
                    "edgetune-trl-compile-liger-d0", "edgetune-trl-compile-offload-d0", "unsloth-trl", "unsloth-trl-d05")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
# Achievable dense bf16 matmul throughput of an H100 (NOTES.md), the denominator of the MFU column
PEAK_FLOPS = 790e12


def matmul_params(shape: str) -> int:
    """Weights that take part in a matmul per token: every layer's projections and the LM head (tied or not).
    MFU is 6 x this x tokens/s over PEAK_FLOPS: forward, recompute and input-gradient matmuls of the frozen base
    (2N each; no weight gradients but LoRA's, which are negligible); attention scores not counted."""
    c = SHAPES[shape]
    h, i, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    return layers * (2 * h * h + 2 * h * kv + 3 * h * i) + c["vocab_size"] * h


def make_model(shape: str, root: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = root / shape
    if (out / "config.json").is_file():
        return out
    cfg = dict(SHAPES[shape])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    return out


def make_tokenizer(shape: str, model_dir: Path) -> Path:
    """A word-level tokenizer with exactly the shape's vocabulary, saved in the model folder.

    The batches are pre-tokenised random ids, so only the special tokens matter; a real tokenizer of another
    model would disagree with the shape's vocabulary size (Unsloth checks it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({f"t{i}": i for i in range(len(specials), SHAPES[shape]["vocab_size"])})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  model_max_length=SHAPES[shape]["max_position_embeddings"])
    tok.save_pretrained(model_dir)
    return model_dir


def run_trainer_variant(model_dir: Path, shape: str, variant: str, steps: int, warmup: int, batch: int, seq: int,
                        accum: int, tokenizer: Path) -> dict:
    """One whole recipe through SFTTrainer; step times from a callback that synchronises the GPU."""
    import tempfile

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    tok.pad_token = tok.eos_token  # the tutorial's Step 1
    vocab = SHAPES[shape]["vocab_size"]
    gen = torch.Generator().manual_seed(1234)
    rows = torch.randint(0, vocab, (batch * accum * (warmup + steps), seq), generator=gen)
    dataset = Dataset.from_dict({"input_ids": rows.tolist()})
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM", target_modules=TARGETS)
    out = tempfile.mkdtemp(prefix="bench-trainer-")
    total = warmup + steps
    extra_callbacks: list = []
    if variant == "tutorial-trl":
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=bnb, device_map="auto")
        model = get_peft_model(prepare_model_for_kbit_training(model), lora)
        args = SFTConfig(output_dir=out, num_train_epochs=3, per_device_train_batch_size=batch,
                         gradient_accumulation_steps=accum, learning_rate=2e-4, bf16=cuda, logging_steps=1,
                         save_strategy="no", warmup_steps=0.03, lr_scheduler_type="cosine", report_to="none",
                         max_length=seq, max_steps=total, use_cpu=not cuda, disable_tqdm=True)
        liger = False
    elif variant.startswith("unsloth"):
        from unsloth import FastLanguageModel  # imported first in this process (see main), as Unsloth requires

        model, _ = FastLanguageModel.from_pretrained(model_name=str(model_dir), max_seq_length=seq,
                                                     dtype=torch.bfloat16, load_in_4bit=True)
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=32, target_modules=TARGETS, bias="none",
                                                 lora_dropout=0.05 if variant.endswith("-d05") else 0.0,
                                                 use_gradient_checkpointing="unsloth", random_state=0)
        args = SFTConfig(output_dir=out, per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                         learning_rate=2e-4, bf16=cuda, logging_steps=1, save_strategy="no", report_to="none",
                         max_length=seq, max_steps=total, disable_tqdm=True, optim="adamw_torch")
        liger = False
    else:
        import importlib.util

        from edgetune.config import TrainConfig
        from edgetune.train import compile as layer_compile
        from edgetune.train import offload
        from edgetune.train.args import sft_config
        from edgetune.train.base import load_model as _load_model

        liger = cuda and importlib.util.find_spec("liger_kernel") is not None
        if variant.endswith("-d0"):
            lora.lora_dropout = 0.0
        model = get_peft_model(_load_model(model_dir, "qlora", cuda=cuda), lora)
        micro = variant.rpartition("-mb")[2] if "-mb" in variant else None
        streamed = "-offload" in variant and not variant.endswith("-hf")
        compiled = "-compile" in variant
        cfg = TrainConfig(batch_size=batch, grad_accum=accum, max_length=seq, learning_rate=2e-4, max_steps=total,
                          micro_batch_tokens=int(micro) * seq if micro else None,
                          offload_activations=streamed,  # train.offload_activations
                          compile_layers=compiled)  # train.compile_layers
        args = sft_config(cfg, out, cuda=cuda, liger=liger)
        if compiled and "-liger" not in variant:  # -liger: Liger's layer kernels inside the compiled layers too
            layer_compile.keep_liger_off_the_layers(args)  # as the train stage does
        # as the train stage adds them
        extra_callbacks = [*offload.callbacks(cfg.offload_activations, cuda), *layer_compile.callbacks(compiled)]
        if variant.endswith("-hf"):  # transformers' own offload (save_on_cpu on the compute stream)
            args.gradient_checkpointing_kwargs = {**(args.gradient_checkpointing_kwargs or {}), "offload": True}
        if variant.endswith("-half") and args.gradient_checkpointing:
            args.gradient_checkpointing_kwargs = {**(args.gradient_checkpointing_kwargs or {}), "every_n_layers": 2}
    times: list[float] = []
    losses: list[float] = []

    class _Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                           callbacks=[_Clock(), *extra_callbacks])
    trainer.train()
    measured = times[warmup:]
    from torch._dynamo.utils import counters  # what torch.compile did: graphs traced, graph breaks

    tok_per_s = batch * accum * seq * len(measured) / sum(measured)
    return {"shape": shape, "variant": variant, "liger": liger,
            "liger_config": getattr(args, "liger_kernel_config", None) if liger else None,
            "tok_per_s": tok_per_s, "mfu": 6 * matmul_params(shape) * tok_per_s / PEAK_FLOPS,
            "warmup_s": [round(t, 2) for t in times[:warmup]],
            "compiled_graphs": counters["stats"].get("unique_graphs", 0),
            "graph_breaks": sum(counters["graph_break"].values()), "optim": str(args.optim),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
            "s_per_step": sum(measured) / len(measured), "losses": [round(v, 4) for v in losses], "steps": steps,
            "batch": batch, "accum": accum, "seq": seq, "micro_batch": args.per_device_train_batch_size,
            "accum_steps": args.gradient_accumulation_steps}


def run_variant(model_dir: Path, shape: str, variant: str, steps: int, warmup: int, batch: int, seq: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    liger = False
    if variant == "tutorial":
        from peft import prepare_model_for_kbit_training

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=bnb, device_map={"": 0})
        model = prepare_model_for_kbit_training(model)
    else:
        if variant in ("edgetune", "edgetune-half"):
            try:
                import liger_kernel.transformers as lk

                patch = {"llama": lk.apply_liger_kernel_to_llama, "mistral": lk.apply_liger_kernel_to_mistral}
                patch[SHAPES[shape]["model_type"]](rope=True, rms_norm=True, swiglu=True,
                                                   fused_linear_cross_entropy=True, cross_entropy=False)
                liger = True
            except ImportError:
                pass
        from edgetune.train.base import load_model as _load_model  # the train stage's own loader: NF4, bf16, no fp32 upcast

        model = _load_model(model_dir, "qlora", cuda=True)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        if variant == "edgetune-half":
            layers = model.model.layers
            for i, layer in enumerate(layers):
                layer.gradient_checkpointing = i % 2 == 0
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    gen = torch.Generator().manual_seed(1234)
    vocab = SHAPES[shape]["vocab_size"]
    # a small fixed pool of sequences, revisited, so the loss can fall and curves can be compared
    pool = torch.randint(0, vocab, (4 * batch, seq), generator=gen)
    losses, times = [], []
    for step in range(warmup + steps):
        x = pool[(step * batch) % len(pool):][:batch].cuda()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    measured = times[warmup:]
    return {"shape": shape, "variant": variant, "liger": liger, "tok_per_s": batch * seq * len(measured) / sum(measured),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "s_per_step": sum(measured) / len(measured),
            "losses": [round(v, 4) for v in losses], "steps": steps, "batch": batch, "seq": seq}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="llama-1b,mistral-7b")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--accum", type=int, default=4, help="Gradient accumulation of the trainer-level variants.")
    ap.add_argument("--tokenizer", type=Path, help="A tokenizer folder for the trainer-level variants; 'synthetic' "
                    "(the default) makes a word-level one of the shape's vocabulary size in the model folder.",
                    default=Path("synthetic"))
    ap.add_argument("--root", type=Path, default=Path("/tmp/edgetune-bench-models"))
    ap.add_argument("--unsloth-wheels", type=Path, help="Wheels for the unsloth variants (see the docstring).")
    ap.add_argument("--variant-timeout", type=int, default=900, help="Seconds one variant may run.")
    ap.add_argument("--one", nargs=2, metavar=("SHAPE", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        shape, variant = args.one
        if variant.startswith("unsloth"):
            import unsloth  # noqa: F401  -- must be imported before transformers/trl to patch them
        if variant in TRAINER_VARIANTS:
            result = run_trainer_variant(args.root / shape, shape, variant, args.steps, args.warmup, args.batch,
                                         args.seq, args.accum, args.tokenizer)
        else:
            result = run_variant(args.root / shape, shape, variant, args.steps, args.warmup, args.batch, args.seq)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    import torch
    import transformers
    import peft
    import bitsandbytes

    rows = []
    unsloth_env = dict(os.environ)
    if args.unsloth_wheels:
        site = args.root / "unsloth-site"
        if not site.is_dir():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                            str(site), *map(str, sorted(args.unsloth_wheels.glob("*.whl")))], check=True)
        unsloth_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        unsloth_env.update(HF_HUB_OFFLINE="1", UNSLOTH_DISABLE_STATISTICS="1")
    for shape in args.shapes.split(","):
        model_dir = make_model(shape, args.root)
        # Unsloth loads the tokenizer from the model folder
        if str(args.tokenizer) == "synthetic":
            tokenizer = make_tokenizer(shape, model_dir)
        else:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(model_dir)
            tokenizer = model_dir
        torch.cuda.empty_cache()
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--one", shape, variant, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq), "--root", str(args.root),
                   "--accum", str(args.accum), "--tokenizer", str(tokenizer)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.variant_timeout,
                                      env=unsloth_env if variant.startswith("unsloth") else None)
            except subprocess.TimeoutExpired as exc:
                rows.append({"shape": shape, "variant": variant,
                             "error": f"timed out after {args.variant_timeout} s: {str(exc.stderr or '')[-400:]}"})
                print(json.dumps(rows[-1])[:400], file=sys.stderr, flush=True)
                continue
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode or not lines:
                rows.append({"shape": shape, "variant": variant, "error": (done.stderr or done.stdout)[-600:]})
            else:
                rows.append(json.loads(lines[-1][7:]))
            print(json.dumps(rows[-1])[:400], file=sys.stderr, flush=True)
    # each variant is compared with the baseline of its own level (hand loop vs whole trainer recipe)
    base = {(r["shape"], r["variant"] in TRAINER_VARIANTS): r for r in rows
            if r.get("variant") in ("tutorial", "tutorial-trl") and "error" not in r}
    print(f"{'shape':<11} {'variant':<17} {'micro':>5} {'tok/s':>8} {'x tut':>6} {'peak GiB':>9} {'mem/tut':>8} "
          f"{'loss first':>10} {'loss last':>9} {'MFU':>5} {'warmup s':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:<11} {r['variant']:<17} ERROR {r['error'][-200:]!r}")
            continue
        t = base.get((r["shape"], r["variant"] in TRAINER_VARIANTS))
        speed = r["tok_per_s"] / t["tok_per_s"] if t else float("nan")
        mem = r["peak_gib"] / t["peak_gib"] if t else float("nan")
        print(f"{r['shape']:<11} {r['variant']:<17} {r.get('micro_batch', r['batch']):>5} {r['tok_per_s']:>8.0f} {speed:>6.2f} {r['peak_gib']:>9.1f} "
              f"{mem:>8.2f} {r['losses'][0]:>10.4f} {r['losses'][-1]:>9.4f} {r.get('mfu', float('nan')):>5.2f} "
              f"{sum(r.get('warmup_s') or [float('nan')]):>9.1f}")
    print(json.dumps({"benchmark": "train_throughput", "date": time.strftime("%Y-%m-%d"),
                      "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
                      "transformers": transformers.__version__, "peft": peft.__version__,
                      "bitsandbytes": bitsandbytes.__version__, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
