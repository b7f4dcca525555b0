"""File hashes memoised on (path, size, mtime_ns, ctime_ns, inode): a hit skips the read, any change re-reads."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time

from edgetune.artifacts import sha256_tree
from edgetune.hash_memo import HashMemo


def _old(path, seconds=3600):
    """Back-date the file's mtime so the memo trusts it (files modified within RACY_S are not remembered)."""
    past = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(past, past))


def _rows(memo):
    with sqlite3.connect(memo.db_path) as con:
        return dict(con.execute("SELECT path, sha256 FROM file_sha256").fetchall())


def test_memo_hit_is_served_from_the_table_and_a_changed_file_is_read_again(tmp_path):
    memo = HashMemo(tmp_path / "home" / "file-hashes.sqlite")
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"A" * 4096)
    _old(f)
    assert memo.sha256(f) == hashlib.sha256(b"A" * 4096).hexdigest()
    assert _rows(memo) == {str(f.resolve()): hashlib.sha256(b"A" * 4096).hexdigest()}
    # a hit comes from the table, not from the bytes: plant a marker there and get it back
    with sqlite3.connect(memo.db_path) as con:
        con.execute("UPDATE file_sha256 SET sha256 = 'from-the-memo'")
    assert memo.sha256(f) == "from-the-memo"
    # same size, new content: the stat changed, so the file is read again (and the marker replaced)
    stat = f.stat()
    f.write_bytes(b"B" * 4096)
    _old(f, 1800)
    assert memo.sha256(f) == hashlib.sha256(b"B" * 4096).hexdigest()
    # same size, new content, the first mtime put back (as `cp -p` or rsync -t would): ctime still moved
    memo.sha256(f)
    with sqlite3.connect(memo.db_path) as con:
        con.execute("UPDATE file_sha256 SET sha256 = 'stale', mtime_ns = ?", (stat.st_mtime_ns,))
    f.write_bytes(b"C" * 4096)
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert memo.sha256(f) == hashlib.sha256(b"C" * 4096).hexdigest()


def test_a_file_modified_just_now_is_hashed_but_not_remembered(tmp_path):
    memo = HashMemo(tmp_path / "file-hashes.sqlite")
    f = tmp_path / "data.jsonl"
    f.write_text('{"a": 1}\n')
    assert memo.sha256(f) == hashlib.sha256(b'{"a": 1}\n').hexdigest()
    assert _rows(memo) == {}  # a later write in the same timestamp tick could keep the stat unchanged


def test_tree_hash_is_unchanged_and_tracks_edits(tmp_path):
    memo = HashMemo(tmp_path / "file-hashes.sqlite")
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    for name, data in {"config.json": b"{}", "sub/w.bin": b"\0" * 1000}.items():
        (root / name).write_bytes(data)
        _old(root / name)
    plain = sha256_tree(root)
    assert memo.sha256_tree(root) == plain and memo.sha256_tree(root) == plain  # the same value as before
    assert len(_rows(memo)) == 2
    (root / "sub/w.bin").write_bytes(b"\1" * 1000)
    assert memo.sha256_tree(root) == sha256_tree(root) != plain


def test_unwritable_home_still_hashes_and_warns_once(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    memo = HashMemo(blocker / "file-hashes.sqlite")
    f = tmp_path / "x.bin"
    f.write_bytes(b"x")
    assert memo.sha256(f) == memo.sha256(f) == hashlib.sha256(b"x").hexdigest()
    assert caplog.text.count("file hashes are not memoised") == 1
