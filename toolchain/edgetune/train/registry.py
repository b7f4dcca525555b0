"""A local adapter registry: adapters versioned by content, stored apart from their base model.

The tutorial's production advice: version adapters independently of the base, so a bad fine-tune rolls back
without touching the base deployment. `Registry(root).register(adapter_dir, ...)` copies the adapter files to
`root/<sha256 of the adapter content>[:16]/adapter/` with `metadata.json` (base model hash, data hash, train
config, metrics, created-at, tool versions). The folder is built under a temp name and renamed into place;
the same content registered again returns the existing entry and rewrites nothing.

MLflow: when `mlflow` is importable and a tracking URI is set (the `tracking_uri` argument, else
$MLFLOW_TRACKING_URI), a new entry is also logged there as a run: config as params, numeric metrics, the adapter
folder as an artifact. Without a URI nothing is logged (one debug line): MLflow 3's own default (sqlite
./mlflow.db in the working folder) needs SQLAlchemy, which mlflow-skinny lacks, and its ./mlruns file store is
refused unless MLFLOW_ALLOW_FILE_STORE=true. An MLflow failure is a WARNING recorded in metadata.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from edgetune.artifacts import canonical_json, sha256_file, sha256_tree, write_json
from edgetune.errors import ConfigError, TrainError
from edgetune.outputs import Adapter, BaseModel, DataSplit

log = logging.getLogger("edgetune.train")

METADATA_FILE = "metadata.json"
ADAPTER_DIR = "adapter"
ID_LENGTH = 16
MLFLOW_EXPERIMENT = "edgetune"
_VERSIONED = ("edgetune", "torch", "transformers", "peft", "trl")


@dataclass(frozen=True)
class Entry:
    id: str
    path: Path
    metadata: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": str(self.path), "adapter_dir": str(self.adapter_dir), **self.metadata}


def default_root(out_dir: Path) -> Path:
    """Where `edgetune build` and `edgetune train` register adapters: beside the run's store."""
    return Path(out_dir) / "registry"


def _versions() -> dict[str, str]:
    found = {}
    for name in _VERSIONED:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


class Registry:
    def __init__(self, root: Path, *, tracking_uri: str | None = None):
        self.root = Path(root)
        # MLflow's own variable (mlflow reads it too); an explicit URI wins
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None

    def register(self, adapter_dir: Path, *, base_hash: str, data_hash: str, config: dict[str, Any],
                 metrics: dict[str, Any]) -> Entry:
        """Store `adapter_dir` (adapter_config.json + weights) under its content hash. Idempotent. Raises
        TrainError when the folder is not a peft adapter."""
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise TrainError(f"{adapter_dir} is not an adapter folder (no adapter_config.json)",
                             "register the `adapter` folder a train artifact names")
        entry_id = sha256_tree(adapter_dir)[:ID_LENGTH]
        final = self.root / entry_id
        if (final / METADATA_FILE).is_file():
            log.info("adapter %s is already registered", entry_id)
            return self._load(final)
        meta = {"id": entry_id, "adapter_sha256": sha256_tree(adapter_dir), "base_sha256": base_hash,
                "data_sha256": data_hash, "config": json.loads(canonical_json(config)),
                "metrics": json.loads(canonical_json(metrics)), "versions": _versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{entry_id}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(adapter_dir, tmp / ADAPTER_DIR)
            meta["mlflow"] = self._log_mlflow(entry_id, tmp / ADAPTER_DIR, meta)
            write_json(tmp / METADATA_FILE, meta)
            try:
                os.rename(tmp, final)  # atomic; fails if another process published the same content first
            except OSError:
                if not (final / METADATA_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("registered adapter %s in %s", entry_id, self.root)
        return self._load(final)

    def list_entries(self) -> list[Entry]:
        """Every complete entry, oldest first."""
        if not self.root.is_dir():
            return []
        entries = [self._load(p) for p in self.root.iterdir()
                   if not p.name.startswith(".") and (p / METADATA_FILE).is_file()]
        return sorted(entries, key=lambda e: (e.metadata.get("created", ""), e.id))

    def get(self, id_prefix: str) -> Entry:
        """The one entry whose id starts with `id_prefix`. Raises ConfigError for none or several."""
        matches = [e for e in self.list_entries() if id_prefix and e.id.startswith(id_prefix)]
        if len(matches) != 1:
            what = "no adapter" if not matches else f"{len(matches)} adapters"
            raise ConfigError(f"{what} in {self.root} with an id starting {id_prefix!r}",
                              "give a longer id prefix; `edgetune --json train` prints the full id")
        return matches[0]

    def _load(self, path: Path) -> Entry:
        meta = json.loads((path / METADATA_FILE).read_text())
        return Entry(path.name, path, meta)

    def _log_mlflow(self, entry_id: str, adapter_dir: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
        try:
            import mlflow
        except ImportError:
            log.debug("mlflow is not installed: the adapter is registered locally only")
            return None
        if not self.tracking_uri:
            log.debug("no MLflow tracking URI (set MLFLOW_TRACKING_URI): the adapter is registered locally only")
            return None
        from mlflow.exceptions import MlflowException

        try:
            return self._mlflow_run(mlflow, entry_id, adapter_dir, meta)
        except (MlflowException, OSError) as exc:  # a server down or a backend it cannot open
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("adapter %s registered locally but not in MLflow (%s): %s; check MLFLOW_TRACKING_URI",
                        entry_id, self.tracking_uri, reason)
            return {"tracking_uri": self.tracking_uri, "error": reason}

    def _mlflow_run(self, mlflow, entry_id: str, adapter_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(MLFLOW_EXPERIMENT)
        params = {f"train.{k}": v for k, v in meta["config"].items()}
        params.update(base_sha256=meta["base_sha256"], data_sha256=meta["data_sha256"], adapter_id=entry_id)
        numeric = {k: float(v) for k, v in meta["metrics"].items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        with mlflow.start_run(run_name=f"adapter-{entry_id}") as run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics(numeric)
            mlflow.set_tags({"edgetune.adapter_id": entry_id})
            mlflow.log_artifacts(str(adapter_dir), artifact_path=ADAPTER_DIR)
        log.info("logged adapter %s to MLflow run %s", entry_id, run.info.run_id)
        return {"tracking_uri": self.tracking_uri, "run_id": run.info.run_id, "experiment": MLFLOW_EXPERIMENT}


def register_trained(registry: Registry, trained: Adapter, base: BaseModel, data: DataSplit) -> Entry:
    """Register a train artifact's adapter with the hashes that pin what it was made from: the base model's
    source hash and the content hash of the training split."""
    # every metric the record holds, as recorded (MLflow logs the numeric ones)
    return registry.register(trained.adapter_dir, base_hash=base.source_sha256,
                             data_hash=sha256_file(data.train_path), config=trained.record.get("params", {}),
                             metrics=trained.metrics)
