"""Names and keys used across stages: quant types, artifact file names, the GGUF keys of our own namespace.

GGUF's standard keys and file types come from the gguf package (`gguf.Keys`, `gguf.LlamaFileType`), imported
where a file is read or written: it pulls numpy, which the config and the CLI's start-up do without.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class Quant(str, Enum):
    """llama.cpp file types edgetune can produce (values are llama.cpp's own names)."""

    F16 = "F16"
    Q8_0 = "Q8_0"
    Q6_K = "Q6_K"
    Q5_K_M = "Q5_K_M"
    Q5_0 = "Q5_0"
    Q4_K_M = "Q4_K_M"
    Q4_0 = "Q4_0"
    IQ4_NL = "IQ4_NL"
    Q3_K_M = "Q3_K_M"
    Q2_K = "Q2_K"

    @property
    def file_type(self) -> int:
        """llama.cpp's `general.file_type` number for this type (its llama_ftype, from gguf.LlamaFileType)."""
        from gguf import LlamaFileType

        return int(LlamaFileType[f"MOSTLY_{self.value}"])

class AutoQuant(str):
    """`auto:<QUANT>-size` in export.quants: a per-tensor precision mix (export/mix.py) searched to be no larger
    than the plain <QUANT> file of the same model (its budget), with the least fidelity loss the search finds.
    A str, so it reads and writes as itself in YAML, JSON and on the command line."""

    PREFIX = "auto:"
    SUFFIX = "-size"
    METAVAR = "auto:<QUANT>-size"  # its form in --help

    def __new__(cls, text: str) -> AutoQuant:
        text = str(text)
        body = text[len(cls.PREFIX):] if text.startswith(cls.PREFIX) else None
        if body is None or not body.endswith(cls.SUFFIX):
            raise ValueError(f"{text!r} is neither a quant type nor auto:<QUANT>-size (e.g. auto:Q4_0-size)")
        name = body[: -len(cls.SUFFIX)]
        if name not in Quant.__members__ or name == Quant.F16.value:
            known = ", ".join(q.value for q in Quant if q != Quant.F16)
            raise ValueError(f"{text!r}: the budget must be a quantized type ({known}), got {name!r}")
        return super().__new__(cls, text)

    @property
    def budget(self) -> Quant:
        """The plain quant whose file size is this mix's budget."""
        return Quant(self[len(self.PREFIX): -len(self.SUFFIX)])

    @property
    def value(self) -> str:  # as Quant.value: the build's name in reports, manifests and artifact keys
        return str(self)

    @property
    def file_tag(self) -> str:
        """The name as a file name part (no colon): auto-Q4_0-size."""
        return str(self).replace(":", "-")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:  # noqa: ARG003
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(), serialization=core_schema.plain_serializer_function_ser_schema(str))


# The forgetting sets, in report order: MMLU (evals/forgetting.py), then evals/mc_sets.py's. Named here so the
# config can check `eval.forgetting` without importing the evals.
FORGETTING_SETS: tuple[str, ...] = ("mmlu", "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande")
# lm-evaluation-harness tasks with an offline copy (harness/tasks.py maps them onto the eval data package)
LM_EVAL_TASKS: tuple[str, ...] = ("mmlu", "arc_challenge", "arc_easy", "hellaswag", "piqa", "winogrande")

ARTIFACT_FILE = "artifact.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1
CONFIG_FILE = "edgetune.yaml"

# The GGUF metadata key edgetune adds, under its own namespace (gguf.Keys holds the standard ones).
GGUF_KEY_PROVENANCE = "edgetune.provenance"

# Report build names every report knows (the rest are quant names, and later devices).
BASE_BUILD = "base"
GPU_BUILD = "gpu"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
RUN_RECORD = "run.json"
