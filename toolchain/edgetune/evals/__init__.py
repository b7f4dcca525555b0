"""Evaluations over any `edgetune.runtimes.Runtime`: task accuracy (`task`) and forgetting (`forgetting`)."""

from edgetune.evals.forgetting import (
    MCItem,
    MCItemResult,
    MCResult,
    mmlu_items,
    mmlu_subjects,
    run_multiple_choice,
)
from edgetune.evals.task import (
    ItemResult,
    TaskItem,
    TaskResult,
    label_matches,
    normalise_label,
    prompt_sha256,
    run_label_accuracy,
)

__all__ = [
    "ItemResult",
    "MCItem",
    "MCItemResult",
    "MCResult",
    "TaskItem",
    "TaskResult",
    "label_matches",
    "mmlu_items",
    "mmlu_subjects",
    "normalise_label",
    "prompt_sha256",
    "run_label_accuracy",
    "run_multiple_choice",
]
