"""`edgetune build`: every stage in order, each skipped when its cached artifact still matches.

data → base → train → merge → GGUF F16 → quantize (the target's list) → bundle → evals (base, GPU build, every
GGUF; same items, same token ids) → report. Cheap checks (target, llama.cpp tools, dataset) run first, so bad
input fails before any heavy work. Writes `<out_dir>/runs/<target>/` (report.md, report.json, run.json).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune import __version__, basemodel, bundle, data, merge, train
from edgetune.artifacts import Artifact, Store, write_json
from edgetune.config import BuildConfig
from edgetune.constants import Quant
from edgetune.evals import stage as evals
from edgetune.export import stage as export
from edgetune.llamacpp import load_tools
from edgetune.progress import NullProgress, Progress
from edgetune.report.render import BASE_BUILD, GPU_BUILD, build_report, write_report
from edgetune.targets import get_target

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    run_dir: Path
    bundle_dir: Path
    tarball: Path
    report_md: Path
    report_json: Path
    report: dict[str, Any]
    stages: dict[str, Artifact] = field(default_factory=dict)

    @property
    def reused(self) -> list[str]:
        return [name for name, a in self.stages.items() if a.cached]

    @property
    def ran(self) -> list[str]:
        return [name for name, a in self.stages.items() if not a.cached]


def model_name(cfg: BuildConfig) -> str:
    def stem(source: str) -> str:
        tail = source.split(":", 1)[-1].rstrip("/").split("/")[-1]
        return re.sub(r"\.(gguf|jsonl|json|csv)$", "", tail, flags=re.I)

    raw = f"{stem(cfg.model.source)}-{stem(cfg.data.source)}"
    return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-")


def build(cfg: BuildConfig, home: Path, progress: Progress | None = None) -> BuildResult:
    """Run the whole pipeline for `cfg`. Raises the stage's EdgetuneError subclass on bad input or failure."""
    progress = progress or NullProgress()
    target = get_target(cfg.target)
    quants = list(dict.fromkeys(cfg.export.quants or target.quants))
    tools = load_tools(home)
    store = Store(cfg.out_dir / "store")
    stages: dict[str, Artifact] = {}

    stages["data"] = data_art = data.run(cfg.data, store)
    stages["base"] = base = basemodel.run(cfg.model, store)
    stages["train"] = trained = train.run(cfg.train, base, data_art, store, threads=cfg.threads, progress=progress)
    stages["merge"] = merged = merge.run(base, trained, store)
    name = model_name(cfg)
    provenance = {
        "base": {"source": cfg.model.source, "sha256": base.outputs["source_sha256"]},
        "data": {"source": cfg.data.source, "artifact": data_art.key},
        "adapter": {"artifact": trained.key, "method": trained.metrics.get("method")},
        "train": cfg.train.model_dump(),
        "edgetune": __version__,
    }
    metadata = {"general.description": f"{name}: fine-tuned by edgetune {__version__} (adapter {trained.key[:12]})",
                "general.source.url": cfg.model.source if "/" in cfg.model.source else ""}
    stages["gguf-F16"] = f16 = export.convert(merged, tools, store, name=name,
                                              metadata={k: v for k, v in metadata.items() if v})
    ggufs = export.quantize(f16, [q for q in quants if q != Quant.F16], tools, store, threads=cfg.threads)
    stages.update({f"gguf-{q.value}": a for q, a in ggufs.items()})
    llama_cpp = {"llama-cpp-python": tools.version, "llama.cpp": tools.revision}
    stages["bundle"] = bundled = bundle.run(target, {q: ggufs[q] if q != Quant.F16 else f16 for q in quants},
                                            provenance, llama_cpp, store, model_name=name)

    report = _evaluate(cfg, base, merged, f16, ggufs, data_art, store, stages, progress,
                       context={"target": target.name, "model": name, "base": cfg.model.source,
                                "data": cfg.data.source, "method": trained.metrics.get("method"),
                                "llama.cpp": tools.revision[:12], "edgetune": __version__,
                                "train_loss": f"{trained.metrics['loss_first']:.3f} → {trained.metrics['loss_last']:.3f}"})
    run_dir = cfg.out_dir / "runs" / target.name
    report_json, report_md = write_report(report, run_dir)
    write_json(run_dir / "run.json", {"config": cfg.model_dump(mode="json"),
                                      "stages": {k: str(a.path) for k, a in stages.items()}})
    bundle_dir = bundled.path / bundled.outputs["bundle"]
    return BuildResult(run_dir, bundle_dir, bundled.path / bundled.outputs["tarball"], report_md, report_json,
                       report, stages)


def _evaluate(cfg, base, merged, f16, ggufs, data_art, store, stages, progress, context) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from edgetune.evals.forgetting import mmlu_items
    from edgetune.runtimes import HFRuntime, LlamaCppRuntime

    tokenizer = AutoTokenizer.from_pretrained(basemodel.model_dir(base))
    items = evals.task_items(data.read_examples(data_art.file("heldout")), tokenizer)
    mc = mmlu_items(tokenizer, n_items=cfg.eval.mmlu_items, seed=cfg.eval.seed) if cfg.eval.mmlu_items else []
    threads = cfg.threads

    def hf(path: Path):
        return lambda: HFRuntime(path)

    def gguf(art: Artifact):
        return lambda: LlamaCppRuntime(export.gguf_path(art), n_ctx=1024, n_threads=threads)

    base_dir, merged_dir = basemodel.model_dir(base), merged.path / merged.outputs["model_dir"]
    runs = [(BASE_BUILD, "base (HF fp32)", base, hf(base_dir), _weights_bytes(base_dir)),
            (GPU_BUILD, "GPU build (HF fp32, merged)", merged, hf(merged_dir), _weights_bytes(merged_dir))]
    runs.append(("F16", "GGUF", f16, gguf(f16), f16.metrics["size_bytes"]))
    runs += [(q.value, "GGUF", a, gguf(a), a.metrics["size_bytes"]) for q, a in ggufs.items() if q != Quant.F16]
    if threads:
        import torch

        torch.set_num_threads(threads)
    task_arts, mc_arts, builds = {}, {}, []
    for build_name, kind, art, opener, size in runs:
        task_arts[build_name] = stages[f"eval-{build_name}"] = evals.run_task(
            build_name, art.key, opener, items, tokenizer, store, max_new_tokens=cfg.eval.max_new_tokens,
            progress=progress)
        if mc:
            mc_arts[build_name] = stages[f"mmlu-{build_name}"] = evals.run_forgetting(
                build_name, art.key, opener, mc, store, progress=progress)
        builds.append({"name": build_name, "kind": kind, "size_bytes": size})
    return build_report(title=f"edgetune build: {context['model']} for {context['target']}", builds=builds,
                        task=task_arts, forgetting=mc_arts, context=context)


def _weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
