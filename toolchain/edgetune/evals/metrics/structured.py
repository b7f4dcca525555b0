"""`json`: the answer must be JSON; scored field by field against the reference object.

An answer is parsed as JSON after removing a Markdown code fence (models fine-tuned on JSON often still add
one); failing that, the first JSON value that starts at a `{` or `[` is taken and the trailing text is noted.
With a schema, an answer that does not match it scores 0. Otherwise the score is the share of fields that
equal the reference's, over the union of both objects' top-level keys (a missing or an extra key is a wrong
field), so `score == 1.0` exactly when the whole object matches: `correct`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edgetune.evals.metrics.base import Metric, Score, binary
from edgetune.evals.metrics.match import normalise_text

_DECODER = json.JSONDecoder()


def parse_answer(text: str) -> tuple[Any, str | None, bool]:
    """(value, error, trailing_text): error is None when a JSON value was found."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0].strip()
    try:
        return json.loads(s), None, False
    except json.JSONDecodeError as exc:
        first_error = f"{exc.msg} at char {exc.pos}"
    starts = [i for i in (s.find("{"), s.find("[")) if i >= 0]
    if starts:
        try:
            value, end = _DECODER.raw_decode(s, min(starts))
            return value, None, bool(s[end:].strip())
        except json.JSONDecodeError:
            pass
    return None, first_error, False


def same_value(a: Any, b: Any) -> bool:
    """JSON equality that forgives what a reader would: string case and spacing (normalised text), 3 vs 3.0.
    Booleans are not numbers here (true is not 1), and lists keep their order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, str) and isinstance(b, str):
        return normalise_text(a) == normalise_text(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a is None and b is None


class Json(Metric, name="json"):
    binary = False
    description = "answer parses as JSON (and matches the schema); score: share of fields equal to the reference"

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.validator = None
        if spec.json_schema is not None:
            from jsonschema.validators import validator_for

            self.validator = validator_for(spec.json_schema)(spec.json_schema)

    def reference_problem(self, reference: str) -> str | None:
        try:
            value = json.loads(reference)
        except json.JSONDecodeError as exc:
            return f"has a reference that is not JSON ({exc.msg} at char {exc.pos})"
        if self.validator is not None and (err := self._schema_error(value)):
            return f"has a reference that does not match json_schema ({err})"
        return None

    def _schema_error(self, value: Any) -> str | None:
        err = next(iter(self.validator.iter_errors(value)), None) if self.validator is not None else None
        if err is None:
            return None
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        return f"{where}: {err.message}"

    def score(self, output: str, reference: str) -> Score:
        value, error, trailing = parse_answer(output)
        if error is not None:
            return binary(False, {"parsed": False, "error": error})
        detail: dict[str, Any] = {"parsed": True, "trailing_text": trailing}
        if self.validator is not None:
            if schema_error := self._schema_error(value):
                return binary(False, {**detail, "schema_valid": False, "error": schema_error})
            detail["schema_valid"] = True
        ref = json.loads(reference)
        if not isinstance(ref, dict):
            return binary(same_value(value, ref), detail)
        got = value if isinstance(value, dict) else {}
        fields = {k: k in got and k in ref and same_value(got[k], ref[k]) for k in dict.fromkeys([*ref, *got])}
        share = sum(fields.values()) / len(fields) if fields else float(value == ref)
        return Score(float(share), share == 1.0, {**detail, "fields": fields})
