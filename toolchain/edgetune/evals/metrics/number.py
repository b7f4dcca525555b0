"""`number`: the final number of the answer against the reference's final number, GSM8K-style.

When the text holds a `####` marker (GSM8K's answer line), the first number after the last marker is taken;
otherwise the last number in the text. Thousands separators (1,234), a sign, decimals, a leading currency sign
and the Unicode minus are understood; fractions and words ("twelve") are not. Equal within `tolerance`.
"""

from __future__ import annotations

import re

from edgetune.evals.metrics.base import Metric, Score, binary

# 1,234,567.5 | -12 | 3.25 | .5 ; a lookbehind keeps "v2" and "x3" from reading as numbers
NUMBER = re.compile(r"(?<![\w.])[-−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.])[-−]?\.\d+")
MARKER = "####"


def final_number(text: str) -> float | None:
    """The number a GSM8K-style answer ends on, or None when there is none."""
    if MARKER in text:
        after = NUMBER.search(text.rsplit(MARKER, 1)[1])
        if after:
            return _value(after.group())
    found = NUMBER.findall(text)
    return _value(found[-1]) if found else None


def _value(token: str) -> float:
    return float(token.replace("−", "-").replace("$", "").replace(",", ""))


def ends_with_number(text: str) -> bool:
    """Whether `text` is a final-number answer: a `####` line with a number, or a number as its last word
    (trailing punctuation or a unit sign allowed): what auto-detection asks of every reference."""
    if MARKER in text:
        return NUMBER.search(text.rsplit(MARKER, 1)[1]) is not None
    return re.search(r"(?:" + NUMBER.pattern + r")[%.!)\s]*$", text.strip()) is not None


class Number(Metric, name="number"):
    description = "final number of the answer equals the reference's (within tolerance)"

    def reference_problem(self, reference: str) -> str | None:
        return None if final_number(reference) is not None else "has a reference with no number in it"

    def score(self, output: str, reference: str) -> Score:
        got, want = final_number(output), final_number(reference)
        ok = got is not None and want is not None and abs(got - want) <= self.spec.tolerance
        return binary(ok, {"extracted": got, "expected": want})
