"""Label normalisation for exact-match task metrics: one rule for every stage that scores a label answer.

A neutral, low module (no stage imports) so the train stage's per-epoch check and the evals stage score the
same way without train importing a later stage.
"""

from __future__ import annotations

import unicodedata


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
