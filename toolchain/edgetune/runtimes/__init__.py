"""How to run a model: one interface (`Runtime`), several backends.

Backends import heavy libraries (torch, llama_cpp) at module level, so they are loaded only when first named:
`from edgetune.runtimes import HFRuntime` imports torch then, not when `edgetune.runtimes` is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgetune.runtimes.base import LoglikelihoodRequest, LoglikelihoodResult, Runtime

_BACKENDS = {
    "DeviceRuntime": "edgetune.runtimes.device",
    "HFRuntime": "edgetune.runtimes.hf",
    "LlamaCppRuntime": "edgetune.runtimes.llamacpp",
}

__all__ = [
    "DeviceRuntime",
    "HFRuntime",
    "LlamaCppRuntime",
    "LoglikelihoodRequest",
    "LoglikelihoodResult",
    "Runtime",
]


def __getattr__(name: str) -> Any:
    if name in _BACKENDS:
        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
