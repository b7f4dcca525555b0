"""The train stage: adapters on a base model (stage.py), and the tools around it."""

from edgetune.train.stage import KIND, resolve_method, run

__all__ = ["KIND", "resolve_method", "run"]
