"""The merge stage: fold the adapter into a full-precision base, prove the fold changed nothing, and save the result
in the base's own dtype with a model card.

Reads the base artifact (HF folder) and the train artifact (adapter); writes `model/` (safetensors in the base's
dtype: bf16 where the base is bf16, fp32 with `export.merged_dtype: float32` or where the base is fp32, e.g. a
dequantized GGUF, whose values need fp32 to be exact; tokenizer; chat template: the base's, or the fallback training
used where the base has none; README.md, the model card). The merge itself happens in fp32 on the full-precision
base, never on a 4-bit model (merging into NF4 erases the adapter, and a bf16 merge moves logits by up to 3.3:
NOTES.md). Before saving, the merged model's logits are compared with the adapter model's on a probe batch.
`full_precision` gives the fp32 merge back (a temp folder) for the GGUF converter, so GGUFs never go through bf16.
Raises ExportError.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgetune.artifacts import Builder, Store
from edgetune.errors import ExportError
from edgetune.model_card import CardInfo, card_text
from edgetune.outputs import Adapter, BaseModel, MergedModel

log = logging.getLogger(__name__)

KIND = MergedModel.KIND
MAX_LOGIT_DIFF = 1e-3  # fp32 adapter vs merged measured at ~2e-4 on SmolLM2
PROBE = "The quick brown fox jumps over the lazy dog. A review: a charming, often affecting journey."
DTYPES = ("float32", "bfloat16", "float16")
CARD = "README.md"


def base_dtype(model_dir: Path) -> str:
    """The dtype the base's config.json says its weights are in (`dtype`, or the older `torch_dtype`); float32
    when it says none or another one."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return "float32"
    value = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
    return value if value in DTYPES else "float32"


def default_card(base: BaseModel) -> CardInfo:
    """A card from what the base artifact knows: its hub id (when it came from the hub) and licence."""
    hub = base.source_sha256.removeprefix("hub:").rsplit("@", 1)[0] if base.source_sha256.startswith("hub:") else None
    return CardInfo(base_model=hub, license=base.license)


def run(base: BaseModel, trained: Adapter, store: Store, *, dtype: str = "base",
        card: CardInfo | None = None) -> MergedModel:
    """`dtype`: "base" (the base's dtype) or "float32"."""
    if dtype not in ("base", "float32"):
        raise ExportError(f"export.merged_dtype must be 'base' or 'float32', not {dtype!r}", "use one of those")
    save_dtype = base_dtype(base.model_dir) if dtype == "base" else "float32"
    card = card or default_card(base)
    params = {"dtype": save_dtype, "max_logit_diff": MAX_LOGIT_DIFF, "card": asdict(card)}
    inputs = {"base": base.key, "train": trained.key}
    return MergedModel.of(store.stage(KIND, params, inputs,
                                      lambda b: _merge(base, trained, b, save_dtype, card)))


def _merged_fp32(base: BaseModel, trained: Adapter) -> tuple[Any, Any, float]:
    """(merged fp32 model, tokenizer, max |logit diff| against the adapter model)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = base.model_dir
    tok = AutoTokenizer.from_pretrained(src)
    if trained.chat_template_path is not None and not tok.chat_template:
        # the fallback template the adapter was trained with (train.chat_template_fallback): the merged model and
        # every GGUF converted from it must render prompts the same way
        tok.chat_template = trained.chat_template_path.read_text(encoding="utf-8")
        log.info("merge: %s has no chat template; writing the one training used", src)
    base_model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, use_safetensors=True)
    adapter = trained.adapter_dir
    try:
        model = PeftModel.from_pretrained(base_model, adapter).eval()
    except (RuntimeError, ValueError) as exc:  # peft: shape mismatch (RuntimeError), missing target modules
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if "mismatch" in line), lines[0] if lines else type(exc).__name__)
        raise ExportError(f"adapter {adapter} does not fit base model {src}: {detail}",
                          "merge an adapter trained on this base; retrain or check model.source") from exc
    ids = tok(PROBE, return_tensors="pt").input_ids
    with torch.inference_mode():
        before = model(ids).logits
        merged = model.merge_and_unload()
        after = merged(ids).logits
    diff = (before - after).abs().max().item()
    if not diff <= MAX_LOGIT_DIFF:
        raise ExportError(f"merged model differs from the adapter model by {diff:.2e} in logits (limit {MAX_LOGIT_DIFF})",
                          "the adapter may not match this base; retrain or check model.source")
    return merged, tok, diff


def _merge(base: BaseModel, trained: Adapter, b: Builder, save_dtype: str, card: CardInfo) -> None:
    import torch

    merged, tok, diff = _merged_fp32(base, trained)
    log.info("merge: max |logit diff| adapter vs merged = %.2e; saving as %s", diff, save_dtype)
    b.tools["torch"] = torch.__version__
    out = b.path / MergedModel.MODEL_DIR
    merged.to(getattr(torch, save_dtype)).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / CARD).write_text(card_text(card, relation="finetune"), encoding="utf-8")
    MergedModel.write(b, max_logit_diff=diff, dtype=save_dtype)


@contextmanager
def full_precision(merged: MergedModel, base: BaseModel, trained: Adapter) -> Iterator[Path]:
    """A folder with the fp32 merge: the merged model's own folder when it is fp32, else the merge redone in fp32
    in a temp folder beside it (removed afterwards), with the same tokenizer, template and card."""
    if merged.dtype == "float32":
        yield merged.model_dir
        return
    tmp = Path(tempfile.mkdtemp(prefix=".edgetune-fp32-merge-", dir=merged.model_dir.parent))
    try:
        model, _tok, _diff = _merged_fp32(base, trained)
        model.save_pretrained(tmp, safe_serialization=True)
        for path in merged.model_dir.iterdir():  # tokenizer, chat template, card: the saved folder's own
            if path.is_file() and path.suffix != ".safetensors" and path.name not in ("config.json",
                                                                                     "model.safetensors.index.json"):
                shutil.copy2(path, tmp / path.name)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
