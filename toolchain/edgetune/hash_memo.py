"""Content hashes of input files and folders, memoised so a rebuild does not re-read whole model folders.

The stage cache keys a local base model, a data folder or a judge GGUF by its content hash; hashing a 500 MB
model folder on every `edgetune build` costs seconds to minutes. A file's SHA-256 is remembered in a small
SQLite table under `$EDGETUNE_HOME` (`file-hashes.sqlite`), keyed on its absolute path and checked against what
`stat` says now: size, mtime_ns, ctime_ns, inode and device. Any change to the file (a rewrite, even one of the
same size with its mtime put back, which still moves ctime) makes a mismatch, and the file is read again.
Two guards keep the memo from ever serving a stale hash: a file modified within `RACY_S` seconds of being
hashed is not remembered (a later write in the same timestamp tick could keep its stat unchanged, git's
"racily clean" case), and a file whose stat changed while it was being read is not remembered either.

Only fingerprints for cache keys use this; verification of a bundle or a transfer always reads the bytes
(artifacts.sha256_file). When the memo cannot be opened or written (a read-only home), hashing still works
and one WARNING says so.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from edgetune.artifacts import sha256_file, sha256_tree

log = logging.getLogger(__name__)

MEMO_FILE = "file-hashes.sqlite"
RACY_S = 2.0  # files modified this recently are hashed but not remembered
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS file_sha256 (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
    "ctime_ns INTEGER, ino INTEGER, dev INTEGER, sha256 TEXT)"
)
_warned: set[Path] = set()


def _stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class HashMemo:
    """SHA-256 of files, memoised in the SQLite file `db_path` (see the module docstring)."""

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)

    @classmethod
    def default(cls) -> HashMemo:
        from edgetune.home import edgetune_home

        return cls(edgetune_home() / MEMO_FILE)

    def _connect(self) -> sqlite3.Connection | None:
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.db_path, timeout=30)
            con.execute(_SCHEMA)
            return con
        except (OSError, sqlite3.Error) as exc:
            self._warn(exc)
            return None

    def _warn(self, exc: Exception) -> None:
        if self.db_path not in _warned:
            _warned.add(self.db_path)
            log.warning("file hashes are not memoised (%s: %s): every build re-reads its input files; make "
                        "%s writable or set EDGETUNE_HOME", self.db_path, exc, self.db_path.parent)

    def sha256(self, path: Path) -> str:
        """The SHA-256 of `path`'s bytes: from the memo when its stat is unchanged, else read (and remembered)."""
        path = Path(path).resolve()
        before = _stamp(path.stat())
        con = self._connect()
        try:
            if con is not None:
                row = con.execute("SELECT size, mtime_ns, ctime_ns, ino, dev, sha256 FROM file_sha256 "
                                  "WHERE path = ?", (str(path),)).fetchone()
                if row is not None and tuple(row[:5]) == before:
                    return str(row[5])
            digest = sha256_file(path)
            after = _stamp(path.stat())
            fresh = time.time_ns() - after[1] < RACY_S * 1e9
            if con is not None and after == before and not fresh:
                try:
                    with con:
                        con.execute("INSERT OR REPLACE INTO file_sha256 VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    (str(path), *after, digest))
                except sqlite3.Error as exc:
                    self._warn(exc)
            return digest
        finally:
            if con is not None:
                con.close()

    def sha256_tree(self, root: Path) -> str:
        """artifacts.sha256_tree of `root` (the same value), each file's hash memoised."""
        return sha256_tree(root, file_hash=self.sha256)


def sha256_file_memo(path: Path) -> str:
    """SHA-256 of a file, memoised under $EDGETUNE_HOME (for cache keys, never for verification)."""
    return HashMemo.default().sha256(path)


def sha256_tree_memo(root: Path) -> str:
    """artifacts.sha256_tree of a folder, each file's hash memoised under $EDGETUNE_HOME."""
    return HashMemo.default().sha256_tree(root)
