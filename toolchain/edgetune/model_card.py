"""Model cards (`README.md` with the hub's YAML front matter) for the merged model and the adapter.

The front matter is written by huggingface_hub's ModelCardData (the hub's own schema: base_model,
base_model_relation, datasets, license, tags, pipeline_tag, library_name), so the hub links the model to its base
and data. The body says what was fine-tuned on what and, when a report exists (`edgetune export`), the eval summary
and the quantization table from report.json. Writes nothing itself; callers place the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgetune import __version__


@dataclass(frozen=True)
class CardInfo:
    """What a card says about where the model came from."""

    base_model: str | None  # a hub id where there is one (the hub links it), else the base's name
    datasets: tuple[str, ...] = ()
    license: str | None = None
    tags: tuple[str, ...] = ("edgetune",)
    title: str = "fine-tuned model"
    method: str = "lora"
    extra: dict[str, Any] = field(default_factory=dict)


def card_text(info: CardInfo, *, relation: str, report: dict[str, Any] | None = None,
              gguf_files: dict[str, str] | None = None, library: str = "transformers") -> str:
    """The README.md text. `relation` is the hub's base_model_relation: "finetune" for the merged model, "adapter"
    for the adapter, "quantized" for GGUFs. `gguf_files` maps quant → file name for the quantization table."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(base_model=info.base_model, base_model_relation=relation,
                         datasets=list(info.datasets) or None, license=info.license,
                         tags=list(dict.fromkeys([*info.tags, info.method])), pipeline_tag="text-generation",
                         library_name=library)
    what = {"finetune": "the merged model (adapter folded into the base weights)",
            "adapter": f"the {info.method} adapter alone (load it on the base model)",
            "quantized": "GGUF files for llama.cpp and Ollama"}.get(relation, relation)
    base = f"`{info.base_model}`" if info.base_model else "its base model"
    lines = [f"---\n{data.to_yaml()}\n---", "", f"# {info.title}", "",
             f"A fine-tune of {base} on {', '.join(f'`{d}`' for d in info.datasets) or 'its data'}, made with "
             f"edgetune {__version__} ({info.method}). This folder holds {what}.", ""]
    if report is not None:
        lines += _eval_section(report, gguf_files or {})
    return "\n".join(lines).rstrip() + "\n"


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "–"


def _eval_section(report: dict[str, Any], gguf_files: dict[str, str]) -> list[str]:
    """The report's builds as a table (accuracy on the held-out items, size, change against the GPU build) and
    its recommendation, so the card carries the numbers the build measured, nothing else."""
    from edgetune.report.schema import Report

    rep = Report.load(report)
    metric = (rep.context.task_metric.metric if rep.context.task_metric is not None else None) or "accuracy"
    lines = ["## Evaluation (from edgetune's report.json)", "",
             f"Held-out items of the fine-tune's own data ({metric}); GGUF rows run in llama.cpp.", "",
             "| build | file | size | accuracy | vs GPU build |", "|---|---|---|---|---|"]
    for row in rep.builds:
        size = f"{row.size_bytes / 1e6:.1f} MB" if row.size_bytes else "–"
        delta = f"{100 * row.delta_vs_gpu:+.1f} pts" if isinstance(row.delta_vs_gpu, (int, float)) else "–"
        file = f"`{gguf_files[row.name]}`" if row.name in gguf_files else "–"
        lines.append(f"| {row.name} ({row.kind or ''}) | {file} | {size} | {_pct(row.accuracy)} | {delta} |")
    rec = rep.recommendation
    if rec is not None:
        lines += ["", f"Recommendation: {rec.quant or 'none'}" + (f" ({rec.reason})" if rec.reason else "")]
    return lines + [""]
