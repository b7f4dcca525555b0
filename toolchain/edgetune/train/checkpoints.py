"""Training checkpoints that survive an interruption: kept beside the store's artifacts, outside the atomic build
folder (which a failed run deletes), under a name keyed by the stage key. A rerun with the same key resumes from
the newest complete checkpoint; the folder goes once the artifact is committed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from edgetune.artifacts import Store

log = logging.getLogger("edgetune.train")

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # written last by the Trainer: its presence marks a complete checkpoint


def checkpoint_dir(store: Store, kind: str, key: str) -> Path:
    """`<store>/<kind>/.<key[:16]>.checkpoints`: hidden beside the artifact folder the key will name."""
    return store.root / kind / f".{key[:16]}.checkpoints"


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint (its trainer state reads back), or None."""
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob(f"{PREFIX}*"):
        step = path.name[len(PREFIX):]
        if not step.isdigit():
            continue
        try:
            json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError):
            log.warning("ignoring incomplete checkpoint %s (no readable %s)", path, STATE_FILE)
            continue
        found.append((int(step), path))
    return max(found)[1] if found else None


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name[len(PREFIX):])


def remove(folder: Path) -> None:
    """Delete the checkpoints of a committed artifact. Ranks of a multi-process run share the folder and may
    race here: a file or the folder already gone is fine."""
    if not folder.exists():
        return
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    log.info("removed checkpoints %s (the adapter is committed)", folder)
