"""String-matching metrics: `label` (the first answer line equals the label, today's rule), `exact` (the
whole answer equals the reference), `contains` (the reference appears in the answer) and `regex` (a captured
part of the answer equals the reference). All compare normalised text, so case, edge punctuation and spacing
never decide an item.
"""

from __future__ import annotations

import re
import unicodedata

from edgetune.evals.metrics.base import Metric, Score, binary
from edgetune.labels import label_matches, normalise_label


def normalise_text(text: str) -> str:
    """The comparable form of a whole answer: Unicode NFKC (full-width digits, ligatures), casefolded, every
    run of whitespace (newlines included) one space, and whitespace, punctuation and quotes stripped from both
    ends. Unlike `normalise_label`, every line counts: a multi-line answer is compared in full."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(text)
    while start < end and _edge_noise(text[start]):
        start += 1
    while end > start and _edge_noise(text[end - 1]):
        end -= 1
    return text[start:end]


def _edge_noise(char: str) -> bool:
    return char.isspace() or char in "\"'`" or unicodedata.category(char).startswith(("P", "Z"))


class Label(Metric, name="label"):
    description = "first answer line equals the label (normalised)"

    def reference_problem(self, reference: str) -> str | None:
        return None if normalise_label(reference) else "has an empty reference label"

    def score(self, output: str, reference: str) -> Score:
        return binary(label_matches(output, reference))


class Exact(Metric, name="exact"):
    description = "whole answer equals the reference (normalised)"

    def reference_problem(self, reference: str) -> str | None:
        return None if normalise_text(reference) else "has an empty reference (after normalisation)"

    def score(self, output: str, reference: str) -> Score:
        return binary(normalise_text(output) == normalise_text(reference))


class Contains(Exact, name="contains"):
    description = "the reference appears in the answer (normalised)"

    def score(self, output: str, reference: str) -> Score:
        # padded with spaces so "no" is not found inside "not" or "piano": whole words only
        return binary(f" {_words(reference)} " in f" {_words(output)} ")


def _words(text: str) -> str:
    """Text for a containment test, applied to answer and reference alike: punctuation becomes a space, so
    "(Paris)." contains "paris" and "re-run" is found in "re-run it"."""
    return " ".join("".join(c if not unicodedata.category(c).startswith("P") else " "
                            for c in normalise_text(text)).split())


class Regex(Metric, name="regex"):
    description = "the pattern's capture group (named `answer`, else group 1) equals the reference"

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.pattern = re.compile(spec.pattern)
        self.group: str | int = "answer" if "answer" in self.pattern.groupindex else 1

    def reference_problem(self, reference: str) -> str | None:
        return None if normalise_text(reference) else "has an empty reference (after normalisation)"

    def score(self, output: str, reference: str) -> Score:
        found = self.pattern.search(output)
        extracted = found.group(self.group) if found else None
        ok = extracted is not None and normalise_text(extracted) == normalise_text(reference)
        return binary(ok, {"extracted": extracted})
