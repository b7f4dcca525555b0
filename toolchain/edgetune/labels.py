"""Label normalisation for exact-match task metrics: one rule for every stage that scores a label answer.

A neutral, low module (no stage imports) so the train stage's per-epoch check and the evals stage score the
same way without train importing a later stage.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable


def normalise_label(text: str) -> str:
    """The comparable form of a label or a model's answer.

    Steps, in order: drop leading whitespace and keep the first line (a model that answers and then goes on
    is judged on its answer line); lowercase; strip every whitespace, punctuation and quote character from
    both ends (Unicode categories Z*, P* and the quote-like symbols `"'` and backtick, so `“Positive.”` and
    `'positive'` become `positive`); collapse inner runs of whitespace to one space. Inner punctuation stays
    (`re-run` is not `rerun`).
    """
    lines = text.lstrip().splitlines()
    first = lines[0].lower() if lines else ""
    start, end = 0, len(first)
    while start < end and _is_edge_noise(first[start]):
        start += 1
    while end > start and _is_edge_noise(first[end - 1]):
        end -= 1
    return " ".join(first[start:end].split())


def _is_edge_noise(char: str) -> bool:
    return char.isspace() or char in "\"'`" or unicodedata.category(char).startswith(("P", "Z"))


def label_matches(output: str, reference: str) -> bool:
    """Whether a model's output gives the reference label: the normalised forms are equal. An answer that adds
    words on the same line (`positive review`) is wrong: a prefix rule would let `no` match `not sure`."""
    return normalise_label(output) == normalise_label(reference)


STRICT, STARTS_WITH_LABEL, LABEL_ELSEWHERE, NO_LABEL = "strict", "starts_with_label", "label_elsewhere", "no_label"


def answer_form(output: str, labels: Iterable[str]) -> str:
    """How an answer relates to a label set, for the near-miss counts next to the strict score (which stays
    `label_matches`): STRICT (it is a label), STARTS_WITH_LABEL (a label, then more: "No, the premise ..."),
    LABEL_ELSEWHERE (a label as a word later on) or NO_LABEL. Labels are compared normalised, whole words only,
    so `no` does not count in `not sure`."""
    answer = normalise_label(output)
    forms = sorted({normalise_label(label) for label in labels} - {""}, key=len, reverse=True)
    if answer in forms:
        return STRICT
    for label in forms:
        if answer.startswith(label) and not answer[len(label)].isalnum():
            return STARTS_WITH_LABEL
    text = " ".join(output.lower().split())
    for label in forms:
        if re.search(rf"(?<![\w]){re.escape(label)}(?![\w])", text):
            return LABEL_ELSEWHERE
    return NO_LABEL
