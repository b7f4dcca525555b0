"""The typed stage outputs: what `write` records, `of` reads back (from the record in memory and from disk),
records written before a field existed still load, and an artifact of another kind is refused."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from edgetune.artifacts import Store
from edgetune.constants import ARTIFACT_FILE
from edgetune.outputs import (
    Adapter,
    BaseModel,
    Bundle,
    DataSplit,
    GGUFFile,
    ImportanceMatrix,
    LoraGGUF,
    MergedModel,
    TaskEval,
    TrainMetrics,
)

TRAINING = TrainMetrics(method="lora", steps=4, loss_first=2.5, loss_last=1.5, train_s=3.0, s_per_step=0.75,
                        trainable_params=10, total_params=1000, trainable_share=0.01, n_examples=32, device="cpu",
                        epochs=[{"epoch": 1.0, "step": 4, "eval_loss": 1.7, "accuracy": 0.5, "n": 4}],
                        oom_fallback=["batch_size 8 → 4"], packing=False)


def stage(store: Store, kind: str, write, files=()):
    def build(b):
        for name in files:
            (b.path / name).write_text("x")
        write(b)
    return store.stage(kind, {}, {}, build)


def from_disk(store: Store, art):
    return store.lookup(art.kind, art.key)


def test_data_split_round_trip(tmp_path):
    store = Store(tmp_path)
    art = stage(store, "data", lambda b: DataSplit.write(b, n_train=30, n_heldout=10, n_examples=40,
                                                         labels=["no", "yes"]),
                files=(DataSplit.TRAIN_FILE, DataSplit.HELDOUT_FILE))
    for a in (DataSplit.of(art), DataSplit.of(from_disk(store, art))):
        assert a.train_path == art.path / "train.jsonl" and a.heldout_path == art.path / "heldout.jsonl"
        assert (a.n_train, a.n_heldout, a.n_examples, a.labels, a.stratified) == (30, 10, 40, ["no", "yes"], True)
    assert art.metrics == {"n_train": 30, "n_heldout": 10, "n_examples": 40, "labels": ["no", "yes"],
                           "stratified": True}


def test_a_subset_is_a_data_split(tmp_path):
    art = stage(Store(tmp_path), "data-subset", lambda b: DataSplit.write(b, n_train=8, n_heldout=10, of_train=30))
    split = DataSplit.of(art)
    assert (split.n_train, split.of_train, split.n_examples, split.labels, split.stratified) == (8, 30, None, None,
                                                                                                   False)


def test_base_model_in_place_and_in_the_artifact(tmp_path):
    store = Store(tmp_path)
    folder = tmp_path / "elsewhere"
    used = BaseModel.of(store.stage("base", {"a": 1}, {}, lambda b: BaseModel.write(
        b, model_dir=str(folder), source_sha256="abc", license=None)))
    made = BaseModel.of(store.stage("base", {"a": 2}, {}, lambda b: BaseModel.write(
        b, model_dir="model", source_sha256="hub:x@main", license="apache-2.0")))
    assert used.model_dir == folder and used.license is None  # an absolute path stays itself
    assert made.model_dir == made.path / "model" and made.license == "apache-2.0"


def test_adapter_round_trip(tmp_path):
    store = Store(tmp_path)
    art = stage(store, "train", lambda b: Adapter.write(b, TRAINING, chat_template=True))
    for a in (Adapter.of(art), Adapter.of(from_disk(store, art))):
        assert a.adapter_dir == art.path / "adapter" and a.log_path == art.path / "train_log.jsonl"
        assert a.chat_template_path == art.path / "chat_template.jinja"
        assert a.training == TRAINING
    assert art.metrics["oom_fallback"] == ["batch_size 8 → 4"] and art.metrics["epochs"] == TRAINING.epochs
    assert set(art.metrics) == {f.name for f in fields(TrainMetrics)}  # every field is recorded
    without = Adapter.of(stage(Store(tmp_path / "other"), "train", lambda b: Adapter.write(b, TRAINING,
                                                                                           chat_template=False)))
    assert without.chat_template_path is None


def test_a_train_record_from_before_the_later_metrics_still_loads(tmp_path):
    """The train stage's first record held only these metrics; its artifacts must stay readable."""
    first = {"method": "lora", "steps": 8, "loss_first": 3.0, "loss_last": 2.0, "train_s": 4.0, "s_per_step": 0.5,
             "trainable_params": 5, "total_params": 50, "trainable_share": 0.1, "n_examples": 32, "device": "cpu"}

    def old(b):
        b.outputs.update(adapter="adapter", log="train_log.jsonl")
        b.metrics.update(first)
    store = Store(tmp_path)
    art = from_disk(store, stage(store, "train", old))
    trained = Adapter.of(art)
    assert trained.training.steps == 8 and trained.training.oom_fallback == [] and trained.training.epochs == []
    assert trained.eval_log_path is None and trained.chat_template_path is None
    assert trained.training.packing is None and trained.training.adapter is None


def test_ggufs_imatrix_and_bundle(tmp_path):
    store = Store(tmp_path)
    gguf = GGUFFile.of(stage(store, "gguf", lambda b: GGUFFile.write(b, quant="Q4_0", size_bytes=3, sha256="s")))
    assert (gguf.gguf_path, gguf.quant, gguf.imatrix_calibration_sha256) == (gguf.path / "model.gguf", "Q4_0", None)
    assert "imatrix_calibration_sha256" not in gguf.metrics  # absent, as before the field existed
    lora = LoraGGUF.of(stage(store, "lora-gguf", lambda b: LoraGGUF.write(
        b, size_bytes=2, sha256="l", loads_on={"Q4_0": True}, base_sha256={"Q4_0": "s"})))
    assert lora.gguf_path == lora.path / "adapter.gguf" and lora.loads_on == {"Q4_0": True}
    imatrix = ImportanceMatrix.of(stage(store, "imatrix", lambda b: ImportanceMatrix.write(
        b, imatrix="imatrix.gguf", calibration="calibration.txt", calibration_sha256="c", calibration_chars=9)))
    assert imatrix.imatrix_path == imatrix.path / "imatrix.gguf" and imatrix.calibration_chars == 9
    bundled = Bundle.of(stage(store, "bundle", lambda b: Bundle.write(b, bundle_dir="tiny-rpi5", tarball="t.tar.gz",
                                                                      n_files=3, size_bytes=7)))
    record = json.loads((bundled.path / ARTIFACT_FILE).read_text())
    assert record["outputs"] == {"bundle": "tiny-rpi5", "tarball": "t.tar.gz"}
    assert record["metrics"] == {"files": 3, "size_bytes": 7}
    assert (bundled.bundle_dir, bundled.tarball_path, bundled.n_files) == (bundled.path / "tiny-rpi5",
                                                                           bundled.path / "t.tar.gz", 3)


def test_merged_model(tmp_path):
    merged = MergedModel.of(stage(Store(tmp_path), "merge", lambda b: MergedModel.write(b, max_logit_diff=2e-4)))
    assert merged.model_dir == merged.path / "model" and merged.max_logit_diff == 2e-4


def test_typed_outputs_compare_as_their_artifacts(tmp_path):
    store = Store(tmp_path)
    art = stage(store, "merge", lambda b: MergedModel.write(b, max_logit_diff=0.0))
    assert MergedModel.of(art) == MergedModel.of(from_disk(store, art))
    assert len({MergedModel.of(art), MergedModel.of(from_disk(store, art))}) == 1  # hashable like an Artifact


def test_another_kind_is_refused(tmp_path):
    art = stage(Store(tmp_path), "merge", lambda b: MergedModel.write(b, max_logit_diff=0.0))
    with pytest.raises(TypeError, match="a 'merge' artifact is not a BaseModel"):
        BaseModel.of(art)


def test_eval_outputs_round_trip(tmp_path):
    """Each eval type writes the record keys the eval artifacts always had (so cached ones still match) and
    reads them back, rows included."""
    from edgetune.outputs import Fidelity, FidelityReference, ForgettingEval, PairwiseJudge, PointwiseJudge, TaskEval

    store = Store(tmp_path)
    rows = [{"id": "a", "output": "yes", "correct": True, "score": 1.0}, {"id": "b", "output": "no", "correct": False}]

    def task_write(b):
        TaskEval.write_rows(b, rows)
        TaskEval.write(b, build="gpu", metric="label", score=0.5, accuracy=0.5, n=2, correct=1, truncated=0,
                       max_new_tokens=4, latency_p50_s=0.1)
    art = stage(store, "eval-task", task_write)
    assert set(art.metrics) == {"build", "metric", "score", "accuracy", "n", "correct", "truncated",
                                "max_new_tokens", "latency_p50_s"} and art.outputs == {"results": "results.jsonl"}
    for t in (TaskEval.of(art), TaskEval.of(from_disk(store, art))):
        assert (t.build, t.accuracy, t.n, t.metric, t.score) == ("gpu", 0.5, 2, "label", 0.5)
        assert t.rows() == rows and t.item_scores() == {"a": 1.0, "b": 0.0} and t.item_outputs()["b"] == "no"

    def forget_write(b):
        ForgettingEval.write(b, build="F16", set_name="arc_easy", acc=0.25, acc_norm=0.5, n=4,
                             per_subject={"arc_easy": {"acc": 0.25, "n": 4}})
    f = ForgettingEval.of(from_disk(store, stage(store, "eval-forgetting", forget_write)))
    assert (f.set, f.acc, f.acc_norm, f.n, f.results_path, f.rows()) == ("arc_easy", 0.25, 0.5, 4, None, [])

    summary = {"kld_mean": 0.01, "kld_p99": 0.1, "top1_agreement": 0.9, "greedy_agreement": 0.8,
               "stop_agreement": 1.0, "n_prompts": 3, "n_positions": 30}
    fid = Fidelity.of(stage(store, "fidelity", lambda b: Fidelity.write(b, build="Q8_0", summary=summary)))
    assert fid.summary() == summary and fid.build == "Q8_0"
    ref = FidelityReference.of(stage(store, "fidelity-ref", lambda b: FidelityReference.write(b, n=3, stopped=2)))
    assert (ref.n, ref.stopped, ref.build) == (3, 2, "")

    pair = PairwiseJudge.of(stage(store, "judge-pairwise", lambda b: PairwiseJudge.write(
        b, build="Q4_0", n=2, wins_gpu=0, ties=2, wins_edge=0, invalid=0, flip_rate=None, calls=0, identical=2,
        judge={"local": "m"})))
    assert (pair.ties, pair.flip_rate, pair.judge, pair.rows()) == (2, None, {"local": "m"}, [])

    def single_write(b):
        PointwiseJudge.write_rows(b, [{"id": "a", "rating": 7, "valid": True, "reason": ""}])
        PointwiseJudge.write(b, build="gpu", n=1, n_valid=1, mean_rating=7.0, calls=1, judge=None)
    single = PointwiseJudge.of(from_disk(store, stage(store, "judge-single", single_write)))
    assert (single.n_valid, single.mean_rating, single.ratings()) == (1, 7.0, {"a": 7})
    with pytest.raises(TypeError):
        TaskEval.of(pair)


def test_a_task_eval_from_before_the_task_metrics_loads(tmp_path):
    store = Store(tmp_path)
    art = stage(store, "eval-task", lambda b: b.metrics.update(build="gpu", accuracy=0.5, n=2, correct=1))
    t = TaskEval.of(art)
    assert (t.metric, t.score, t.truncated, t.results_path) == ("label", None, None, None)
