"""Names and keys used across stages: quant types, artifact file names, the GGUF keys of our own namespace.

GGUF's standard keys and file types come from the gguf package (`gguf.Keys`, `gguf.LlamaFileType`), imported
where a file is read or written: it pulls numpy, which the config and the CLI's start-up do without.
"""

from __future__ import annotations

from enum import Enum


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
