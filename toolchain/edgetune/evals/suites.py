"""Evaluation suites and judge rubrics as data, validated here: `evals/judge/*.yaml`, `evals/suites/*.yaml`.

A rubric holds the judge's system prompt and the user-message templates for single-answer grading and for
pairwise comparison. The output format the judge must follow ("Rating: N", "Verdict: A|B|tie" or JSON) is not
part of the rubric: `edgetune.evals.judge` appends it, so the instructions and the parser never drift apart.
A suite names what to run for a build: the task, the judge (rubric, mode, item count) and the forgetting sets.
Both are found by name (the file stem) or by path. Raises ConfigError for unknown names and invalid files.
"""

from __future__ import annotations

import difflib
import hashlib
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgetune.errors import ConfigError, JudgeError
from edgetune.metric_spec import MetricSpec

# Repo checkouts (the supported install is editable) keep suites beside toolchain/, as targets/ is.
EVALS_DIR = Path(__file__).resolve().parents[3] / "evals"
RUBRICS = "judge"
SUITES = "suites"

SINGLE_FIELDS = {"question", "answer"}
PAIRWISE_FIELDS = {"question", "answer_a", "answer_b"}
OPTIONAL_FIELDS = {"reference"}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _fields(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:  # a lone { or }
        raise ValueError(
            f"template is not a valid format string ({exc}); write literal braces as {{{{ }}}}"
        ) from exc


def _check_template(template: str, required: set[str]) -> str:
    found = _fields(template)
    if missing := sorted(required - found):
        raise ValueError(f"template lacks placeholder {{{missing[0]}}}")
    if unknown := sorted(found - required - OPTIONAL_FIELDS):
        raise ValueError(
            f"template has unknown placeholder {{{unknown[0]}}}; allowed: "
            f"{', '.join(sorted(required | OPTIONAL_FIELDS))}"
        )
    return template


class Rubric(_Strict):
    """A judge rubric. Templates use {question}, {answer} (single) or {answer_a}/{answer_b} (pairwise: the
    answers as shown in positions A and B) and optionally {reference}."""

    name: str = Field(description="Rubric name (the file stem).")
    version: int = Field(
        ge=1, description="Bump when the wording changes; part of every verdict's cache key."
    )
    description: str
    system: str = Field(min_length=1, description="The judge's system prompt.")
    single: str | None = Field(None, description="User message template for grading one answer 1-10.")
    pairwise: str | None = Field(None, description="User message template for comparing two answers.")

    @field_validator("single")
    @classmethod
    def _single(cls, v: str | None) -> str | None:
        return None if v is None else _check_template(v, SINGLE_FIELDS)

    @field_validator("pairwise")
    @classmethod
    def _pairwise(cls, v: str | None) -> str | None:
        return None if v is None else _check_template(v, PAIRWISE_FIELDS)

    @model_validator(mode="after")
    def _some_mode(self) -> Rubric:
        if self.single is None and self.pairwise is None:
            raise ValueError("a rubric needs a `single` or a `pairwise` template (or both)")
        return self

    def sha256(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def render(
        self, mode: Literal["single", "pairwise"], *, question: str, reference: str | None, **answers: str
    ) -> str:
        """The user message for `mode`. Raises JudgeError when the rubric lacks the mode, or needs a reference
        the item does not have."""
        template = self.single if mode == "single" else self.pairwise
        if template is None:
            raise JudgeError(
                f"rubric {self.name!r} has no {mode} template", f"add `{mode}:` to the rubric YAML"
            )
        if "reference" in _fields(template) and reference is None:
            raise JudgeError(
                f"rubric {self.name!r} needs a reference answer and an item has none",
                "give every judge item a reference, or use a rubric without {reference}",
            )
        return template.format(question=question, reference=reference or "", **answers)


class TaskSpec(_Strict):
    data: str = Field(description="Task data source, as in edgetune.yaml's data.source.")
    metric: MetricSpec = Field(MetricSpec(), description="How answers are scored: a name (auto, label, exact, "
                               "contains, regex, json, number, text) or {name, pattern, json_schema, tolerance}; "
                               "auto detects it from the references.")
    max_new_tokens: int | None = Field(None, ge=1, description="Greedy tokens generated per item; None: derived "
                                       "from the references' token lengths (edgetune.evals.metrics.detect).")


class JudgeSpec(_Strict):
    rubric: str = Field(description="Rubric name under evals/judge/.")
    mode: Literal["single", "pairwise", "both"] = Field(
        "pairwise", description="Pairwise: GPU vs edge build."
    )
    n_items: int = Field(20, ge=1, description="Held-out items judged per build.")
    max_new_tokens: int = Field(128, ge=1, description="Tokens each build may generate for a judged answer.")


class ForgettingSpec(_Strict):
    name: str = Field(description="mmlu, arc_easy, arc_challenge, hellaswag, piqa or winogrande.")
    n_items: int = Field(100, ge=1, description="Items in the seeded subset.")
    seed: int = Field(0, description="Seed of the subset.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from edgetune.evals.mc_sets import FORGETTING_SETS

        if v not in FORGETTING_SETS:
            raise ValueError(f"unknown forgetting set {v!r}; choose from {', '.join(FORGETTING_SETS)}")
        return v


class Suite(_Strict):
    name: str
    description: str
    task: TaskSpec | None = None
    judge: JudgeSpec | None = None
    forgetting: list[ForgettingSpec] = []


def load_rubric(name_or_path: str | Path, root: Path = EVALS_DIR) -> Rubric:
    """A rubric by name (`evals/judge/<name>.yaml`) or path. Raises ConfigError."""
    data = _load(name_or_path, root / RUBRICS, "rubric")
    try:
        return Rubric.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"rubric {name_or_path}: {_first_error(exc)}", "see evals/judge/helpfulness.yaml"
        ) from exc


def load_suite(name_or_path: str | Path, root: Path = EVALS_DIR) -> Suite:
    """A suite by name (`evals/suites/<name>.yaml`) or path; its rubric must exist under `root` and
    support the suite's judge mode. Raises ConfigError."""
    data = _load(name_or_path, root / SUITES, "suite")
    path = Path(name_or_path)
    _schema_beside(data, path.parent if path.suffix in (".yaml", ".yml") else root / SUITES)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"suite {name_or_path}: {_first_error(exc)}", "see evals/suites/sst2.yaml") from exc
    if suite.judge is not None:
        rubric = load_rubric(suite.judge.rubric, root)
        modes = ["single", "pairwise"] if suite.judge.mode == "both" else [suite.judge.mode]
        for mode in modes:
            if getattr(rubric, mode) is None:
                raise ConfigError(
                    f"suite {suite.name}: rubric {rubric.name!r} has no {mode} template",
                    f"add `{mode}:` to the rubric or change judge.mode",
                )
    return suite


def _schema_beside(data: dict, folder: Path) -> None:
    """A relative `task.metric.json_schema` path means relative to the suite file, wherever edgetune runs."""
    metric = (data.get("task") or {}).get("metric") if isinstance(data.get("task"), dict) else None
    if isinstance(metric, dict) and isinstance(metric.get("json_schema"), str):
        schema = Path(metric["json_schema"]).expanduser()
        if not schema.is_absolute():
            metric["json_schema"] = str(folder / schema)


def available(kind: Literal["judge", "suites"], root: Path = EVALS_DIR) -> list[str]:
    return sorted(p.stem for p in (root / kind).glob("*.yaml"))


def _load(name_or_path: str | Path, folder: Path, what: str) -> dict:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        close = difflib.get_close_matches(str(name_or_path), names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from: {', '.join(names) or '(none)'}"
        raise ConfigError(f"no {what} {str(name_or_path)!r} (looked for {path})", hint)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: not UTF-8 text
        raise ConfigError(f"{what} {path.name} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path.name} must be a mapping of keys")
    return data


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{where}: {err['msg']}"
