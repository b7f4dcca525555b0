"""The train stage: adapters on a base model (stage.py), and the tools around it."""

from edgetune.train.args import sft_config
from edgetune.train.attempt import TRAINABLE_WARN_SHARE
from edgetune.train.stage import KIND, resolve_method, run

__all__ = ["KIND", "TRAINABLE_WARN_SHARE", "resolve_method", "run", "sft_config"]
