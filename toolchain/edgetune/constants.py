"""Names and keys used across stages: quant types, artifact file names, GGUF keys we write."""

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


# llama_ftype values from llama.h (stable ABI numbers).
LLAMA_FTYPE = {
    Quant.F16: 1,
    Quant.Q8_0: 7,
    Quant.Q4_0: 2,
    Quant.Q5_0: 8,
    Quant.Q2_K: 10,
    Quant.Q3_K_M: 12,
    Quant.Q4_K_M: 15,
    Quant.Q5_K_M: 17,
    Quant.Q6_K: 18,
    Quant.IQ4_NL: 25,
}

# The forgetting sets, in report order: MMLU (evals/forgetting.py), then evals/mc_sets.py's. Named here so the
# config can check `eval.forgetting` without importing the evals.
FORGETTING_SETS: tuple[str, ...] = ("mmlu", "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande")

ARTIFACT_FILE = "artifact.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1
CONFIG_FILE = "edgetune.yaml"

# GGUF metadata keys edgetune adds (provenance lives under our own namespace).
GGUF_KEY_PROVENANCE = "edgetune.provenance"
GGUF_KEY_CHAT_TEMPLATE = "tokenizer.chat_template"

# Report build names every report knows (the rest are quant names, and later devices).
BASE_BUILD = "base"
GPU_BUILD = "gpu"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
RUN_RECORD = "run.json"
