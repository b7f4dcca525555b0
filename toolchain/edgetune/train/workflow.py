"""The stage composition that `edgetune build`, `edgetune train` and `edgetune sweep` share: `inputs` (data and
base), `train_registered` (the adapter through the launcher, registered), and the two short commands built from
them (`train_only`, `sweep_only`). `pipeline.build` runs `inputs` and `train_registered` and goes on to merge,
export and evals, so the three commands cannot drift apart in how they make what they share. Same store and
cache for all (`<out_dir>/store`), so a later build reuses the data, base and (same settings) train artifacts.

Writes the stage artifacts, the registry entry (`<out_dir>/registry/<id>/`) and, for the sweep,
`<out_dir>/runs/sweep-<name>/sweep.json|md`. Raises what the stages raise (ConfigError, DataError, ModelError,
TrainError).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune import basemodel, data
from edgetune.artifacts import Store
from edgetune.config import BuildConfig
from edgetune.evals.metrics.detect import LABEL_TOKENS  # the sweep scores labels, as it always has
from edgetune.outputs import BaseModel, DataSplit
from edgetune.progress import Progress
from edgetune.train.launch import Trained, train_adapter
from edgetune.train.registry import Entry, Registry, default_root, register_trained
from edgetune.train.sweep import DEFAULT_RANKS, Metric, SweepResult, run_sweep


@dataclass(frozen=True)
class TrainRun:
    trained: Trained
    entry: Entry

    @property
    def adapter_dir(self) -> Path:
        return self.trained.artifact.adapter_dir

    def to_dict(self) -> dict[str, Any]:
        art = self.trained.artifact
        m = art.training
        return {"adapter": str(self.adapter_dir), "registry_id": self.entry.id, "registry": str(self.entry.path),
                "artifact": str(art.path), "cached": art.cached, "processes": self.trained.processes,
                "strategy": self.trained.strategy, "oom_fallback": self.trained.fallbacks,
                "metrics": {"method": m.method, "adapter": m.adapter, "steps": m.steps,
                            "loss_first": m.loss_first, "loss_last": m.loss_last,
                            "eval_loss_last": m.eval_loss_last, "eval_accuracy_last": m.eval_accuracy_last,
                            "train_s": m.train_s}}


def inputs(cfg: BuildConfig) -> tuple[Store, DataSplit, BaseModel]:
    """The store and the data and base artifacts; `edgetune build` makes them here too. The held-out part is
    sized for the report's verdict: enough items for a near-lossless quant (2% of items flipped) to be shown
    "not worse" at eval.margin (report.verdict.heldout_needed), within data's share limits."""
    from edgetune.report.verdict import heldout_needed

    store = Store(cfg.out_dir / "store")
    verdict_items = heldout_needed(cfg.eval.margin, disagreement=0.02)
    return store, data.run(cfg.data, store, verdict_items=verdict_items), basemodel.run(cfg.model, store)


def train_registered(cfg: BuildConfig, store: Store, data_art: DataSplit, base: BaseModel, *, gpus: int = 1,
                     fsdp: bool | None = None, cpu: bool = False, tracking_uri: str | None = None,
                     progress: Progress | None = None) -> TrainRun:
    """The train stage through the launcher (train/launch.py: in this process on a CPU or one GPU, N GPUs
    through accelerate when gpus > 1; `cpu`: N CPU processes, for tests), then the adapter registered. What
    `build` and `train` both run."""
    trained = train_adapter(cfg.train, base, data_art, store, gpus=gpus, fsdp=fsdp, cpu=cpu, threads=cfg.threads,
                            progress=progress)
    entry = register_trained(Registry(default_root(cfg.out_dir), tracking_uri=tracking_uri), trained.artifact,
                             base, data_art)
    return TrainRun(trained, entry)


def train_only(cfg: BuildConfig, *, gpus: int = 1, fsdp: bool | None = None, tracking_uri: str | None = None,
               progress: Progress | None = None) -> TrainRun:
    """data → base → train, registered (`edgetune train`)."""
    store, data_art, base = inputs(cfg)
    return train_registered(cfg, store, data_art, base, gpus=gpus, fsdp=fsdp, tracking_uri=tracking_uri,
                            progress=progress)


def sweep_only(cfg: BuildConfig, run_dir: Path, *, ranks: tuple[int, ...] = DEFAULT_RANKS, fraction: float = 0.1,
               metric: Metric = "accuracy", progress: Progress | None = None) -> SweepResult:
    """data → base → the rank sweep on a slice of the training split, scored on the held-out split."""
    store, data_art, base = inputs(cfg)
    return run_sweep(cfg.train, base, data_art, store, run_dir, ranks=ranks, fraction=fraction, metric=metric,
                     max_new_tokens=cfg.eval.max_new_tokens or LABEL_TOKENS, threads=cfg.threads, progress=progress)
