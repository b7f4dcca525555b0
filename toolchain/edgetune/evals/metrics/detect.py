"""Which metric a data set calls for, read from its references, and how many tokens an answer may take.

Detection, first rule that holds for every reference wins: a JSON object or array -> `json`; a final number
(`#### 18`, or a number as the last word) -> `number`; a small set of short labels -> `label`; anything else ->
`text`. Number comes before label so "18"-style answers are compared as numbers (18.0 = 18), not as strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from edgetune.evals.metrics.number import ends_with_number
from edgetune.labels import normalise_label

MAX_LABELS = 20  # more distinct answers than this is not a label set
MAX_LABEL_WORDS = 3
MAX_LABEL_CHARS = 32
LABEL_TOKENS = 4  # what label scoring always generated; kept so label tasks score exactly as before
MARGIN_TOKENS = 16
MAX_DERIVED_TOKENS = 512  # a derived budget never exceeds this (prompt + answer must fit the runtime context)


def _json_container(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (dict, list))
    except json.JSONDecodeError:
        return False


def _short_label(text: str) -> bool:
    label = normalise_label(text)
    return bool(label) and "\n" not in text.strip() and len(label) <= MAX_LABEL_CHARS \
        and len(label.split()) <= MAX_LABEL_WORDS


def detect_metric(references: Sequence[str]) -> tuple[str, str]:
    """(metric name, the reason in words) for a task whose answers are `references`. Raises ValueError for no
    references."""
    refs = [r.strip() for r in references]
    if not refs:
        raise ValueError("cannot detect a metric without references")
    if all(_json_container(r) for r in refs):
        return "json", "every reference is a JSON object or array"
    if all(ends_with_number(r) for r in refs):
        return "number", "every reference ends with a number"
    labels = {normalise_label(r) for r in refs}
    if all(_short_label(r) for r in refs) and len(labels) <= MAX_LABELS:
        return "label", f"{len(labels)} distinct short labels"
    return "text", "free-text references (not JSON, not final numbers, not a small label set)"


def percentile(values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile (q in (0, 100]): a value that occurs in `values`, no interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def derive_max_new_tokens(metric: str, reference_tokens: Sequence[int]) -> int:
    """Greedy tokens to allow per answer. label: 4, as always (more only when a label itself is longer than 2
    tokens), so a label task scores as before. Others: the 99th percentile of the references' token lengths
    plus a quarter and 16 tokens, so a build that answers a little longer than the reference is not cut off,
    capped at MAX_DERIVED_TOKENS. Raises ValueError for no lengths."""
    if not reference_tokens:
        raise ValueError("cannot derive max_new_tokens without references")
    if metric == "label":
        return max(LABEL_TOKENS, max(reference_tokens) + 2)
    p99 = percentile(reference_tokens, 99)
    return min(MAX_DERIVED_TOKENS, math.ceil(1.25 * p99) + MARGIN_TOKENS)
