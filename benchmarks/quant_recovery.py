"""Winning back what quantization costs, on a finished build (the embedded default: SST-2 labels; or a generative
task, e.g. `--data evals/tasks/arith-number.jsonl`): the held-out task score and fidelity KLD vs file size for
plain quants, imatrix quants, searched per-tensor mixes (export/mix.py) and a recovery LoRA trained against the
quantized base (export/recovery.py). Items are scored as the build scored them: the run's own metric and token
budget (eval.metric, eval.max_new_tokens; `auto` resolved the same way) and its eval.margin for the verdicts.

Needs a finished default `edgetune build` (its merged model, F16 GGUF, imatrix and data are read through the
run's run.json) and llama.cpp's native tools. Work files go under --work and are reused when present, so the
phases can run one at a time: search, adapter, eval. Prints a table and a JSON line; --plot writes the Pareto
plot (report/plots.py).

  python benchmarks/quant_recovery.py [--run edgetune-out/runs/rpi5-8gb] [--work /tmp/quant-recovery] [--phase all]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

CALIB_PROMPTS = 12  # training prompts scoring the sensitivity search (never held-out ones)
BANDS = 3
HIGH = "Q8_0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("edgetune-out/runs/rpi5-8gb"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/quant-recovery"))
    ap.add_argument("--phase", choices=["search", "adapter", "eval", "all"], default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fidelity-prompts", type=int, default=20)
    ap.add_argument("--heldout", type=int, default=0, help="held-out items scored (0: all)")
    ap.add_argument("--adapter-steps", type=int, default=120)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ctx = _Context(args)
    if args.phase in ("search", "all"):
        search(ctx)
    if args.phase in ("adapter", "all"):
        adapter(ctx)
    if args.phase in ("eval", "all"):
        evaluate(ctx)
    return 0


class _Context:
    def __init__(self, args):
        from transformers import AutoTokenizer

        from edgetune import data
        from edgetune.evals.stage import plan_task, task_items
        from edgetune.metric_spec import MetricSpec
        from edgetune.home import edgetune_home
        from edgetune.llamacpp import load_tools

        self.args = args
        self.work: Path = args.work
        root = args.run.parent.parent.parent  # the build's out_dir holds runs/ and store/
        run = json.loads((args.run / "run.json").read_text())
        stages = run["stages"]
        self.stage = {k: root / v for k, v in stages.items()}
        self.merged = self.stage["merge"] / "model"
        self.f16 = self.stage["gguf-F16"] / "model.gguf"
        self.imatrix = self.stage["imatrix"] / "imatrix.gguf"
        self.tools = load_tools(edgetune_home())
        self.tok = AutoTokenizer.from_pretrained(self.merged)
        self.train_examples = data.read_examples(self.stage["data"] / "train.jsonl")
        self.heldout = task_items(data.read_examples(self.stage["data"] / "heldout.jsonl"), self.tok)
        self.train_items = task_items(self.train_examples, self.tok)
        ev = run["config"]["eval"]
        self.margin: float = ev["margin"]
        metric = ev["metric"] if isinstance(ev["metric"], dict) else {"name": ev["metric"]}
        self.plan = plan_task(self.heldout, self.tok, MetricSpec.model_validate(metric), ev["max_new_tokens"])

    def sequences(self, n: int) -> list[list[int]]:
        """Training prompts with their answers, as the search's calibration sequences."""
        eos = self.tok.convert_tokens_to_ids("<|im_end|>")
        return [list(i.prompt_ids) + self.tok(i.reference, add_special_tokens=False)["input_ids"] + [eos]
                for i in self.train_items[:n]]


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def search(ctx: _Context) -> None:
    """Sensitivity of each group at Q4_0 and Q5_0 from an all-Q8_0 file, then the knapsack at two budgets."""
    from edgetune.constants import Quant
    from edgetune.evals.fidelity import kld_and_top1
    from edgetune.export.imatrix import quantize_with_imatrix
    from edgetune.export.mix import Mix, choose_mix, default_low_types, measure_sensitivity, quantize_mix, tensor_groups
    from edgetune.runtimes import HFRuntime, LlamaCppRuntime

    out = ctx.work / "search.json"
    if out.is_file():
        return
    seqs = ctx.sequences(CALIB_PROMPTS)
    with HFRuntime(ctx.merged) as ref:
        ref_logits = [ref.logits(s) for s in seqs]
    groups = tensor_groups(ctx.f16, bands=BANDS)
    tmp = ctx.work / "probe.gguf"

    def make(mix: Mix) -> Path:
        return quantize_mix(ctx.f16, tmp, groups, mix, ctx.tools, imatrix=ctx.imatrix, threads=ctx.args.threads)

    def score(path: Path) -> float:
        with LlamaCppRuntime(path, n_ctx=512, n_threads=ctx.args.threads) as edge:
            kl = [kld_and_top1(r, edge.logits(s))[0][1:] for r, s in zip(ref_logits, seqs, strict=True)]
        return float(np.concatenate(kl).mean())

    started = time.perf_counter()
    sens = measure_sensitivity(groups, default_low_types, HIGH, make, score,
                               on_step=lambda n, d: _log(f"{n}: {d:+.5f}"))
    tmp.unlink(missing_ok=True)
    # the size of everything outside the groups (norms, metadata): measured on plain Q4_0 + imatrix
    q4 = ctx.work / "Q4_0-im.gguf"
    if not q4.is_file():
        quantize_with_imatrix(ctx.f16, q4, Quant.Q4_0, ctx.imatrix, ctx.tools, threads=ctx.args.threads)
    q4_groups = {g.name: ("Q8_0" if g.kind == "token_embd" else "Q4_0") for g in groups}
    # three layers' ffn_down are Q4_1 in llama.cpp's Q4_0 mixture: count them as Q4_0 and absorb the rest here
    other = q4.stat().st_size - sum(g.size_bytes(q4_groups[g.name]) for g in groups)
    mixes = {}
    for label, factor in (("auto:Q4_0-size", 1.0), ("auto:Q4_0-size+10%", 1.10)):
        mix = choose_mix(groups, sens, q4.stat().st_size * factor, base="Q4_0", other_bytes=other)
        mixes[label] = {"types": dict(mix.types), "predicted_kld_increase": mix.predicted_kld_increase,
                        "predicted_size_bytes": mix.predicted_size_bytes, "describe": mix.describe()}
        _log(f"{label}: {mix.describe()} predicted +{mix.predicted_kld_increase:.4f} KLD, "
             f"{mix.predicted_size_bytes / 1e6:.1f} MB")
    out.write_text(json.dumps({
        "groups": [{"name": g.name, "n_weights": g.n_weights} for g in groups],
        "base_kld": sens.base_kld, "high": HIGH,
        "increase": {f"{g}={t}": v for (g, t), v in sens.increase.items()},
        "other_bytes": other, "mixes": mixes, "search_s": time.perf_counter() - started,
        "calibration_prompts": CALIB_PROMPTS,
    }, indent=1))


def adapter(ctx: _Context) -> None:
    """The recovery LoRA on the build's own Q4_0 (+ imatrix) file, distilled from the GPU build on every
    training prompt, converted to a LoRA GGUF."""
    from edgetune.export.lora import convert_lora
    from edgetune.export.recovery import RecoveryConfig, train_recovery

    out = ctx.work / "recovery.json"
    if out.is_file():
        return
    cfg = RecoveryConfig(steps=ctx.args.adapter_steps, learning_rate=2e-3)
    seqs = ctx.sequences(len(ctx.train_items))
    res = train_recovery(ctx.merged, ctx.stage["gguf-Q4_0"] / "model.gguf", seqs, ctx.work / "recovery-Q4_0",
                         cfg, on_step=lambda s, v: _log(f"step {s}: KL {v:.4f}"))
    gguf = convert_lora(res.adapter_dir, ctx.merged, ctx.work / "recovery-Q4_0.gguf", ctx.tools)
    out.write_text(json.dumps({"rank": cfg.rank, "alpha": cfg.alpha, "steps": cfg.steps, "batch": cfg.batch_size,
                               "lr": cfg.learning_rate, "sequences": len(seqs), "first_kld": res.first_kld,
                               "last_kld": res.last_kld, "train_s": res.train_s,
                               "lora_gguf_bytes": gguf.stat().st_size}, indent=1))


def _variants(ctx: _Context) -> list[tuple[str, str, Path, Path | None]]:
    """(name, kind, GGUF, LoRA GGUF) for every file compared, building the missing ones."""
    from edgetune.constants import Quant
    from edgetune.export.imatrix import quantize_with_imatrix
    from edgetune.export.mix import Mix, quantize_mix, tensor_groups
    from edgetune.export.quantize import quantize_gguf

    t = ctx.args.threads
    # F16 and Q5_0 are left out: each variant costs minutes on the shared 2-core machine, and the default
    # build's report already holds F16 (-0.4 pts vs the GPU build)
    rows: list[tuple[str, str, Path, Path | None]] = []
    for q in ("Q8_0", "Q4_0"):
        plain = ctx.work / f"{q}.gguf"
        if not plain.is_file():
            quantize_gguf(ctx.f16, plain, Quant(q), ctx.tools, nthread=t)
        rows.append((q, "plain", plain, None))
    # the build's own Q4_0 (made with its imatrix): the base the recovery adapter is trained on
    rows.append(("Q4_0+imatrix", "imatrix", ctx.stage["gguf-Q4_0"] / "model.gguf", None))
    iq4 = ctx.work / "IQ4_NL-im.gguf"
    if not iq4.is_file():
        quantize_with_imatrix(ctx.f16, iq4, Quant.IQ4_NL, ctx.imatrix, ctx.tools, threads=t)
    rows.append(("IQ4_NL+imatrix", "imatrix", iq4, None))
    search_path = ctx.work / "search.json"
    if search_path.is_file():
        found = json.loads(search_path.read_text())
        groups = tensor_groups(ctx.f16, bands=BANDS)
        for label, mix in found["mixes"].items():
            path = ctx.work / f"{label.replace(':', '-').replace('%', 'pct').replace('+', 'p')}.gguf"
            if not path.is_file():
                quantize_mix(ctx.f16, path, groups, Mix("Q4_0", mix["types"]), ctx.tools, imatrix=ctx.imatrix,
                             threads=t)
            rows.append((label, "searched mix", path, None))
    lora = ctx.work / "recovery-Q4_0.gguf"
    if lora.is_file():
        rows.append(("Q4_0+imatrix+recovery", "recovery adapter", ctx.stage["gguf-Q4_0"] / "model.gguf", lora))
    return rows


def evaluate(ctx: _Context) -> None:
    """The held-out task score with the run's metric (paired with the GPU build), fidelity (20 held-out prompts,
    64 tokens, as the export gates), size and decode tok/s for every variant."""
    from edgetune.evals.fidelity import compare, references
    from edgetune.evals.metrics import make_metric
    from edgetune.evals.stage import stop_ids
    from edgetune.evals.task import run_task_metric
    from edgetune.runtimes import HFRuntime, LlamaCppRuntime

    items = ctx.heldout[: ctx.args.heldout or None]
    stops = stop_ids(ctx.tok)
    decode = lambda ids: ctx.tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    metric = make_metric(ctx.plan.metric)

    def score(rt):
        return run_task_metric(rt, items, metric, decode=decode, max_new_tokens=ctx.plan.max_new_tokens,
                               stop_ids=stops)

    _log(f"metric {ctx.plan.metric.name} ({ctx.plan.why}), {ctx.plan.max_new_tokens} new tokens, "
         f"margin {ctx.margin}, {len(items)} items")
    fid_items = ctx.heldout[: ctx.args.fidelity_prompts]
    rows = []
    with HFRuntime(ctx.merged) as gpu:
        cached = ctx.work / "eval-gpu.pkl"
        if cached.is_file():
            gpu_task, refs = pickle.loads(cached.read_bytes())
        else:
            gpu_task = score(gpu)
            refs = references(gpu, [(i.id, list(i.prompt_ids)) for i in fid_items], n_tokens=64, stop_ids=stops)
            cached.write_bytes(pickle.dumps((gpu_task, refs)))
        # the item's metric value (0/1 for label and number, graded for json and text), as the report pairs them
        gpu_scores = {r.id: r.score for r in gpu_task.items}
        rows.append({"build": "gpu", "kind": "GPU build", "size_mb": None, "metric": gpu_task.metric,
                     "score": gpu_task.score, "accuracy": gpu_task.accuracy, "n": gpu_task.n,
                     "truncated": gpu_task.truncated})
        for name, kind, path, lora in _variants(ctx):
            done = ctx.work / f"eval-{name.replace(':', '-').replace('%', 'pct').replace('+', 'p')}.json"
            if done.is_file():  # one file per variant: a later run scores only what is new
                rows.append(json.loads(done.read_text()))
                continue
            _log(f"evaluating {name}")
            with LlamaCppRuntime(path, n_ctx=1024, n_threads=ctx.args.threads, lora_path=lora) as edge:
                task = score(edge)
                fid = compare(gpu, edge, refs, stop_ids=stops)
                tok_s = _decode_speed(edge, fid_items[:4])
            scores = {r.id: r.score for r in task.items}
            size = path.stat().st_size + (lora.stat().st_size if lora else 0)
            row = {"build": name, "kind": kind, "size_mb": size / 1e6, "metric": task.metric, "score": task.score,
                   "accuracy": task.accuracy, "n": task.n, "truncated": task.truncated,
                   **_paired(gpu_scores, scores, ctx.margin), "kld_mean": fid.kld_mean,
                   "kld_p99": fid.kld_p99, "top1_agreement": fid.top1_agreement, "decode_tok_s": tok_s}
            done.write_text(json.dumps(row))
            rows.append(row)
            _log(f"{name}: {task.metric} {task.score:.3f} acc {task.accuracy:.3f} kld {fid.kld_mean:.4f} {size / 1e6:.1f} MB {tok_s:.1f} tok/s")
    (ctx.work / "eval.json").write_text(json.dumps(rows, indent=1))
    _print(ctx, rows)


def _paired(ref: dict[str, float], new: dict[str, float], margin: float) -> dict:
    """Paired comparison with the GPU build, as the report does it (report/verdict.py, the run's margin). For a
    graded metric lost/gained count items whose score fell/rose; the CI is the paired bootstrap's."""
    from edgetune.report.stats import mcnemar_exact_p
    from edgetune.report.verdict import paired_verdict

    v = paired_verdict(ref, new, margin=margin)
    lost = sum(1 for i in ref if i in new and new[i] < ref[i])
    gained = sum(1 for i in ref if i in new and new[i] > ref[i])
    return {"lost": lost, "gained": gained, "mcnemar_p": mcnemar_exact_p(lost, gained),
            "delta_pts": 100 * v.diff, "verdict": v.verdict, "verdict_ci_pts": [100 * c for c in v.ci95]}


def _decode_speed(rt, items) -> float:
    """Greedy decode tokens per second over a few prompts (this machine, not the board: relative cost only)."""
    n, took = 0, 0.0
    for it in items:
        t0 = time.perf_counter()
        n += len(rt.generate(list(it.prompt_ids), 32, []))
        took += time.perf_counter() - t0
    return n / took


def _print(ctx: _Context, rows: list[dict]) -> None:
    metric = rows[0].get("metric", "label")
    print(f"metric {metric}, {ctx.plan.max_new_tokens} new tokens, margin {ctx.margin}; 'score' is the metric's "
          f"mean, 'acc' the share fully correct, 'vs GPU' the paired score difference x 100")
    print(f"{'build':<24} {'kind':<17} {'MB':>6} {'score':>6} {'acc':>6} {'vs GPU':>7} {'lost/gained':>11} "
          f"{'p':>6} {'verdict':>12} {'KLD':>7} {'top-1':>6} {'tok/s':>6}")
    for r in rows:
        score = r.get("score", r["accuracy"])  # rows cached before the metric was recorded were label rows
        if r["build"] == "gpu":
            print(f"{'gpu':<24} {r['kind']:<17} {'-':>6} {score:>6.3f} {r['accuracy']:>6.1%}")
            continue
        print(f"{r['build']:<24} {r['kind']:<17} {r['size_mb']:>6.1f} {score:>6.3f} {r['accuracy']:>6.1%} "
              f"{r['delta_pts']:>+7.1f} {r['lost']:>5}/{r['gained']:<5} {r['mcnemar_p']:>6.3f} "
              f"{r['verdict']:>12} {r['kld_mean']:>7.4f} {r['top1_agreement']:>6.1%} {r['decode_tok_s']:>6.1f}")
    extra = {}
    for name in ("search", "recovery"):
        p = ctx.work / f"{name}.json"
        if p.is_file():
            extra[name] = {k: v for k, v in json.loads(p.read_text()).items() if k not in ("groups",)}
    print(json.dumps({"benchmark": "quant_recovery", "date": time.strftime("%Y-%m-%d"),
                      "llama.cpp": ctx.tools.revision, "rows": rows, **extra}))
    if ctx.args.plot:
        from edgetune.report.plots import pareto

        png = pareto(rows)
        if png:
            ctx.args.plot.write_bytes(png)


if __name__ == "__main__":
    sys.exit(main())
