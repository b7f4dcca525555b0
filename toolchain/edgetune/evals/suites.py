"""Evaluation suites and judge rubrics as data, validated here: `judge/*.yaml` and `suites/*.yaml`, shipped in
the package (`edgetune/resources/`, found through `importlib.resources`) and in the user's
`~/.config/edgetune/{judge,suites}/` (XDG_CONFIG_HOME honoured), whose files override shipped ones of the same name.

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
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgetune.errors import ConfigError, JudgeError
from edgetune.metric_spec import MetricSpec
from edgetune.resources import ROOT, Kind, folders

# the shipped rubrics and suites (package data): EVALS_DIR / RUBRICS, EVALS_DIR / SUITES
EVALS_DIR = ROOT
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
    rubric: str = Field(description="Rubric name (shipped, or the user's judge/ folder) or path.")
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


def _search(kind: Kind, root: Path | Traversable | None) -> list[Traversable]:
    """Where names of `kind` are looked up, first match wins: `root / kind` alone when given, else the user's
    folder before the package's."""
    if root is not None:
        return [root / kind]
    return [f.path for f in reversed(folders(kind))]


def load_rubric(name_or_path: str | Path, root: Path | Traversable | None = None) -> Rubric:
    """A rubric by name (`judge/<name>.yaml`, the user's before the package's) or path. Raises ConfigError."""
    data, _ = _load(name_or_path, _search("judge", root), "rubric")
    try:
        return Rubric.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"rubric {name_or_path}: {_first_error(exc)}", "see the shipped helpfulness rubric (judge/helpfulness.yaml)"
        ) from exc


def load_suite(name_or_path: str | Path, root: Path | Traversable | None = None) -> Suite:
    """A suite by name (`suites/<name>.yaml`, the user's before the package's) or path; its rubric must exist
    (under `root` when given) and support the suite's judge mode. Raises ConfigError."""
    data, folder = _load(name_or_path, _search("suites", root), "suite")
    _schema_beside(data, folder)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"suite {name_or_path}: {_first_error(exc)}",
                          "see the shipped sst2 suite (suites/sst2.yaml)") from exc
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


def _schema_beside(data: dict, folder: Path | Traversable) -> None:
    """A relative `task.metric.json_schema` path means relative to the suite file, wherever edgetune runs."""
    metric = (data.get("task") or {}).get("metric") if isinstance(data.get("task"), dict) else None
    if isinstance(metric, dict) and isinstance(metric.get("json_schema"), str):
        schema = Path(metric["json_schema"]).expanduser()
        if not schema.is_absolute():
            metric["json_schema"] = str(folder / str(schema))


def available(kind: Literal["judge", "suites"], root: Path | Traversable | None = None) -> list[str]:
    """The names of `kind` that load by name: the package's and the user's."""
    return sorted({p.name.removesuffix(".yaml") for folder in _search(kind, root) for p in _yaml_files(folder)})


def _yaml_files(folder: Path | Traversable) -> list[Traversable]:
    return [p for p in folder.iterdir() if p.name.endswith(".yaml") and p.is_file()] if folder.is_dir() else []


def _load(name_or_path: str | Path, search: list[Traversable], what: str) -> tuple[dict, Path | Traversable]:
    """The mapping in the file and the folder it was found in: a path as given, or `<name>.yaml` in the first
    folder of `search` that has it."""
    path: Path | Traversable = Path(name_or_path)
    if Path(name_or_path).suffix in (".yaml", ".yml"):
        folder: Path | Traversable = Path(name_or_path).parent
    else:
        folder = next((f for f in search if (f / f"{name_or_path}.yaml").is_file()), search[-1])
        path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        names = sorted({p.name.removesuffix(".yaml") for f in search for p in _yaml_files(f)})
        close = difflib.get_close_matches(str(name_or_path), names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from: {', '.join(names) or '(none)'}"
        raise ConfigError(f"no {what} {str(name_or_path)!r} (looked for {path})", hint)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: not UTF-8 text
        raise ConfigError(f"{what} {path.name} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path.name} must be a mapping of keys")
    return data, folder


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"{where}: {err['msg']}"
