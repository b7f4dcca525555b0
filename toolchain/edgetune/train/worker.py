"""One process of a multi-process train run, started by `accelerate launch -m edgetune.train.worker REQUEST`.

REQUEST is the JSON file `edgetune.train.launch` writes: the train config, the base and data artifact folders,
the store root, threads, whether the OOM fallback is on (one process only) and where to write the outcome. Every rank runs the same train stage (the Trainer
picks up accelerate's environment: DDP or FSDP); rank 0 writes into the real store, the others read it (cache hits,
shared checkpoints) but write their copy of the artifact to a scratch store that is thrown away. An EdgetuneError is written to the outcome file so the launcher can repeat it
word for word, then re-raised (a non-zero exit for torchrun).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from edgetune.artifacts import Artifact, Store, write_json
from edgetune.constants import ARTIFACT_FILE
from edgetune.errors import EdgetuneError


def load_artifact(path: Path) -> Artifact:
    record = json.loads((Path(path) / ARTIFACT_FILE).read_text())
    return Artifact(record["kind"], record["key"], Path(path), record, cached=True)


class RankStore(Store):
    """What a rank other than 0 sees: the real store for lookups and checkpoints (the Trainer expects one
    checkpoint folder shared by all ranks, and every rank must agree on a cache hit), a scratch store for
    its own copy of the artifact."""

    def __init__(self, root: str | Path, scratch: str | Path):
        super().__init__(Path(root))
        self.scratch = Store(Path(scratch))

    def build(self, *args, **kwargs):
        return self.scratch.build(*args, **kwargs)


def main(request_path: str) -> None:
    from edgetune.config import TrainConfig
    from edgetune.outputs import BaseModel, DataSplit
    from edgetune.train import stage

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    req = json.loads(Path(request_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    with tempfile.TemporaryDirectory(prefix=f"edgetune-rank{rank}-") as scratch:
        store = Store(req["store"]) if rank == 0 else RankStore(req["store"], scratch)
        try:
            base, data = BaseModel.of(load_artifact(req["base"])), DataSplit.of(load_artifact(req["data"]))
            art = stage.run(TrainConfig.model_validate(req["train"]), base, data, store,
                            threads=req.get("threads"), oom_fallback=req.get("oom_fallback", False),
                            processes=int(os.environ.get("WORLD_SIZE", "1")))
        except EdgetuneError as exc:
            if rank == 0:
                write_json(Path(req["result"]), {"error": {"type": type(exc).__name__, "message": exc.message,
                                                           "hint": exc.hint}})
            raise
        if rank == 0:
            write_json(Path(req["result"]), {"artifact": str(art.path), "world_size": os.environ.get("WORLD_SIZE")})


if __name__ == "__main__":
    main(sys.argv[1])
