"""Evaluations over any `edgetune.runtimes.Runtime`: the held-out task scored by a task metric (`task`,
`metrics`), forgetting (`forgetting`: MMLU;
`mc_sets`: ARC, HellaSwag, PIQA, WinoGrande) and the LLM judge (`judge`, `judge_server`, `suites`)."""

from edgetune.evals.forgetting import (
    MCItem,
    MCItemResult,
    MCResult,
    PartialMCItem,
    mmlu_items,
    mmlu_subjects,
    run_multiple_choice,
)
from edgetune.evals.mc_sets import FORGETTING_SETS, forgetting_items, mc_items
from edgetune.evals.task import (
    ItemResult,
    TaskItem,
    TaskResult,
    label_matches,
    normalise_label,
    prompt_sha256,
    run_label_accuracy,
    run_task_metric,
)

__all__ = [
    "FORGETTING_SETS",
    "ItemResult",
    "MCItem",
    "MCItemResult",
    "MCResult",
    "PartialMCItem",
    "TaskItem",
    "TaskResult",
    "forgetting_items",
    "label_matches",
    "mc_items",
    "mmlu_items",
    "mmlu_subjects",
    "normalise_label",
    "prompt_sha256",
    "run_label_accuracy",
    "run_multiple_choice",
    "run_task_metric",
]
