"""What the judge is told to answer and how its reply is read: strictly, never guessed.

Single grading accepts `{"rating": N}` (the whole reply, optionally in a ```json fence) or lines of the form
"Rating: N" (markdown emphasis around them tolerated, "/10" allowed); pairwise accepts
`{"winner": "A"|"B"|"tie"}` or "Verdict: A|B|tie" lines. Several lines that disagree, a value out of range, or no such line: invalid, with
the reason recorded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

Mode = Literal["single", "pairwise"]
FORMAT = {
    (
        "single",
        False,
    ): 'End your reply with one line of the exact form "Rating: N", N an integer from 1 to 10.',
    ("single", True): 'Reply with JSON only: {"rating": N}, N an integer from 1 to 10.',
    (
        "pairwise",
        False,
    ): 'End your reply with one line of the exact form "Verdict: A" if Assistant A\'s answer '
    'is better, "Verdict: B" if Assistant B\'s is better, or "Verdict: tie".',
    ("pairwise", True): 'Reply with JSON only: {"winner": "A"}, {"winner": "B"} or {"winner": "tie"}.',
}
SCHEMA = {
    "single": {
        "type": "object",
        "properties": {"rating": {"type": "integer", "enum": list(range(1, 11))}},
        "required": ["rating"],
        "additionalProperties": False,  # what OpenAI's strict mode asks of a schema
    },
    "pairwise": {
        "type": "object",
        "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
        "required": ["winner"],
        "additionalProperties": False,
    },
}
_EDGE = r"[ \t*_`#>\[\]().]*"  # markdown around the line; never a newline
RATING_LINE = re.compile(
    rf"^{_EDGE}rating{_EDGE}:{_EDGE}(\d+)(?:\s*/\s*10)?{_EDGE}$", re.IGNORECASE | re.MULTILINE
)
VERDICT_LINE = re.compile(rf"^{_EDGE}verdict{_EDGE}:{_EDGE}(a|b|tie){_EDGE}$", re.IGNORECASE | re.MULTILINE)


def _json_object(text: str) -> dict | None:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    if not body.startswith("{"):
        return None
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def parse_rating(text: str) -> tuple[int | None, str]:
    """(rating, "") from `{"rating": N}` or exactly one distinct "Rating: N" line, N in 1..10; else
    (None, why)."""
    if (obj := _json_object(text)) is not None:
        value = obj.get("rating")
        if type(value) is int and 1 <= value <= 10:
            return value, ""
        return None, f"JSON verdict without an integer rating 1-10 (rating={value!r})"
    values = sorted({int(v) for v in RATING_LINE.findall(text)})
    if not values:
        return None, 'no "Rating: N" line'
    if len(values) > 1:
        return None, f"conflicting ratings {values}"
    if not 1 <= values[0] <= 10:
        return None, f"rating {values[0]} outside 1-10"
    return values[0], ""


def parse_preference(text: str) -> tuple[str | None, str]:
    """("A" | "B" | "tie", "") from `{"winner": ...}` or exactly one distinct "Verdict: ..." line; else
    (None, why)."""
    if (obj := _json_object(text)) is not None:
        value = obj.get("winner")
        norm = {"a": "A", "b": "B", "tie": "tie"}.get(value.lower()) if isinstance(value, str) else None
        return (norm, "") if norm else (None, f"JSON verdict without winner A, B or tie (winner={value!r})")
    values = sorted({v.lower() for v in VERDICT_LINE.findall(text)})
    if not values:
        return None, 'no "Verdict: A|B|tie" line'
    if len(values) > 1:
        return None, f"conflicting verdicts {values}"
    return {"a": "A", "b": "B", "tie": "tie"}[values[0]], ""


PARSERS: dict[str, Callable[[str], tuple[Any, str]]] = {"single": parse_rating, "pairwise": parse_preference}
