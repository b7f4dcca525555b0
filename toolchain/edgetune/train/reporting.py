"""`train.report_to`: training metrics streamed to TensorBoard, Weights & Biases or MLflow while training runs.

wandb and mlflow go through transformers' own callbacks (train/args.py sets `report_to`), configured by their
usual variables (WANDB_PROJECT, WANDB_API_KEY, MLFLOW_TRACKING_URI...). TensorBoard goes through transformers'
TensorBoardCallback given a writer on the train artifact's `tensorboard/` folder, so the event files are kept
with the adapter: transformers would write them under output_dir, the checkpoint folder removed after training.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from edgetune.errors import TrainError

# the module each target needs, and what installs it
NEEDS = {"tensorboard": ("tensorboard", "pip install 'edgetune[tensorboard]'"),
         "wandb": ("wandb", "pip install wandb, then set WANDB_API_KEY (or WANDB_MODE=offline)"),
         "mlflow": ("mlflow", "pip install 'edgetune[mlflow]', then set MLFLOW_TRACKING_URI")}


def check(report_to: str) -> None:
    """Raise TrainError when the package `report_to` needs is missing, before any training."""
    if report_to in NEEDS:
        module, fix = NEEDS[report_to]
        if importlib.util.find_spec(module) is None:
            raise TrainError(f"train.report_to: {report_to} needs the {module} package, which is not installed",
                             f"{fix}, or set train.report_to: none")


def callbacks(report_to: str, tensorboard_dir: Path | None) -> list[Any]:
    """The callbacks the stage adds for `report_to` (only TensorBoard's: the others are transformers' own)."""
    if report_to != "tensorboard" or tensorboard_dir is None:
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(tensorboard_dir)))]
