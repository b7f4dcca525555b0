"""The adapter registry on a real trained adapter: content-hash ids, idempotence, atomicity, lookups, and MLflow
(mlflow-skinny, a real local file store) when a tracking URI is set."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pytest
from edgetune.artifacts import Store, sha256_file, sha256_tree
from edgetune.config import TrainConfig
from edgetune.errors import ConfigError, TrainError
from edgetune.train import stage
from edgetune.train.registry import METADATA_FILE, Registry, register_trained

CFG = TrainConfig(method="lora", r=4, alpha=8, batch_size=8, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0,
                  eval_items=0, save_steps=0)


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    base_art, data_art = inputs
    return stage.run(CFG, base_art, data_art, Store(tmp_path_factory.mktemp("registry-train")), threads=1)


@pytest.fixture(autouse=True)
def no_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_register_copies_the_adapter_under_its_content_hash(trained, inputs, tmp_path):
    base_art, data_art = inputs
    entry = register_trained(Registry(tmp_path / "registry"), trained, base_art, data_art)
    adapter = trained.file("adapter")
    assert entry.id == sha256_tree(adapter)[:16] and len(entry.id) == 16
    assert entry.path == tmp_path / "registry" / entry.id
    assert sha256_tree(entry.adapter_dir) == sha256_tree(adapter)  # the files, byte for byte
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert hashlib.sha256((entry.adapter_dir / name).read_bytes()).hexdigest() == sha256_file(adapter / name)
    meta = json.loads((entry.path / METADATA_FILE).read_text())
    assert meta["base_sha256"] == base_art.outputs["source_sha256"]
    assert meta["data_sha256"] == sha256_file(data_art.file("train"))
    assert meta["config"]["r"] == 4 and meta["config"]["method"] == "lora"
    assert meta["metrics"]["steps"] == 2
    assert {"edgetune", "torch", "transformers", "peft"} <= set(meta["versions"])
    assert meta["created"].endswith("Z") and meta["mlflow"] is None
    # the base is not copied: an entry is the adapter alone
    assert {p.name for p in entry.path.iterdir()} == {"adapter", METADATA_FILE}
    assert not any(entry.path.rglob("model.safetensors"))


def test_same_content_is_one_entry_and_nothing_is_rewritten(trained, tmp_path):
    reg = Registry(tmp_path / "registry")
    first = reg.register(trained.file("adapter"), base_hash="b", data_hash="d", config={"r": 4}, metrics={"x": 1})
    stamps = {p: p.stat().st_mtime_ns for p in first.path.rglob("*")}
    copy = shutil.copytree(trained.file("adapter"), tmp_path / "elsewhere")
    again = reg.register(copy, base_hash="b2", data_hash="d2", config={"r": 99}, metrics={"x": 2})
    assert again.id == first.id and again.metadata == first.metadata
    assert {p: p.stat().st_mtime_ns for p in first.path.rglob("*")} == stamps
    assert [e.id for e in reg.list_entries()] == [first.id]
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_changed_content_is_a_new_version(trained, tmp_path):
    reg = Registry(tmp_path / "registry")
    first = reg.register(trained.file("adapter"), base_hash="b", data_hash="d", config={}, metrics={})
    changed = shutil.copytree(trained.file("adapter"), tmp_path / "changed")
    cfg_path = changed / "adapter_config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"r": 4', '"r": 4 '))
    second = reg.register(changed, base_hash="b", data_hash="d", config={}, metrics={})
    assert second.id != first.id
    assert {e.id for e in reg.list_entries()} == {first.id, second.id}
    assert reg.get(second.id[:6]).id == second.id


def test_get_refuses_unknown_and_ambiguous_prefixes(trained, tmp_path):
    reg = Registry(tmp_path / "registry")
    entry = reg.register(trained.file("adapter"), base_hash="b", data_hash="d", config={}, metrics={})
    with pytest.raises(ConfigError, match="no adapter .* starting 'zz'"):
        reg.get("zz")
    with pytest.raises(ConfigError, match="no adapter"):
        reg.get("")
    assert reg.get(entry.id).path == entry.path


def test_a_folder_without_adapter_config_is_refused_and_nothing_written(tmp_path):
    (tmp_path / "not-adapter").mkdir()
    (tmp_path / "not-adapter" / "weights.bin").write_bytes(b"x")
    with pytest.raises(TrainError, match="not an adapter folder"):
        Registry(tmp_path / "registry").register(tmp_path / "not-adapter", base_hash="b", data_hash="d", config={},
                                                 metrics={})
    assert not (tmp_path / "registry").exists()


def test_a_failed_copy_publishes_nothing(trained, tmp_path):
    """A copy that fails part way (here: a dangling link among the files, copied after the good ones) leaves no
    entry and no temp folder."""
    broken = shutil.copytree(trained.file("adapter"), tmp_path / "broken")
    (broken / "zz-missing.safetensors").symlink_to(tmp_path / "gone")
    reg = Registry(tmp_path / "registry")
    with pytest.raises(OSError):
        reg.register(broken, base_hash="b", data_hash="d", config={}, metrics={})
    assert reg.list_entries() == [] and list(reg.root.iterdir()) == []


def test_mlflow_logs_params_metrics_and_the_adapter(trained, tmp_path, monkeypatch, caplog):
    mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is in the test extras (pip install -e '.[test]')")
    # MLflow 3 refuses its file store unless asked; the user's own choice of backend, made here by the test
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with caplog.at_level(logging.WARNING, logger="edgetune"):
        entry = Registry(tmp_path / "registry").register(trained.file("adapter"), base_hash="b" * 64,
                                                         data_hash="d" * 64, config=trained.record["params"],
                                                         metrics=trained.metrics)
    assert caplog.text == ""
    logged = entry.metadata["mlflow"]
    assert logged["tracking_uri"] == uri and logged["experiment"] == "edgetune"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(logged["run_id"])
    assert run.data.params["train.r"] == "4" and run.data.params["adapter_id"] == entry.id
    assert run.data.params["base_sha256"] == "b" * 64
    assert run.data.metrics["steps"] == 2.0 and run.data.metrics["loss_last"] == pytest.approx(trained.metrics["loss_last"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "adapter/adapter_model.safetensors", str(tmp_path / "dl"))
    assert sha256_file(local) == sha256_file(entry.adapter_dir / "adapter_model.safetensors")


def test_an_unreachable_mlflow_warns_and_the_entry_records_it(trained, tmp_path, monkeypatch, caplog):
    pytest.importorskip("mlflow", reason="mlflow-skinny is in the test extras")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the file store is refused: a real failure
    with caplog.at_level(logging.WARNING, logger="edgetune.train"):
        entry = Registry(tmp_path / "registry", tracking_uri=(tmp_path / "mlruns").as_uri()).register(
            trained.file("adapter"), base_hash="b", data_hash="d", config={}, metrics={})
    assert "registered locally but not in MLflow" in caplog.text
    assert "error" in entry.metadata["mlflow"] and (entry.path / METADATA_FILE).is_file()
