"""`text`: free-text answers scored by overlap with the reference: chrF (sacrebleu; character n-grams, robust
to inflection and tokenisation) as the item's score, and ROUGE-L F1 (rouge-score; longest common word
subsequence) beside it. `correct` is the strict view: the answer equals the reference after normalisation.
"""

from __future__ import annotations

from edgetune.evals.metrics.base import Metric, Score
from edgetune.evals.metrics.match import normalise_text


class Text(Metric, name="text"):
    binary = False
    description = "chrF against the reference (0-1), ROUGE-L F1 beside it; correct: normalised exact match"

    def __init__(self, spec) -> None:
        super().__init__(spec)
        from rouge_score.rouge_scorer import RougeScorer
        from sacrebleu.metrics import CHRF

        self.chrf = CHRF()
        self.rouge = RougeScorer(["rougeL"])

    def score(self, output: str, reference: str) -> Score:
        chrf = self.chrf.sentence_score(output, [reference]).score / 100.0
        rouge_l = self.rouge.score(reference, output)["rougeL"].fmeasure
        # clamp: sacrebleu's float arithmetic can land a hair outside [0, 1] for identical strings
        chrf = min(1.0, max(0.0, float(chrf)))
        return Score(chrf, normalise_text(output) == normalise_text(reference),
                     {"chrf": round(chrf, 6), "rouge_l": round(float(rouge_l), 6)})
