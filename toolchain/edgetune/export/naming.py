"""GGUF names and general metadata as llama.cpp's conventions have them (docs/gguf.md "GGUF Naming Convention",
gguf-py's `Keys.General`): files `<BaseName>-<SizeLabel>-<FineTune>-<Version>-<Type>.gguf`, and
`general.basename`, `general.finetune`, `general.size_label`, `general.base_model.N.*`, `general.datasets.N.*`,
`general.tags`, `general.quantized_by`, `general.source.url` (a real URL, never a bare hub id).

Reads the base model's id (hub id, folder or GGUF file name, and a GGUF source's own general.* keys) and the data
source's name; gguf-py's own parser (`Metadata.get_model_id_components`) splits an id into its parts and its
`naming_convention` joins them, so names match what llama.cpp's converter would choose. Writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HUB = "https://huggingface.co"
QUANTIZED_BY = "edgetune"
_GGUF_TYPE_SUFFIX = re.compile(r"[.-](?:I?Q\d\w*|[BF]F?16|F32)$", re.IGNORECASE)
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_hub_id(source: str) -> bool:
    """`org/name` that is not a local path: what from_pretrained fetches from the hub."""
    return bool(_HUB_ID.match(source)) and not Path(source).expanduser().exists()


@dataclass(frozen=True)
class GGUFNaming:
    basename: str
    finetune: str
    size_label: str | None = None
    version: str | None = None
    base_model: dict[str, str] = field(default_factory=dict)  # name, organization, repo_url, version
    dataset: dict[str, str] = field(default_factory=dict)  # name, repo_url
    tags: tuple[str, ...] = ()
    source_url: str | None = None

    def stem(self, output_type: str, *, lora: bool = False) -> str:
        """`BaseName-SizeLabel-FineTune-Version-Type` (and `-LoRA` for an adapter), via gguf-py."""
        from gguf.utility import naming_convention

        return naming_convention(self.basename, self.basename, self.finetune, self.version, self.size_label,
                                 output_type, "LoRA" if lora else None)

    def metadata(self) -> dict[str, Any]:
        """The keys for llama.cpp's converter's --metadata override file (export.convert.metadata_keys)."""
        from gguf import Keys

        g = Keys.General
        meta: dict[str, Any] = {g.BASENAME: self.basename, g.FINETUNE: self.finetune, g.QUANTIZED_BY: QUANTIZED_BY,
                                g.TAGS: list(self.tags)}
        if self.size_label:
            meta[g.SIZE_LABEL] = self.size_label
        if self.version:
            meta[g.VERSION] = self.version
        if self.base_model:
            meta["general.base_models"] = [self.base_model]
        if self.dataset:
            meta["general.datasets"] = [self.dataset]
        if self.source_url:
            meta[g.SOURCE_URL] = self.source_url
        return meta


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "", text) or "model"


def _data_name(source: str) -> str:
    tail = source.split(":", 1)[-1].rstrip("/").split("/")[-1]
    return re.sub(r"\.(jsonl|json|csv)$", "", tail, flags=re.IGNORECASE)


def naming_for(model_source: str, data_source: str, *, method: str, n_params: int = 0,
               gguf_source: Path | None = None) -> GGUFNaming:
    """The names of a fine-tune of `model_source` on `data_source`: the base's basename, size label and version,
    and the data set's name as the fine-tune (`sst2`: what this model was tuned for)."""
    from gguf.metadata import Metadata

    hub = is_hub_id(model_source)
    if gguf_source is not None:
        model_id = _GGUF_TYPE_SUFFIX.sub("", gguf_source.stem)
    elif hub:
        model_id = model_source
    else:  # a local folder: its name
        model_id = Path(model_source).expanduser().resolve().name
    name, org, basename, _finetune, version, size_label = Metadata.get_model_id_components(model_id, n_params)
    base: dict[str, str] = {"name": name or model_id}
    if gguf_source is not None:  # a GGUF names its organisation in its own metadata
        from gguf import Keys

        from edgetune.export.inspect import field_value, read_gguf

        reader = read_gguf(gguf_source)
        org = org or field_value(reader, Keys.General.ORGANIZATION)
        size_label = size_label or field_value(reader, Keys.General.SIZE_LABEL)
    if org:
        base["organization"] = str(org)
    if version:
        base["version"] = version
    if hub:
        base["repo_url"] = f"{HUB}/{model_source}"
    data_name = _data_name(data_source)
    dataset = {"name": data_name}
    if is_hub_id(data_source):
        dataset["repo_url"] = f"{HUB}/datasets/{data_source}"
    return GGUFNaming(basename=_clean(basename or name or model_id), finetune=_clean(data_name),
                      size_label=size_label, version=None, base_model=base, dataset=dataset,
                      tags=("edgetune", "fine-tuned", method), source_url=base.get("repo_url"))
