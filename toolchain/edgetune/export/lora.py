"""The adapter as a LoRA GGUF: ship the base once, small adapters after.

Runs llama.cpp's own `convert_lora_to_gguf.py` (same revision as the converter) on the peft adapter folder,
with `--base` pointing at the base model's config, then proves the adapter loads and generates on every
quantized base GGUF (`Llama(..., lora_path=...)`). Writes through a temp file; raises ExportError.

Only plain LoRA and rsLoRA have a llama.cpp form. llama.cpp scales every adapter by alpha / r, peft scales
rsLoRA by alpha / sqrt(r); the converter copies alpha as written, which would ship an rsLoRA adapter sqrt(r)
times too weak and nothing would fail. So rsLoRA is converted from a view whose alpha is alpha * sqrt(r).
DoRA (a magnitude vector) and IA3 (learned scalings) cannot be expressed: they ship merged only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edgetune.errors import ExportError
from edgetune.llamacpp import LlamaCppTools
from edgetune.proc import run_tool

log = logging.getLogger(__name__)


def lora_gguf_supported(adapter_dir: Path) -> str | None:
    """None when llama.cpp can run this adapter unmerged, else the reason it cannot."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if cfg.get("peft_type") != "LORA":
        return f"{cfg.get('peft_type')} adapters have no llama.cpp LoRA form"
    if cfg.get("use_dora"):
        return "DoRA's magnitude vector has no llama.cpp LoRA form"
    return None


def convert_lora(adapter_dir: Path, base_dir: Path, out_path: Path, tools: LlamaCppTools) -> Path:
    """Convert a peft LoRA (or rsLoRA) adapter folder to a GGUF adapter at `out_path`."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{adapter_dir} is not a peft adapter folder (no adapter_config.json)",
                          "point at the train stage's adapter/ folder")
    if why := lora_gguf_supported(adapter_dir):
        raise ExportError(f"{adapter_dir} cannot be a LoRA GGUF: {why}",
                          "ship the merged GGUF (set export.lora_gguf: false)")
    with tempfile.TemporaryDirectory(prefix=".edgetune-lora-view-", dir=out_path.parent) as view:
        return _convert(_llamacpp_scaled(adapter_dir, Path(view)), base_dir, out_path, tools)


def _llamacpp_scaled(adapter_dir: Path, view: Path) -> Path:
    """The adapter folder as llama.cpp must read it: rsLoRA's alpha rescaled so alpha / r is peft's scale."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if not cfg.get("use_rslora"):
        return adapter_dir
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ExportError(f"{adapter_dir}: rsLoRA with per-module ranks or alphas cannot be rescaled for llama.cpp",
                          "ship the merged GGUF (set export.lora_gguf: false)")
    cfg.update(lora_alpha=cfg["lora_alpha"] * math.sqrt(cfg["r"]), use_rslora=False)
    for item in adapter_dir.iterdir():
        if item.name != "adapter_config.json":
            (view / item.name).symlink_to(item.resolve())
    (view / "adapter_config.json").write_text(json.dumps(cfg))
    return view


def _convert(adapter_dir: Path, base_dir: Path, out_path: Path, tools: LlamaCppTools) -> Path:
    fd, tmp_name = tempfile.mkstemp(prefix=".edgetune-lora-", suffix=".gguf.tmp", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        run_tool([sys.executable, tools.lora_converter, adapter_dir, "--base", base_dir, "--outfile", tmp,
                  "--outtype", "f16"], env=tools.env(), error=ExportError,
                 hint=f"llama.cpp {tools.revision[:12]}'s LoRA converter failed; ship the merged GGUF "
                      "(export.lora_gguf: false)")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def check_loads(lora_gguf: Path, base_ggufs: Sequence[Path], prompt_ids: Sequence[int]) -> dict[str, int]:
    """Load the adapter on each base GGUF (in a child process: runtimes.LlamaCppRuntime) and greedily generate
    a token; return tokens generated per base. Raises ExportError when llama.cpp refuses the pair or generates
    nothing, NativeCrash when it dies."""
    from edgetune.errors import ModelError
    from edgetune.runtimes import LlamaCppRuntime

    made = {}
    for base in base_ggufs:
        try:
            with LlamaCppRuntime(base, lora_path=lora_gguf, n_ctx=512) as runtime:
                out = runtime.generate(list(prompt_ids), 1, stop_ids=[])
        except ModelError as exc:
            raise ExportError(f"LoRA GGUF {lora_gguf.name} does not load on {base.name}",
                              "the adapter and base must come from the same model") from exc
        made[base.name] = len(out)
    return made
