"""How a task is scored, as data: the metric's name and its options, validated once where it is read
(edgetune.yaml's `eval.metric`, a suite's `task.metric`).

Either a bare name (`metric: json`) or a mapping (`metric: {name: regex, pattern: "Answer: (.+)"}`). `auto`
(the default) picks the metric from the held-out references (`edgetune.evals.metrics.detect`).
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AUTO = "auto"
NAMES = ("label", "exact", "contains", "regex", "json", "number", "text")
# the name older configs and suites used for what is now `label`
ALIASES = {"label_accuracy": "label"}


class MetricSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(AUTO, description="auto (detect from the references), label, exact, contains, regex, "
                                        "json, number or text.")
    pattern: str | None = Field(None, description="regex only: a regular expression with a capture group "
                                                  "(the group named `answer`, else group 1) compared with the "
                                                  "reference after normalisation.")
    json_schema: dict[str, Any] | None = Field(
        None, description="json only: a JSON Schema every answer must match (inline, or a path to a .json "
                          "file); an answer that does not match scores 0.")
    tolerance: float = Field(1e-6, ge=0, description="number only: the largest absolute difference between the "
                                                     "answer's final number and the reference's that still counts.")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            data = {**data, "name": ALIASES.get(data["name"].strip().lower(), data["name"].strip().lower())}
        return data

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in (AUTO, *NAMES):
            close = difflib.get_close_matches(v, (AUTO, *NAMES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown metric {v!r}{hint}; choose from {AUTO}, {', '.join(NAMES)}")
        return v

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise ValueError(f"pattern {v!r} is not a valid regular expression: {exc}") from exc
        if compiled.groups == 0:
            raise ValueError(f"pattern {v!r} has no capture group; wrap the answer in (...), e.g. 'Answer: (.+)'")
        return v

    @field_validator("json_schema", mode="before")
    @classmethod
    def _schema_file(cls, v: Any) -> Any:
        if not isinstance(v, (str, Path)):
            return v
        path = Path(v).expanduser()
        if not path.is_file():
            raise ValueError(f"json_schema file not found: {path}; give a path to a .json file or the schema inline")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"json_schema file {path} is not valid JSON: {exc}") from exc

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(v).check_schema(v)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "(top level)"
            raise ValueError(f"json_schema is not a valid JSON Schema at {where}: {exc.message}") from exc
        return v

    @model_validator(mode="after")
    def _options_fit_the_metric(self) -> MetricSpec:
        if self.name == "regex" and self.pattern is None:
            raise ValueError("metric regex needs a `pattern` with a capture group, e.g. 'Answer: (.+)'")
        if self.pattern is not None and self.name not in ("regex", AUTO):
            raise ValueError(f"`pattern` is for metric regex, not {self.name}; drop it or set name: regex")
        if self.json_schema is not None and self.name not in ("json", AUTO):
            raise ValueError(f"`json_schema` is for metric json, not {self.name}; drop it or set name: json")
        return self

    def resolved(self, name: str) -> MetricSpec:
        """This spec with `auto` replaced by the detected `name` (options kept)."""
        return self if self.name != AUTO else self.model_copy(update={"name": name})
