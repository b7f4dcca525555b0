"""The adapter as a LoRA GGUF: ship the base once, small adapters after.

Runs llama.cpp's own `convert_lora_to_gguf.py` (same revision as the converter) on the peft adapter folder,
with `--base` pointing at the base model's config, then proves the adapter loads and generates on every
quantized base GGUF (`Llama(..., lora_path=...)`). Writes through a temp file; raises ExportError.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edgetune.errors import ExportError
from edgetune.llamacpp import LlamaCppTools
from edgetune.proc import run_tool

log = logging.getLogger(__name__)


def convert_lora(adapter_dir: Path, base_dir: Path, out_path: Path, tools: LlamaCppTools) -> Path:
    """Convert a peft LoRA adapter folder to a GGUF adapter at `out_path`."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{adapter_dir} is not a peft adapter folder (no adapter_config.json)",
                          "point at the train stage's adapter/ folder")
    fd, tmp_name = tempfile.mkstemp(prefix=".edgetune-lora-", suffix=".gguf.tmp", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        run_tool([sys.executable, tools.lora_converter, adapter_dir, "--base", base_dir, "--outfile", tmp,
                  "--outtype", "f16"], env=tools.env(), error=ExportError,
                 hint=f"llama.cpp {tools.revision[:12]}'s LoRA converter failed (IA3 and DoRA adapters are "
                      "merged-only for llama.cpp; ship the merged GGUF)")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def check_loads(lora_gguf: Path, base_ggufs: Sequence[Path], prompt_ids: Sequence[int]) -> dict[str, int]:
    """Load the adapter on each base GGUF and greedily generate a few tokens; return tokens generated per base.
    Raises ExportError when llama.cpp refuses the pair or generates nothing."""
    from llama_cpp import Llama

    made = {}
    for base in base_ggufs:
        try:
            llm = Llama(model_path=str(base), lora_path=str(lora_gguf), n_ctx=512, verbose=False)
        except ValueError as exc:
            raise ExportError(f"LoRA GGUF {lora_gguf.name} does not load on {base.name}",
                              "the adapter and base must come from the same model") from exc
        try:
            llm.eval(list(prompt_ids))
            out = [int(llm.scores[llm.n_tokens - 1].argmax())]
        finally:
            llm.close()
        made[base.name] = len(out)
    return made
