"""`edgetune export RUN --to DIR`: the shareable set of a build, in one folder laid out as a Hugging Face hub model
repository, ready for `huggingface-cli upload USER/NAME DIR`.

Reads the run folder's run.json (the stage artifacts) and report.json. Writes DIR:

    README.md, config.json, *.safetensors, tokenizer files, chat_template.jinja   the merged model (its card)
    <BaseName>-<SizeLabel>-<FineTune>-<Type>.gguf and .Modelfile                  the bundle's GGUFs, Modelfiles
    adapter/  adapter_config.json, adapter_model.safetensors, README.md          the adapter (its card)
    adapter/  <...>-F16-LoRA.gguf and its ADAPTER Modelfile                       when the build made them

`from_pretrained(DIR)` loads the merged model, `PeftModel.from_pretrained(base, DIR, subfolder="adapter")` the
adapter, and llama.cpp or Ollama the GGUFs beside their Modelfiles. The model card carries the report's eval
summary and quantization table. The folder is written beside DIR and renamed into place when whole; a non-empty DIR
is refused unless `force`. No network. Raises ExportError.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune.constants import REPORT_JSON
from edgetune.errors import ExportError
from edgetune.model_card import CardInfo, card_text

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
# the adapter folder's files a hub adapter repository holds (peft's save_pretrained)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class Shared:
    folder: Path
    files: list[str] = field(default_factory=list)  # relative to `folder`
    ggufs: dict[str, str] = field(default_factory=dict)  # quant → file

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "files": self.files, "ggufs": self.ggufs,
                "upload": f"huggingface-cli upload USER/NAME {self.folder}"}


def _card_info(model_dir: Path, method: str) -> CardInfo:
    """The merged model's own card (written by the merge stage) as CardInfo, read with huggingface_hub."""
    from huggingface_hub import ModelCard

    card = model_dir / "README.md"
    if not card.is_file():
        return CardInfo(base_model=None, method=method)
    data = ModelCard.load(card).data
    title = next((line[2:].strip() for line in ModelCard.load(card).text.splitlines() if line.startswith("# ")),
                 "fine-tuned model")
    base = data.base_model if isinstance(data.base_model, str) else None
    tags = tuple(t for t in (data.tags or ()) if t != method) or ("edgetune",)
    return CardInfo(base_model=base, datasets=tuple(data.datasets or ()), license=data.license, tags=tags,
                    title=title, method=method)


def export_run(run_dir: Path, to: Path, *, force: bool = False) -> Shared:
    """Copy the run's merged model, adapter, GGUFs and Modelfiles into `to` (see the module docstring)."""
    import json

    from edgetune.outputs import Adapter, Bundle, MergedModel
    from edgetune.report.publish import run_artifacts

    run_dir, to = Path(run_dir), Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())) and not force:
        raise ExportError(f"{to} is not empty", "give an empty or new folder, or --force to replace it")
    arts = run_artifacts(run_dir)
    missing = [s for s in ("merge", "train") if s not in arts]
    if missing:
        raise ExportError(f"{run_dir} has no {' or '.join(missing)} artifact in its run.json",
                          "give a run folder of `edgetune build` (edgetune-out/runs/<target>) whose store is still there")
    merged, trained = MergedModel.of(arts["merge"]), Adapter.of(arts["train"])
    report_path = run_dir / REPORT_JSON
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    if report is None:
        log.warning("export: %s has no %s; the model card has no eval summary", run_dir, REPORT_JSON)
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{to.name}.", dir=to.parent))
    try:
        shared = Shared(to)
        for path in sorted(merged.model_dir.iterdir()):
            if path.is_file():
                shutil.copy2(path, tmp / path.name)
        if "bundle" in arts:
            bundle = Bundle.of(arts["bundle"])
            models = bundle.bundle_dir / "models"
            for path in sorted(models.glob("*")):
                shutil.copy2(path, tmp / path.name)
            manifest = json.loads((bundle.bundle_dir / "manifest.json").read_text())
            shared.ggufs = {m["quant"]: Path(m["file"]).name for m in manifest["models"]}
        else:
            log.warning("export: %s has no bundle artifact; no GGUFs or Modelfiles are exported", run_dir)
        method = trained.training.method
        info = _card_info(merged.model_dir, method)
        (tmp / "README.md").write_text(card_text(info, relation="finetune", report=report, gguf_files=shared.ggufs),
                                       encoding="utf-8")
        (tmp / ADAPTER_DIR).mkdir()
        for name in ADAPTER_FILES:
            if not (trained.adapter_dir / name).is_file():
                raise ExportError(f"the adapter folder {trained.adapter_dir} has no {name}",
                                  "rebuild the run: its train artifact is incomplete")
            shutil.copy2(trained.adapter_dir / name, tmp / ADAPTER_DIR / name)
        if "bundle" in arts:
            for path in sorted((Bundle.of(arts["bundle"]).bundle_dir / "adapters").glob("*")):
                shutil.copy2(path, tmp / ADAPTER_DIR / path.name)
        (tmp / ADAPTER_DIR / "README.md").write_text(card_text(info, relation="adapter", library="peft"),
                                                     encoding="utf-8")
        shared.files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        if to.exists():  # force: the old folder goes only once the new one is whole
            shutil.rmtree(to) if to.is_dir() else to.unlink()
        os.replace(tmp, to)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("export: %d files in %s", len(shared.files), to)
    return shared
