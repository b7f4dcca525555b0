"""Judge verdicts on disk: one JSON file per verdict, `<cache_dir>/<key[:2]>/<key>.json`, written atomically
as each verdict arrives, so a rerun asks the judge nothing it already answered and an interrupted run keeps every
finished verdict.

The key is the sha256 of everything that decides the verdict: the judge model and its sampling settings, the
rubric (content hash), the mode, the order the answers were shown in and the exact messages sent (question,
answers, reference, format instructions). Records never hold the API key (the config only names its variable).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from edgetune.artifacts import atomic_write_text, canonical_json

log = logging.getLogger(__name__)

CACHE_SCHEMA = 1


def verdict_key(
    *,
    model: str,
    sampling: dict[str, Any],
    rubric_sha256: str,
    mode: str,
    order: str,
    messages: list[dict[str, str]],
) -> str:
    """sha256 of the judge model + sampling + rubric + mode + order + the messages (prompt, answers)."""
    blob = canonical_json(
        {
            "schema": CACHE_SCHEMA,
            "model": model,
            "sampling": sampling,
            "rubric": rubric_sha256,
            "mode": mode,
            "order": order,
            "messages": messages,
        }
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class VerdictCache:
    """A folder of verdict records. Reads and writes only under `root`; creates it on first use."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored for `key`, or None. A record that does not parse (hand-edited, foreign file) is
        reported with a WARNING and treated as missing: the verdict is asked for again and overwritten."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("judge cache entry %s is unreadable; asking the judge again", path)
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            log.warning("judge cache entry %s does not match its key; asking the judge again", path)
            return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store `record` under `key` (atomic: a reader sees the old file or the whole new one)."""
        atomic_write_text(
            self._path(key), json.dumps({**record, "key": key}, indent=1, sort_keys=True) + "\n"
        )

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.json")) if self.root.is_dir() else 0
