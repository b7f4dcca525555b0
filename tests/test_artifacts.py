"""The artifact store: atomic publishing, record checks on lookup, content hashes and stage keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgetune.artifacts import Store, atomic_write_text, sha256_file, sha256_tree, stage_key
from edgetune.constants import ARTIFACT_FILE

KEY = stage_key("demo", {"x": 1}, {"src": "abc"})


def entries(root: Path) -> list[str]:
    """Every path under root (hidden temp folders included), relative, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def build_demo(store: Store, key: str = KEY, text: str = "hello"):
    with store.build("demo", key, {"x": 1}, {"src": "abc"}, tools={"llama.cpp": "rev"}) as b:
        (b.path / "out.txt").write_text(text)
        b.outputs["text"] = "out.txt"
        b.metrics["n"] = 3
    return b.artifact


class TestBuild:
    def test_publishes_folder_and_record(self, tmp_path):
        store = Store(tmp_path)
        art = build_demo(store)
        assert art.path == tmp_path / "demo" / KEY[:16]
        assert entries(tmp_path) == ["demo", f"demo/{KEY[:16]}", f"demo/{KEY[:16]}/{ARTIFACT_FILE}",
                                     f"demo/{KEY[:16]}/out.txt"]
        record = json.loads((art.path / ARTIFACT_FILE).read_text())
        assert record["kind"] == "demo" and record["key"] == KEY
        assert record["params"] == {"x": 1} and record["inputs"] == {"src": "abc"}
        assert record["outputs"] == {"text": "out.txt"} and record["metrics"] == {"n": 3}
        assert record["tools"]["llama.cpp"] == "rev" and "edgetune" in record["tools"]
        assert art.file("text").read_text() == "hello"
        assert art.metrics == {"n": 3} and not art.cached

    def test_builds_in_a_hidden_temp_folder(self, tmp_path):
        store = Store(tmp_path)
        with store.build("demo", KEY, {}, {}) as b:
            assert b.path.parent == tmp_path / "demo"
            assert b.path.name.startswith(".") and ".tmp-" in b.path.name
            assert store.lookup("demo", KEY) is None  # nothing visible until the block ends
            assert not (tmp_path / "demo" / KEY[:16]).exists()

    def test_exception_publishes_nothing(self, tmp_path):
        store = Store(tmp_path)
        with pytest.raises(RuntimeError, match="boom"):
            with store.build("demo", KEY, {}, {}) as b:
                (b.path / "half.txt").write_text("partial")
                raise RuntimeError("boom")
        assert entries(tmp_path) == ["demo"]  # no artifact folder, no temp folder
        assert store.lookup("demo", KEY) is None

    def test_exception_keeps_an_earlier_artifact_with_another_key(self, tmp_path):
        store = Store(tmp_path)
        other = build_demo(store, stage_key("demo", {"x": 2}, {}))
        with pytest.raises(KeyboardInterrupt):
            with store.build("demo", KEY, {}, {}):
                raise KeyboardInterrupt
        assert entries(tmp_path / "demo") == [other.path.name, f"{other.path.name}/{ARTIFACT_FILE}",
                                              f"{other.path.name}/out.txt"]

    def test_stale_temp_folder_is_replaced(self, tmp_path):
        store = Store(tmp_path)
        stale = tmp_path / "demo" / f".{KEY[:16]}.tmp-{os.getpid()}"
        stale.mkdir(parents=True)
        (stale / "junk").write_text("left by a crash")
        art = build_demo(store)
        assert not stale.exists()
        assert sorted(p.name for p in art.path.iterdir()) == [ARTIFACT_FILE, "out.txt"]


class TestLookup:
    def test_hit_after_build(self, tmp_path):
        store = Store(tmp_path)
        built = build_demo(store)
        hit = store.lookup("demo", KEY)
        assert hit == built and hit.cached and hit.record["outputs"] == {"text": "out.txt"}

    def test_miss_on_empty_store(self, tmp_path):
        assert Store(tmp_path / "none").lookup("demo", KEY) is None
        assert not (tmp_path / "none").exists()  # lookup creates nothing

    def test_folder_without_record_is_ignored(self, tmp_path):
        (tmp_path / "demo" / KEY[:16]).mkdir(parents=True)
        assert Store(tmp_path).lookup("demo", KEY) is None

    def test_mismatched_key_is_ignored_and_replaced(self, tmp_path):
        store = Store(tmp_path)
        built = build_demo(store)
        same_prefix = KEY[:16] + "0" * 48  # same folder name, another key
        assert same_prefix != KEY
        assert store.lookup("demo", same_prefix) is None
        rebuilt = build_demo(store, same_prefix, text="other")
        assert rebuilt.path == built.path
        assert store.lookup("demo", KEY) is None
        assert store.lookup("demo", same_prefix).file("text").read_text() == "other"

    @pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00\x01garbage", b"[1, 2]", b"null", b""],
                             ids=["bad-json", "binary", "list", "null", "empty"])
    def test_corrupt_record_is_ignored(self, tmp_path, content):
        store = Store(tmp_path)
        art = build_demo(store)
        (art.path / ARTIFACT_FILE).write_bytes(content)
        assert store.lookup("demo", KEY) is None
        assert build_demo(store).record["key"] == KEY  # and a rebuild replaces it
        assert store.lookup("demo", KEY) is not None


class TestStage:
    @staticmethod
    def write(calls: list[str]):
        def build(b):
            calls.append(b.path.name)
            (b.path / "out.txt").write_text("hello")
            b.outputs["text"] = "out.txt"
            b.metrics["n"] = 3
            b.tools["lib"] = "1.0"
        return build

    def test_builds_once_then_hits(self, tmp_path):
        store, calls = Store(tmp_path), []
        first = store.stage("demo", {"x": 1}, {"src": "abc"}, self.write(calls), tools={"llama.cpp": "rev"})
        again = store.stage("demo", {"x": 1}, {"src": "abc"}, self.write(calls))
        assert len(calls) == 1 and calls[0].startswith(".")  # built in the temp folder, once
        assert first.key == again.key == KEY and not first.cached and again.cached
        assert again.file("text").read_text() == "hello" and again.metrics == {"n": 3}
        tools = again.record["tools"]
        assert tools == {"edgetune": tools["edgetune"], "llama.cpp": "rev", "lib": "1.0"}

    def test_same_key_and_record_as_lookup_then_build(self, tmp_path):
        """The sequence it replaces: caches written by hand-typed lookup + build stay hits."""
        store = Store(tmp_path)
        built = build_demo(store)
        calls: list[str] = []
        assert store.stage("demo", {"x": 1}, {"src": "abc"}, self.write(calls)) == built and not calls

    def test_key_and_record_overrides(self, tmp_path):
        store = Store(tmp_path)
        art = store.stage("demo", {"x": 1}, {"src": "sha"}, self.write([]), key=KEY,
                          record_params={"x": 1, "label": "gpu"}, record_inputs={"src": "file.txt"})
        assert art.key == KEY and art.record["params"] == {"x": 1, "label": "gpu"}
        assert art.record["inputs"] == {"src": "file.txt"}

    def test_failed_build_publishes_nothing(self, tmp_path):
        store = Store(tmp_path)

        def fail(b):
            (b.path / "half.txt").write_text("partial")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            store.stage("demo", {"x": 1}, {"src": "abc"}, fail)
        assert entries(tmp_path) == ["demo"] and store.lookup("demo", KEY) is None


class TestHashes:
    def test_sha256_file(self, tmp_path):
        path = tmp_path / "f"
        path.write_bytes(b"abc")
        assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        assert sha256_file(path, chunk_bytes=1) == sha256_file(path)

    @staticmethod
    def tree(root: Path, files: dict[str, str]) -> Path:
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        return root

    def test_tree_is_order_independent(self, tmp_path):
        files = {"a.txt": "1", "sub/b.txt": "2", "sub/deeper/c.txt": "3", "z": ""}
        one = self.tree(tmp_path / "one", files)
        two = self.tree(tmp_path / "two", dict(reversed(list(files.items()))))
        assert sha256_tree(one) == sha256_tree(two)

    def test_tree_ignores_empty_folders(self, tmp_path):
        one = self.tree(tmp_path / "one", {"a": "1"})
        two = self.tree(tmp_path / "two", {"a": "1"})
        (two / "empty").mkdir()
        assert sha256_tree(one) == sha256_tree(two)

    @pytest.mark.parametrize("change", [{"a": "2"}, {"b": "1"}, {"a": "1", "c": ""}], ids=["content", "name", "added"])
    def test_tree_changes_with_content_and_names(self, tmp_path, change):
        base = self.tree(tmp_path / "base", {"a": "1"})
        other = self.tree(tmp_path / "other", change)
        assert sha256_tree(base) != sha256_tree(other)


class TestStageKey:
    def test_stable_and_order_independent(self):
        assert stage_key("k", {"a": 1, "b": [1, 2]}, {"x": "1", "y": "2"}) == \
            stage_key("k", {"b": [1, 2], "a": 1}, {"y": "2", "x": "1"})

    @pytest.mark.parametrize("kind, params, inputs", [
        ("other", {"a": 1}, {"x": "1"}),
        ("k", {"a": 2}, {"x": "1"}),
        ("k", {"a": 1, "b": None}, {"x": "1"}),
        ("k", {"a": 1}, {"x": "2"}),
        ("k", {"a": 1}, {"x": "1", "y": "1"}),
        ("k", {"a": 1}, {}),
    ], ids=["kind", "param-value", "param-added", "input-value", "input-added", "inputs-dropped"])
    def test_changes_with_kind_params_and_inputs(self, kind, params, inputs):
        assert stage_key(kind, params, inputs) != stage_key("k", {"a": 1}, {"x": "1"})

    def test_is_a_sha256_hex(self):
        key = stage_key("k", {"path": Path("/x")}, {})
        assert len(key) == 64 and int(key, 16) >= 0


def test_atomic_write_text_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert entries(tmp_path) == ["sub", "sub/f.json"]
