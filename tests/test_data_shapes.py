"""Training data as users have it: alpaca and sharegpt columns, multi-turn conversations kept whole, several
sources mixed by weight (deterministic with the seed), and hub ids pinned to a commit, offline from a local hub
cache laid out as huggingface_hub lays it out and online through a local HTTP server speaking the hub's API."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgetune import data, hub
from edgetune.artifacts import Store
from edgetune.config import DataConfig, load_config
from edgetune.errors import ConfigError, DataError

from tests.test_data import cfg, run, write_jsonl


def test_alpaca_rows_join_instruction_and_input(tmp_path):
    rows = [{"instruction": f"Add one to {i}.", "input": "" if i % 2 else f"Show the sum {i}.", "output": str(i + 1)}
            for i in range(30)]
    _, train, held = run(cfg(write_jsonl(tmp_path / "a.jsonl", rows)), tmp_path / "s")
    by_answer = {ex["messages"][-1]["content"]: ex["messages"] for ex in train + held}
    assert by_answer["1"] == [{"role": "user", "content": "Add one to 0.\n\nShow the sum 0."},
                              {"role": "assistant", "content": "1"}]
    assert by_answer["2"] == [{"role": "user", "content": "Add one to 1."}, {"role": "assistant", "content": "2"}]


def test_sharegpt_conversations_keep_every_turn(tmp_path):
    rows = [{"conversations": [{"from": "system", "value": "Be brief."},
                               {"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": f"hello {i}"},
                               {"from": "human", "value": "and?"}, {"from": "gpt", "value": f"bye {i}"}]}
            for i in range(30)]
    _, train, _ = run(cfg(write_jsonl(tmp_path / "s.jsonl", rows)), tmp_path / "s")
    roles = [m["role"] for m in train[0]["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    i = train[0]["messages"][1]["content"].split()[1]
    assert [m["content"] for m in train[0]["messages"] if m["role"] == "assistant"] == [f"hello {i}", f"bye {i}"]


def test_sharegpt_in_a_messages_column_too(tmp_path):
    rows = [{"messages": [{"from": "user", "value": f"q{i}"}, {"from": "assistant", "value": f"a{i}"}]}
            for i in range(30)]
    _, train, _ = run(cfg(write_jsonl(tmp_path / "m.jsonl", rows)), tmp_path / "s")
    assert {m["role"] for ex in train for m in ex["messages"]} == {"user", "assistant"}


@pytest.mark.parametrize("row, says", [
    ({"question": "q", "answer": "a"}, "found ['answer', 'question']"),
    ({"conversations": [{"speaker": "x", "text": "y"}]}, "each message needs role/content or from/value"),
    ({"conversations": [{"from": "robot", "value": "y"}]}, "each message needs role/content or from/value"),
])
def test_unknown_shapes_fail_in_one_line(tmp_path, row, says):
    store_root = tmp_path / "s"
    with pytest.raises(DataError) as exc:
        data.run(cfg(write_jsonl(tmp_path / "x.jsonl", [row] * 30)), Store(store_root))
    assert says in exc.value.message and "\n" not in exc.value.message and exc.value.exit_code == 3
    assert not store_root.exists() or not any(store_root.rglob("artifact.json"))


# --- mixtures --------------------------------------------------------------------------------------------

def _sources(tmp_path: Path, sizes: dict[str, int]) -> dict[str, Path]:
    return {name: write_jsonl(tmp_path / f"{name}.jsonl", [{"input": f"{name} q{i}", "output": f"{name} a{i}"}
                                                            for i in range(n)]) for name, n in sizes.items()}


def _origin(ex: dict) -> str:
    return ex["messages"][-1]["content"].split()[0]


def test_mixture_follows_the_weights_and_the_seed(tmp_path):
    paths = _sources(tmp_path, {"math": 400, "chat": 300, "code": 100})
    config_file = tmp_path / "edgetune.yaml"
    config_file.write_text("data:\n" + "".join(f"  - {{path: {p.name}, weight: {w}}}\n" for p, w in
                                               ((paths["math"], 2), (paths["chat"], 1), (paths["code"], 1))))
    mixed = load_config(config_file).data.model_copy(update={"heldout_size": 40, "train_size": None})
    assert [Path(s.source) for s in mixed.mix] == [paths["math"], paths["chat"], paths["code"]]
    art, train, held = run(mixed, tmp_path / "s")
    counts = Counter(_origin(ex) for ex in train + held)
    # code (100 rows at a quarter) sets the size: 400 rows, 200 / 100 / 100, none repeated
    assert counts == {"math": 200, "chat": 100, "code": 100}
    assert len({ex["messages"][-1]["content"] for ex in train + held}) == 400
    assert abs(Counter(_origin(ex) for ex in train)["math"] / len(train) - 0.5) < 0.05
    again = run(mixed, tmp_path / "s2")[1]
    assert again == train  # the same seed: the same rows in the same order
    other = run(mixed.model_copy(update={"seed": 1}), tmp_path / "s3")[1]
    assert Counter(_origin(ex) for ex in other + run(mixed.model_copy(update={"seed": 1}), tmp_path / "s3")[2]) \
        == counts and {e["id"] for e in other} != {e["id"] for e in train}
    assert len({e["id"] for e in train + held}) == 400  # ids stay unique across sources
    reweighted = mixed.model_copy(update={"mix": [mixed.mix[0].model_copy(update={"weight": 1}), *mixed.mix[1:]]})
    assert data.run(reweighted, Store(tmp_path / "s")).key != art.key


def test_mix_and_source_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="either source or mix"):
        DataConfig(source="a.jsonl", mix=[{"path": "b.jsonl"}])
    good = tmp_path / "mixed.yaml"
    good.write_text("data:\n  - {path: a.jsonl, weight: 2}\n  - {source: b.jsonl}\n")
    mixed = load_config(good)
    assert [(s.source, s.weight) for s in mixed.data.mix] == [("a.jsonl", 2.0), ("b.jsonl", 1.0)]
    assert mixed.with_overrides({"train.r": 8}).data == mixed.data  # other flags keep the mixture
    with pytest.raises(ConfigError, match="either source or mix"):
        mixed.with_overrides({"data.source": "c.jsonl"})  # --data with a mixture: which one?
    bad = tmp_path / "edgetune.yaml"
    bad.write_text("data:\n  - {path: a.jsonl, weight: -1}\n")
    with pytest.raises(ConfigError, match="data.mix.0.weight"):
        load_config(bad)


# --- hub ids pinned to a commit ----------------------------------------------------------------------------

SHA_OLD, SHA_NEW = "a" * 40, "b" * 40


def _fake_cache(root: Path, repo: str, sha: str, kind: str = "datasets") -> None:
    """huggingface_hub's layout: <kind>--owner--name/refs/<branch> holding the commit, snapshots/<commit>/."""
    repo_dir = root / f"{kind}--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    (repo_dir / "snapshots" / sha).mkdir(parents=True, exist_ok=True)


def test_offline_uses_the_cached_commit_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_cache(tmp_path / "hub", "someone/colours", SHA_OLD)
    with caplog.at_level(logging.WARNING):
        pinned = hub.pin("someone/colours", None, "dataset", DataError)
    assert (pinned.sha, pinned.how, pinned.fingerprint) == (SHA_OLD, "cache", f"hub:someone/colours@{SHA_OLD}")
    assert "HF_HUB_OFFLINE is set" in caplog.text and SHA_OLD[:12] in caplog.text
    # main moved (the cache now records another commit): the fingerprint, hence the stage key, moves with it
    _fake_cache(tmp_path / "hub", "someone/colours", SHA_NEW)
    assert data.source_fingerprint(DataConfig(source="someone/colours")) == f"hub:someone/colours@{SHA_NEW}"
    # a commit needs no look-up; a repo the cache lacks is a one-line error
    assert hub.pin("someone/colours", SHA_OLD, "dataset", DataError).how == "commit"
    with pytest.raises(DataError, match="holds no dataset someone/other@main") as exc:
        data.run(DataConfig(source="someone/other"), Store(tmp_path / "s"))
    assert exc.value.exit_code == 3


class _Hub(BaseHTTPRequestHandler):
    """The one call hub.pin makes: GET /api/<kind>s/<repo>/revision/<rev> -> {"id", "sha"}."""
    commits = {("datasets", "someone/colours", "main"): SHA_NEW, ("models", "someone/tiny", "v1"): SHA_OLD}

    def do_GET(self):  # noqa: N802 (http.server's name)
        parts = self.path.split("?")[0].strip("/").split("/")  # api, kind, owner, name, revision, rev
        sha = self.commits.get((parts[1], f"{parts[2]}/{parts[3]}", parts[5])) if len(parts) == 6 else None
        body = json.dumps({"id": f"{parts[2]}/{parts[3]}", "sha": sha} if sha else {"error": "not found"}).encode()
        self.send_response(200 if sha else 404)
        self.send_header("Content-Type", "application/json")
        if not sha:
            self.send_header("X-Error-Code", "RevisionNotFound")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_hub(monkeypatch, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: an earlier test may have imported it under
    # conftest's HF_HUB_OFFLINE=1, and its client would then refuse every request
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    yield server
    server.shutdown()


def test_online_resolves_the_branch_to_its_commit(local_hub, tmp_path):
    _fake_cache(tmp_path / "hub", "someone/colours", SHA_OLD)  # a stale cached main is not used online
    pinned = hub.pin("someone/colours", "main", "dataset", DataError)
    assert (pinned.sha, pinned.how) == (SHA_NEW, "hub")
    assert hub.pin("someone/tiny", "v1", "model", DataError).sha == SHA_OLD
    with pytest.raises(DataError, match="has no revision 'nope'"):
        hub.pin("someone/colours", "nope", "dataset", DataError)


def test_unreachable_hub_falls_back_to_the_cache_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_cache(tmp_path / "hub", "someone/colours", SHA_OLD)
    with caplog.at_level(logging.WARNING):
        assert hub.pin("someone/colours", None, "dataset", DataError).how == "cache"
    assert "the hub is unreachable" in caplog.text
