"""The base-model stage: resolve `model.source` to a full-precision Hugging Face folder (safetensors).

A local HF folder is used in place (its content hash keys the cache). A GGUF file (the embedded SmolLM2 is one)
is dequantized to fp32 by transformers and saved. A hub id goes through `from_pretrained`, the real hub path,
and is saved. Weights load from safetensors only, and repo code runs only with `trust_remote_code: true`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgetune import assets
from edgetune.artifacts import Builder, Store, sha256_file, sha256_tree
from edgetune.config import ModelConfig
from edgetune.errors import ModelError
from edgetune.outputs import BaseModel

log = logging.getLogger(__name__)

KIND = BaseModel.KIND


def _local_source(cfg: ModelConfig) -> Path | None:
    if cfg.source == assets.EMBEDDED_MODEL:
        return assets.smollm2_gguf()
    path = Path(cfg.source).expanduser()
    if path.exists():
        return path
    if cfg.source.startswith((".", "/", "~")) or path.suffix == ".gguf":
        raise ModelError(f"base model not found: {path}", "check model.source in edgetune.yaml or --model")
    return None


def _check_hf_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json: not a Hugging Face model folder", "point model.source at one")
    if not any(path.glob("*.safetensors")):
        raise ModelError(
            f"{path} has no .safetensors weights (edgetune never loads pickled .bin weights)",
            "convert the weights with `save_pretrained(..., safe_serialization=True)`",
        )


def run(cfg: ModelConfig, store: Store) -> BaseModel:
    """The base model as a loadable fp32/bf16 HF folder (`model_dir`). Raises ModelError."""
    local = _local_source(cfg)
    if local is not None and local.is_dir():
        _check_hf_folder(local)
        fingerprint = sha256_tree(local)
    elif local is not None:
        fingerprint = sha256_file(local)
    else:
        fingerprint = f"hub:{cfg.source}@{cfg.revision or 'main'}"

    def build(b: Builder) -> None:
        if local is not None and local.is_dir():
            folder = str(local.resolve())  # used in place; the key pins its content
        else:
            _materialise(cfg, local, b.path / "model")
            folder = "model"
        BaseModel.write(b, model_dir=folder, source_sha256=fingerprint, license=_license_of(local))

    # the key holds the source's content hash, the record its readable name
    return BaseModel.of(store.stage(KIND, cfg.model_dump(), {"source": fingerprint}, build,
                                    record_inputs={"source": str(local or cfg.source)}))


def _materialise(cfg: ModelConfig, gguf: Path | None, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any]
    if gguf is not None:
        from transformers import GgufConfig

        log.info("dequantizing %s to fp32", gguf.name)
        kwargs = dict(gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True))
        where = str(gguf.parent)
    else:
        log.info("loading %s from the hub", cfg.source)
        kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, use_safetensors=True)
        where = cfg.source
    try:
        tok = AutoTokenizer.from_pretrained(where, **{k: v for k, v in kwargs.items() if k != "quantization_config" and k != "use_safetensors"})
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load base model {cfg.source}: {str(exc).splitlines()[0]}",
                         "give a local HF folder or .gguf file, or check the hub id and network") from exc
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _license_of(local: Path | None) -> str | None:
    """The base model's licence when it says one: general.license of a GGUF, or `license:` in the front matter
    of an HF folder's README.md (the model card)."""
    if local is None:
        return None
    if local.is_file():
        from gguf import Keys

        from edgetune.export.inspect import field_value, read_gguf

        value = field_value(read_gguf(local), Keys.General.LICENSE)
        return str(value) if value else None
    card = local / "README.md"
    if card.is_file():
        text = card.read_text(errors="replace")
        if text.startswith("---"):
            for line in text.split("---", 2)[1].splitlines():
                if line.strip().startswith("license:"):
                    return line.split(":", 1)[1].strip().strip("'\"") or None
    return None
