"""The tutorial's rank sweep: train ranks 4, 8, 16, 32 on a slice of the data, score each on held-out items.

Reads the data and base artifacts. Writes a `data-subset` artifact (the first `fraction` of the training split,
at least `min_examples`; the held-out split unchanged), one train + merge artifact per rank (cached like any
stage), and `sweep.json` / `sweep.md` in `run_dir`. Each rank keeps the config's alpha/r ratio (the tutorial's
alpha = 2r by default). Scores, per rank, on the same held-out items as the build's task eval:
- accuracy: greedy answers (the merged model in transformers, fp32) compared with the label, as `evals.task`;
- heldout_nll: mean negative log-likelihood per answer token (teacher-forced), finer-grained than accuracy.
The chosen rank has the best `metric` (accuracy: highest, heldout_nll: lowest); ties go to the smaller rank.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from edgetune import merge
from edgetune.artifacts import Builder, Store, atomic_write_text, write_json
from edgetune.config import TrainConfig
from edgetune.data import read_examples
from edgetune.errors import ConfigError
from edgetune.outputs import BaseModel, DataSplit
from edgetune.progress import Progress
from edgetune.train.launch import train_adapter

log = logging.getLogger("edgetune.train")

KIND_SUBSET = "data-subset"
DEFAULT_RANKS = (4, 8, 16, 32)
Metric = Literal["accuracy", "heldout_nll"]


@dataclass(frozen=True)
class SweepRow:
    rank: int
    alpha: int
    accuracy: float
    heldout_nll: float
    loss_last: float
    train_s: float
    trainable_params: int
    adapter: str


@dataclass(frozen=True)
class SweepResult:
    rows: list[SweepRow]
    chosen_rank: int
    metric: str
    n_train: int
    n_heldout: int
    json_path: Path
    md_path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"chosen_rank": self.chosen_rank, "metric": self.metric, "n_train": self.n_train,
                "n_heldout": self.n_heldout, "rows": [asdict(r) for r in self.rows],
                "sweep_json": str(self.json_path), "sweep_md": str(self.md_path)}

    def table(self) -> str:
        lines = ["| rank | alpha | accuracy | held-out NLL/token | train loss (last) | train s | trainable |",
                 "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            mark = " **chosen**" if r.rank == self.chosen_rank else ""
            lines.append(f"| {r.rank}{mark} | {r.alpha} | {r.accuracy:.1%} | {r.heldout_nll:.4f} | "
                         f"{r.loss_last:.4f} | {r.train_s:.1f} | {r.trainable_params:,} |")
        return "\n".join(lines)


def subset(data: DataSplit, store: Store, fraction: float, min_examples: int) -> DataSplit:
    """The first ceil(fraction x n) training examples (at least `min_examples`, at most all) as a data artifact
    with the same held-out split. Raises ConfigError for a fraction outside (0, 1]."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"sweep fraction must be in (0, 1], got {fraction}", "e.g. --fraction 0.1 for 10%")
    train = read_examples(data.train_path)
    n = min(len(train), max(min_examples, math.ceil(fraction * len(train))))
    params = {"fraction": fraction, "min_examples": min_examples, "n": n}

    def build(b: Builder) -> None:
        atomic_write_text(b.path / DataSplit.TRAIN_FILE, "".join(json.dumps(ex) + "\n" for ex in train[:n]))
        atomic_write_text(b.path / DataSplit.HELDOUT_FILE, data.heldout_path.read_text())
        DataSplit.write(b, n_train=n, n_heldout=data.n_heldout, of_train=len(train))

    return DataSplit.of(store.stage(KIND_SUBSET, params, {"data": data.key}, build))


def choose(rows: list[SweepRow], metric: Metric) -> int:
    """The best rank by `metric`; ties go to the smaller rank."""
    sign = -1 if metric == "accuracy" else 1
    return min(rows, key=lambda r: (sign * getattr(r, metric), r.rank)).rank


def _score(merged_dir: Path, examples: list[dict[str, Any]], max_new_tokens: int) -> tuple[float, float]:
    import torch
    from transformers import AutoTokenizer

    from edgetune.evals.stage import stop_ids, task_items
    from edgetune.evals.task import run_label_accuracy
    from edgetune.runtimes import HFRuntime

    tok = AutoTokenizer.from_pretrained(merged_dir)
    items = task_items(examples, tok)
    with HFRuntime(merged_dir, device="cuda" if torch.cuda.is_available() else "cpu") as rt:
        # decode of one sequence is a str (transformers types it str | list[str])
        acc = run_label_accuracy(rt, items, decode=lambda ids: str(tok.decode(ids, skip_special_tokens=True)),
                                 max_new_tokens=max_new_tokens, stop_ids=stop_ids(tok)).accuracy
        conts = [tok(it.reference, add_special_tokens=False)["input_ids"] for it in items]
        scored = rt.loglikelihood([(it.prompt_ids, c) for it, c in zip(items, conts, strict=True)])
    nll = -sum(lp for lp, _ in scored) / sum(len(c) for c in conts)
    return acc, nll


def run_sweep(cfg: TrainConfig, base: BaseModel, data: DataSplit, store: Store, run_dir: Path, *,
              ranks: tuple[int, ...] = DEFAULT_RANKS, fraction: float = 0.1, min_examples: int = 8,
              heldout_items: int | None = 50, max_new_tokens: int = 8, metric: Metric = "accuracy",
              threads: int | None = None, progress: Progress | None = None) -> SweepResult:
    """Train and score every rank; write sweep.json and sweep.md to `run_dir`. Raises ConfigError for bad
    ranks or fraction, and whatever the train and merge stages raise."""
    if not ranks or any(r < 1 for r in ranks) or len(set(ranks)) != len(ranks):
        raise ConfigError(f"sweep ranks must be distinct positive integers, got {list(ranks)}", "e.g. --ranks 4,8,16,32")
    if metric not in ("accuracy", "heldout_nll"):
        raise ConfigError(f"unknown sweep metric {metric!r}", "use accuracy or heldout_nll")
    part = subset(data, store, fraction, min_examples)
    heldout = read_examples(part.heldout_path)[:heldout_items]
    rows = []
    for r in sorted(ranks):
        alpha = max(1, round(cfg.alpha * r / cfg.r))
        # through the launcher, as build and train do (one process: a rank is a small run on one device)
        trained = train_adapter(cfg.model_copy(update={"r": r, "alpha": alpha}), base, part, store,
                                threads=threads, progress=progress).artifact
        merged = merge.run(base, trained, store)
        acc, nll = _score(merged.model_dir, heldout, max_new_tokens)
        m = trained.training
        rows.append(SweepRow(r, alpha, acc, nll, m.loss_last, m.train_s, m.trainable_params,
                             str(trained.adapter_dir)))
        log.info("sweep r=%d: accuracy %.3f, held-out NLL %.4f", r, acc, nll)
    chosen = choose(rows, metric)
    result = SweepResult(rows, chosen, metric, part.n_train, len(heldout), Path(run_dir) / "sweep.json",
                         Path(run_dir) / "sweep.md")
    write_json(result.json_path, {**result.to_dict(), "base": str(base.model_dir), "train": cfg.model_dump()})
    atomic_write_text(result.md_path, f"# Rank sweep\n\n{result.n_train} training examples ({fraction:.0%} of the "
                      f"split, at least {min_examples}), {result.n_heldout} held-out items; chosen by {metric} "
                      f"(ties: smaller rank): **r={chosen}**\n\n{result.table()}\n")
    return result
