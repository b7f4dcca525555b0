"""The base-model stage: resolve `model.source` to a full-precision Hugging Face folder (safetensors).

A local HF folder is used in place (its content hash keys the cache). A GGUF file (the embedded SmolLM2 is one)
is dequantized to fp32 by transformers and saved. A hub id is pinned to a commit (hub.py: the key holds it, the
record names it) and goes through `from_pretrained` at that commit, the real hub path, and is saved. Weights load from safetensors only, and repo code runs only with `trust_remote_code: true`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgetune import assets, hub
from edgetune.artifacts import Builder, Store
from edgetune.hash_memo import sha256_file_memo, sha256_tree_memo
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
    """Content before anything loads: a config.json that parses, and safetensors files whose header is whole and
    whose tensors end inside the file (transformers would otherwise fail deep in its loader)."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path} has no config.json: not a Hugging Face model folder", "point model.source at one")
    try:
        parsed = json.loads(config.read_text())
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{config} is not readable JSON: {exc}", _REFETCH) from exc
    if not isinstance(parsed, dict) or not isinstance(parsed.get("model_type"), str):
        raise ModelError(f"{config} has no model_type: not a transformers model config", _REFETCH)
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelError(
            f"{path} has no .safetensors weights (edgetune never loads pickled .bin weights)",
            "convert the weights with `save_pretrained(..., safe_serialization=True)`",
        )
    for file in weights:
        _check_safetensors(file)


_REFETCH = "the model folder is damaged: download or save the model again"


def _check_safetensors(path: Path) -> None:
    """The safetensors layout: an 8-byte header length, a JSON header, then the data every entry points into."""
    size_bytes = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size_bytes:
            raise ModelError(f"{path} is truncated: its header is cut short", _REFETCH)
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise ModelError(f"{path} has a garbled header: {exc}", _REFETCH) from exc
    if not isinstance(header, dict):
        raise ModelError(f"{path} has a garbled header: not a JSON object", _REFETCH)
    ends = [v.get("data_offsets", [0, 0])[-1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if len(ends) != len(header) - ("__metadata__" in header) or not all(isinstance(e, int) for e in ends):
        raise ModelError(f"{path} has a garbled header: an entry without data_offsets", _REFETCH)
    if 8 + n + max(ends, default=0) > size_bytes:
        raise ModelError(f"{path} is truncated: its tensors need {8 + n + max(ends)} bytes, the file has "
                         f"{size_bytes}", _REFETCH)


def _check_gguf(path: Path) -> None:
    """The whole GGUF header and its tensors' extent, before transformers parses it (its reader fails on a cut file
    with a bare struct.error)."""
    from edgetune.errors import ExportError
    from edgetune.export.gguf_header import check_layout

    try:
        check_layout(path)
    except ExportError as exc:
        raise ModelError(f"base model {exc.message}", "give a complete .gguf file: download or export it again") \
            from exc


def run(cfg: ModelConfig, store: Store) -> BaseModel:
    """The base model as a loadable fp32/bf16 HF folder (`model_dir`). Raises ModelError."""
    local = _local_source(cfg)
    pinned: hub.Pinned | None = None
    name = str(local or cfg.source)
    if local is not None and local.is_dir():
        _check_hf_folder(local)
        fingerprint = sha256_tree_memo(local)
    elif local is not None:
        _check_gguf(local)
        fingerprint = sha256_file_memo(local)
    else:  # a hub id, pinned to the commit its revision names now (a moved `main` is a new key)
        pinned = hub.pin(cfg.source, cfg.revision, "model", ModelError)
        fingerprint = pinned.fingerprint
        how = "offline from the hub cache" if pinned.how == "cache" else pinned.how
        name = f"{cfg.source}@{pinned.sha} ({pinned.revision}, resolved {how})"

    def build(b: Builder) -> None:
        if local is not None and local.is_dir():
            folder = str(local.resolve())  # used in place; the key pins its content
        else:
            _materialise(cfg, local, b.path / "model", pinned)
            folder = "model"
        BaseModel.write(b, model_dir=folder, source_sha256=fingerprint,
                        license=_license_of(local, None if local is not None else cfg.source))

    # the key holds the source's content hash, the record its readable name
    return BaseModel.of(store.stage(KIND, cfg.model_dump(), {"source": fingerprint}, build,
                                    record_inputs={"source": name}))


def _materialise(cfg: ModelConfig, gguf: Path | None, out: Path, pinned: hub.Pinned | None = None) -> None:
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
        # the pinned commit, from the cache hub.pin read (offline: from it alone)
        kwargs = dict(revision=pinned.sha if pinned else cfg.revision, trust_remote_code=cfg.trust_remote_code,
                      use_safetensors=True, cache_dir=str(hub.cache_dir()),
                      local_files_only=pinned is not None and pinned.how == "cache")
        where = cfg.source
    try:
        tok = AutoTokenizer.from_pretrained(where, **{k: v for k, v in kwargs.items() if k != "quantization_config" and k != "use_safetensors"})
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load base model {cfg.source}: {str(exc).splitlines()[0]}",
                         "give a local HF folder or .gguf file, or check the hub id and network") from exc
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _license_of(local: Path | None, hub_id: str | None = None) -> str | None:
    """The base model's licence when it says one: general.license of a GGUF, or the model card's `license`
    (README.md front matter, read by huggingface_hub's ModelCard) of an HF folder or, for a hub id, of the hub
    repository; for `license: other`, the card's `license_name` (the hub's convention for licences without an
    SPDX-like id). A card whose metadata cannot be read is logged as a WARNING and gives no licence: the licence
    is a record, not a reason to stop the build."""
    from huggingface_hub import ModelCard

    if local is None:
        if hub_id is None:
            return None
        from huggingface_hub.errors import HfHubHTTPError

        try:
            card = ModelCard.load(hub_id)
        except (HfHubHTTPError, OSError, ValueError) as exc:  # no card, no network: the licence stays unknown
            log.warning("base model %s: cannot read its model card for the licence (%s)", hub_id,
                        (str(exc).splitlines() or [type(exc).__name__])[0])
            return None
        return _card_license(card)
    if local.is_file():
        from gguf import Keys

        from edgetune.export.inspect import field_value, read_gguf

        value = field_value(read_gguf(local), Keys.General.LICENSE)
        return str(value) if value else None
    card_path = local / "README.md"
    if not card_path.is_file():
        return None
    import yaml

    try:
        card = ModelCard.load(card_path, ignore_metadata_errors=True)
    except (ValueError, yaml.YAMLError) as exc:
        log.warning("the model card %s has unreadable metadata (%s); the base model's licence is not recorded",
                    card_path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    return _card_license(card)


def _card_license(card: object) -> str | None:
    data = getattr(card, "data", None)
    if data is None:
        return None
    name = data.get("license")
    if name == "other" and data.get("license_name"):
        name = data.get("license_name")
    return str(name) if name else None
