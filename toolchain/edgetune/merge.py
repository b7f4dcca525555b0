"""The merge stage: fold the adapter into a full-precision base and prove the fold changed nothing.

Reads the base artifact (HF folder) and the train artifact (adapter); writes `model/` (fp32 safetensors,
tokenizer, chat template: the base's, or the fallback training used where the base has none). The merge happens in fp32 on the full-precision base, never on a 4-bit model
(merging into NF4 erases the adapter, and a bf16 merge moves logits by up to 3.3: NOTES.md). Before saving,
the merged model's logits are compared with the adapter model's on a probe batch. Raises ExportError.
"""

from __future__ import annotations

import logging

from edgetune.artifacts import Builder, Store
from edgetune.errors import ExportError
from edgetune.outputs import Adapter, BaseModel, MergedModel

log = logging.getLogger(__name__)

KIND = MergedModel.KIND
MAX_LOGIT_DIFF = 1e-3  # fp32 adapter vs merged measured at ~2e-4 on SmolLM2
PROBE = "The quick brown fox jumps over the lazy dog. A review: a charming, often affecting journey."


def run(base: BaseModel, trained: Adapter, store: Store) -> MergedModel:
    params = {"dtype": "float32", "max_logit_diff": MAX_LOGIT_DIFF}
    inputs = {"base": base.key, "train": trained.key}
    return MergedModel.of(store.stage(KIND, params, inputs, lambda b: _merge(base, trained, b)))


def _merge(base: BaseModel, trained: Adapter, b: Builder) -> None:
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
    log.info("merge: max |logit diff| adapter vs merged = %.2e", diff)
    b.tools["torch"] = torch.__version__
    merged.save_pretrained(b.path / MergedModel.MODEL_DIR, safe_serialization=True)
    tok.save_pretrained(b.path / MergedModel.MODEL_DIR)
    MergedModel.write(b, max_logit_diff=diff)
