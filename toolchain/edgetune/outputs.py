"""What each stage produces: one frozen type per stage output, read from and written to its `artifact.json`.

Each type is an `Artifact` (folder, key, record, cached) plus typed fields. `of(artifact)` builds the fields from
the record's `outputs` (file names, resolved to paths here and nowhere else) and `metrics`; `write(builder, ...)`
puts them into a stage's record. The record's string keys appear only in this module, so a field added to a
stage's output is a change to one type and its readers. Fields that later versions added to a record have
defaults, so artifacts cached before them still load. The eval stages' outputs (evals/stage.py) are here too:
a summary in the record and one row per item in `results.jsonl` (`EvalOutput.rows`).
docs/architecture.md draws the stage graph with these types on its edges.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from edgetune.artifacts import Artifact, Builder


# eq=False: equality and hashing stay Artifact's (kind, key, folder), the typed fields being read from the record
@dataclass(frozen=True, eq=False)
class StageOutput(Artifact):
    """Base of the typed outputs. KIND is the stage kind the store files it under."""

    KIND: ClassVar[str] = ""
    ALSO: ClassVar[tuple[str, ...]] = ()  # other kinds with the same shape (the sweep's data-subset)

    @classmethod
    def of(cls, art: Artifact) -> Self:
        """The typed view of a stage's artifact (a typed one is read again, which is cheap). Raises TypeError
        for an artifact of another kind: a programming error, not a user's."""
        if art.kind != cls.KIND and art.kind not in cls.ALSO:
            raise TypeError(f"a {art.kind!r} artifact is not a {cls.__name__} (kind {cls.KIND!r})")
        return cls(kind=art.kind, key=art.key, path=art.path, record=art.record, cached=art.cached,
                   **cls._read(art))

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        raise NotImplementedError


def _optional_path(art: Artifact, name: str) -> Path | None:
    return art.file(name) if art.outputs.get(name) else None


@dataclass(frozen=True, eq=False, kw_only=True)
class DataSplit(StageOutput):
    """The data stage's chat examples (one {"id", "messages"} object per line, the last message the answer),
    split into training and held-out parts. Read by train, the sweep, the evaluator and `report`."""

    KIND: ClassVar[str] = "data"
    ALSO: ClassVar[tuple[str, ...]] = ("data-subset",)
    TRAIN_FILE: ClassVar[str] = "train.jsonl"
    HELDOUT_FILE: ClassVar[str] = "heldout.jsonl"

    train_path: Path
    heldout_path: Path
    n_train: int
    n_heldout: int
    n_examples: int | None = None  # rows read (data); None for a subset
    labels: list[str] | None = None  # the answer labels the split was stratified by, or None
    stratified: bool = False
    of_train: int | None = None  # a subset: the training examples of the split it was cut from

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {"train_path": art.file("train"), "heldout_path": art.file("heldout"), "n_train": m["n_train"],
                "n_heldout": m["n_heldout"], "n_examples": m.get("n_examples"), "labels": m.get("labels"),
                "stratified": bool(m.get("stratified")), "of_train": m.get("of_train")}

    @classmethod
    def write(cls, b: Builder, *, n_train: int, n_heldout: int, n_examples: int | None = None,
              labels: list[str] | None = None, of_train: int | None = None) -> None:
        """Record TRAIN_FILE and HELDOUT_FILE (written by the stage) and the counts. A split (n_examples given)
        records its labels and whether it was stratified; a subset records `of_train`."""
        b.outputs.update(train=cls.TRAIN_FILE, heldout=cls.HELDOUT_FILE)
        b.metrics.update(n_train=n_train, n_heldout=n_heldout)
        if n_examples is not None:
            b.metrics.update(n_examples=n_examples, labels=labels or None, stratified=bool(labels))
        if of_train is not None:
            b.metrics["of_train"] = of_train


@dataclass(frozen=True, eq=False, kw_only=True)
class ModelFolder(StageOutput):
    """A full-precision Hugging Face model folder (safetensors, tokenizer, chat template): the base model or
    the merged one. Export converts either; the evaluator runs either in transformers."""

    model_dir: Path


@dataclass(frozen=True, eq=False, kw_only=True)
class BaseModel(ModelFolder):
    """The base-model stage's HF folder: in the artifact (dequantized GGUF, hub download) or a local folder
    used in place (`model_dir` absolute; the key pins its content). Read by train, merge, export (the LoRA
    GGUF's base), the planner and the evaluator."""

    KIND: ClassVar[str] = "base"

    source_sha256: str  # content hash of the local source, or "hub:<id>@<revision>"
    license: str | None = None  # the licence the model says it has (GGUF general.license, model card)

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        out = art.outputs
        return {"model_dir": art.file("model_dir"), "source_sha256": out["source_sha256"],
                "license": out.get("license")}

    @staticmethod
    def write(b: Builder, *, model_dir: str, source_sha256: str, license: str | None) -> None:
        """`model_dir`: a folder name inside the artifact, or an absolute path to a folder used in place."""
        b.outputs.update(model_dir=model_dir, source_sha256=source_sha256, license=license)


@dataclass(frozen=True, kw_only=True)
class TrainMetrics:
    """What training measured and the settings the adapter was really trained with (the config's, or the OOM
    fallback's last). Read by `edgetune train`, the sweep, the build's report context and the registry."""

    method: str  # lora | qlora
    steps: int
    loss_first: float  # mean of the first 5 logged losses
    loss_last: float  # mean of the last 5
    train_s: float  # wall time of this session's trainer.train, evaluations included
    s_per_step: float
    trainable_params: int
    total_params: int
    trainable_share: float
    n_examples: int
    device: str  # cuda | cpu
    adapter: str | None = None  # lora | dora | rslora | ia3
    epochs_trained: float | None = None
    loss_check: dict[str, Any] | None = None  # train/callbacks.py's verdict on the loss curve
    epochs: list[dict[str, Any]] = field(default_factory=list)  # per epoch: held-out loss and accuracy
    eval_loss_last: float | None = None
    eval_accuracy_last: float | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    n_heldout_loss: int | None = None
    n_heldout_task: int | None = None
    resumed_from_step: int | None = None
    oom_fallback: list[str] = field(default_factory=list)  # the OOM fixes applied, in order
    liger: bool | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    micro_batch: int | None = None
    max_length: int | None = None  # resolved: the config's, or sized from the data (train/lengths.py)
    max_length_why: str | None = None
    longest_example: int | None = None  # tokens, before any cut
    shortened: int = 0  # examples whose prompt was cut to fit max_length
    most_cut: int = 0  # the most tokens cut from one prompt
    dropped: int = 0  # examples whose answer alone left no room
    gradient_checkpointing: bool | None = None
    offload_activations: bool | None = None  # resolved: checkpointed inputs held in host memory (train/offload.py)
    compile_layers: bool | None = None  # resolved: decoder layers run through torch.compile (train/compile.py)
    peak_gpu_gib: float | None = None
    chat_template: str | None = None  # "model", or "fallback:<name>"
    packing: bool | None = None

    @classmethod
    def from_record(cls, metrics: dict[str, Any]) -> TrainMetrics:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in metrics.items() if k in known}
        for name in ("epochs", "oom_fallback"):  # records from before these metrics lack them
            values[name] = list(values.get(name) or [])
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False, kw_only=True)
class Adapter(StageOutput):
    """The train stage's adapter (peft folder) with its logs and `training` metrics. Read by merge, export (LoRA
    GGUF), the registry, the sweep and the build's report."""

    KIND: ClassVar[str] = "train"
    ADAPTER_DIR: ClassVar[str] = "adapter"
    LOG_FILE: ClassVar[str] = "train_log.jsonl"  # one row per logged step
    EVAL_LOG_FILE: ClassVar[str] = "eval_log.jsonl"  # one row per epoch
    TEMPLATE_FILE: ClassVar[str] = "chat_template.jinja"
    TENSORBOARD_DIR: ClassVar[str] = "tensorboard"  # event files, with train.report_to: tensorboard

    adapter_dir: Path
    log_path: Path
    eval_log_path: Path | None
    chat_template_path: Path | None  # the fallback template trained with, which merge writes into the model
    training: TrainMetrics
    tensorboard_dir: Path | None = None

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        return {"adapter_dir": art.file("adapter"), "log_path": art.file("log"),
                "eval_log_path": _optional_path(art, "eval_log"),
                "chat_template_path": _optional_path(art, "chat_template"),
                "tensorboard_dir": _optional_path(art, "tensorboard"),
                "training": TrainMetrics.from_record(art.metrics)}

    @classmethod
    def write(cls, b: Builder, training: TrainMetrics, *, chat_template: bool, tensorboard: bool = False) -> None:
        """Record ADAPTER_DIR, LOG_FILE, EVAL_LOG_FILE and, with `chat_template`, TEMPLATE_FILE, with
        `tensorboard`, TENSORBOARD_DIR (all written by the stage), and the metrics."""
        b.outputs.update(adapter=cls.ADAPTER_DIR, log=cls.LOG_FILE, eval_log=cls.EVAL_LOG_FILE)
        if chat_template:
            b.outputs["chat_template"] = cls.TEMPLATE_FILE
        if tensorboard:
            b.outputs["tensorboard"] = cls.TENSORBOARD_DIR
        b.metrics.update(training.to_record())


@dataclass(frozen=True, eq=False, kw_only=True)
class MergedModel(ModelFolder):
    """The merge stage's HF folder (in the base's dtype, with a model card), checked against the adapter model.
    Read by export (through merge.full_precision when not fp32), the sweep and the evaluator (the GPU build)."""

    KIND: ClassVar[str] = "merge"
    MODEL_DIR: ClassVar[str] = "model"

    max_logit_diff: float  # adapter model vs merged model on a probe text
    dtype: str = "float32"  # the saved weights' torch dtype name

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        return {"model_dir": art.file("model_dir"), "max_logit_diff": art.metrics["max_logit_diff"],
                "dtype": art.outputs.get("dtype", "float32")}

    @classmethod
    def write(cls, b: Builder, *, max_logit_diff: float, dtype: str = "float32") -> None:
        b.outputs["model_dir"] = cls.MODEL_DIR
        b.outputs["dtype"] = dtype
        b.metrics["max_logit_diff"] = max_logit_diff


@dataclass(frozen=True, eq=False, kw_only=True)
class GGUFFile(StageOutput):
    """One GGUF of the export stage: the F16 conversion or one quantization of it. Read by the planner, the
    evaluator, the LoRA GGUF check and bundle."""

    KIND: ClassVar[str] = "gguf"
    FILE: ClassVar[str] = "model.gguf"

    gguf_path: Path
    quant: str  # a constants.Quant value
    size_bytes: int
    sha256: str
    imatrix_calibration_sha256: str | None = None  # quantized with an importance matrix from this text

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {"gguf_path": art.file("gguf"), "quant": m["quant"], "size_bytes": m["size_bytes"],
                "sha256": m["sha256"], "imatrix_calibration_sha256": m.get("imatrix_calibration_sha256")}

    @classmethod
    def write(cls, b: Builder, *, quant: str, size_bytes: int, sha256: str,
              imatrix_calibration_sha256: str | None = None) -> None:
        b.outputs["gguf"] = cls.FILE
        b.metrics.update(quant=quant, size_bytes=size_bytes, sha256=sha256)
        if imatrix_calibration_sha256 is not None:
            b.metrics["imatrix_calibration_sha256"] = imatrix_calibration_sha256


@dataclass(frozen=True, eq=False, kw_only=True)
class ImportanceMatrix(StageOutput):
    """llama-imatrix's output over the fine-tune's own text. Read by the low-bit quantizations."""

    KIND: ClassVar[str] = "imatrix"

    imatrix_path: Path
    calibration_path: Path
    calibration_sha256: str
    calibration_chars: int

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {"imatrix_path": art.file("imatrix"), "calibration_path": art.file("calibration"),
                "calibration_sha256": m["calibration_sha256"], "calibration_chars": m["calibration_chars"]}

    @staticmethod
    def write(b: Builder, *, imatrix: str, calibration: str, calibration_sha256: str,
              calibration_chars: int) -> None:
        b.outputs.update(imatrix=imatrix, calibration=calibration)
        b.metrics.update(calibration_sha256=calibration_sha256, calibration_chars=calibration_chars)


@dataclass(frozen=True, eq=False, kw_only=True)
class LoraGGUF(StageOutput):
    """The adapter alone as a LoRA GGUF, checked on each quantized GGUF of the base model. Read by bundle."""

    KIND: ClassVar[str] = "lora-gguf"
    FILE: ClassVar[str] = "adapter.gguf"

    gguf_path: Path
    size_bytes: int
    sha256: str
    loads_on: dict[str, bool]  # quant of the base GGUF → the adapter loaded and evaluated on it
    base_sha256: dict[str, str]  # quant → the base GGUF it was checked on

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {"gguf_path": art.file("gguf"), "size_bytes": m["size_bytes"], "sha256": m["sha256"],
                "loads_on": m["loads_on"], "base_sha256": m["base_sha256"]}

    @classmethod
    def write(cls, b: Builder, *, size_bytes: int, sha256: str, loads_on: dict[str, bool],
              base_sha256: dict[str, str]) -> None:
        b.outputs["gguf"] = cls.FILE
        b.metrics.update(size_bytes=size_bytes, sha256=sha256, loads_on=loads_on, base_sha256=base_sha256)


@dataclass(frozen=True, eq=False, kw_only=True)
class RecoveryGGUF(StageOutput):
    """A recovery LoRA (export/recovery.py) for one quantized GGUF of the fine-tune, as a LoRA GGUF checked to
    load on that file in llama.cpp. Read by the evaluator (the `<QUANT>+recovery` build) and bundle."""

    KIND: ClassVar[str] = "recovery-gguf"
    FILE: ClassVar[str] = "recovery.gguf"

    gguf_path: Path
    quant: str  # the quantized GGUF it applies to
    base_sha256: str  # that file's sha256
    size_bytes: int
    sha256: str
    first_kld: float  # training KL(GPU build || quantized + adapter), first and last 10 steps
    last_kld: float
    steps: int

    @property
    def build_name(self) -> str:
        return f"{self.quant}+recovery"

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {"gguf_path": art.file("gguf"), **{k: m[k] for k in ("quant", "base_sha256", "size_bytes", "sha256",
                                                                   "first_kld", "last_kld", "steps")}}

    @classmethod
    def write(cls, b: Builder, **metrics: Any) -> None:
        b.outputs["gguf"] = cls.FILE
        b.metrics.update(metrics)


@dataclass(frozen=True, eq=False, kw_only=True)
class Bundle(StageOutput):
    """The bundle stage's folder for the device (models, manifest, checksums, runtime) and its tarball. Read
    by `edgetune build`'s result, `deploy` and the device runtime."""

    KIND: ClassVar[str] = "bundle"

    bundle_dir: Path
    tarball_path: Path
    n_files: int
    size_bytes: int

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {"bundle_dir": art.file("bundle"), "tarball_path": art.file("tarball"), "n_files": m["files"],
                "size_bytes": m["size_bytes"]}

    @staticmethod
    def write(b: Builder, *, bundle_dir: str, tarball: str, n_files: int, size_bytes: int) -> None:
        b.outputs.update(bundle=bundle_dir, tarball=tarball)
        b.metrics.update(files=n_files, size_bytes=size_bytes)


# -- the eval stages (evals/stage.py): one build scored on one suite ------------------------------------------


@dataclass(frozen=True, eq=False, kw_only=True)
class EvalOutput(StageOutput):
    """An eval artifact: its summary fields, and `results.jsonl` with one row per item (None where nothing was
    scored: a pairwise judgement of identical answers). `build` names the build scored ("" for the shared
    fidelity reference)."""

    RESULTS_FILE: ClassVar[str] = "results.jsonl"

    results_path: Path | None
    build: str = ""

    def rows(self) -> list[dict[str, Any]]:
        """results.jsonl's rows, in item order ([] when there is no results file)."""
        if self.results_path is None:
            return []
        with self.results_path.open() as fh:
            return [json.loads(line) for line in fh if line.strip()]

    @classmethod
    def _common(cls, art: Artifact) -> dict[str, Any]:
        return {"results_path": _optional_path(art, "results"), "build": art.metrics.get("build", "")}

    @classmethod
    def write_rows(cls, b: Builder, rows: list[dict[str, Any]]) -> None:
        """Write RESULTS_FILE into the artifact and record it."""
        with (b.path / cls.RESULTS_FILE).open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        b.outputs["results"] = cls.RESULTS_FILE


@dataclass(frozen=True, eq=False, kw_only=True)
class TaskEval(EvalOutput):
    """One build's held-out task eval: rows (id, prompt_sha256, output, reference, correct, latency_s, score,
    truncated, detail). Read by the report (rows, metric), the pairwise and pointwise judges (outputs) and
    the report's judge summaries (scores)."""

    KIND: ClassVar[str] = "eval-task"

    accuracy: float  # share of items strictly `correct`
    n: int
    metric: str = "label"  # records from before the task metrics were all label-scored
    score: float | None = None  # mean of the items' scores under `metric`
    correct: int | None = None
    truncated: int | None = None  # items cut off at max_new_tokens
    max_new_tokens: int | None = None
    latency_p50_s: float | None = None

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {**cls._common(art), "accuracy": m["accuracy"], "n": m["n"], "metric": m.get("metric", "label"),
                **{k: m.get(k) for k in ("score", "correct", "truncated", "max_new_tokens", "latency_p50_s")}}

    @staticmethod
    def write(b: Builder, *, build: str, metric: str, score: float, accuracy: float, n: int, correct: int,
              truncated: int, max_new_tokens: int, latency_p50_s: float) -> None:
        b.metrics.update(build=build, metric=metric, score=score, accuracy=accuracy, n=n, correct=correct,
                         truncated=truncated, max_new_tokens=max_new_tokens, latency_p50_s=latency_p50_s)

    def item_scores(self) -> dict[str, float]:
        """Item id -> its score under the metric (rows from before per-item scores: 1.0 when correct)."""
        return {r["id"]: float(r.get("score", r["correct"])) for r in self.rows()}

    def item_outputs(self) -> dict[str, str]:
        """Item id -> the build's greedy answer."""
        return {r["id"]: r["output"] for r in self.rows()}


@dataclass(frozen=True, eq=False, kw_only=True)
class ForgettingEval(EvalOutput):
    """One build on one log-likelihood multiple-choice set: rows (id, prompt sha256, the choice picked by acc
    and acc_norm, the answer, every choice's log-likelihood). Read by the report's forgetting section."""

    KIND: ClassVar[str] = "eval-forgetting"

    acc: float
    n: int
    acc_norm: float | None = None
    set: str = "mmlu"  # records from before the other sets are MMLU's
    per_subject: dict[str, dict[str, Any]] = field(default_factory=dict)  # subject -> acc, acc_norm, n

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {**cls._common(art), "acc": m["acc"], "n": m["n"], "acc_norm": m.get("acc_norm"),
                "set": m.get("set", "mmlu"), "per_subject": dict(m.get("per_subject") or {})}

    @staticmethod
    def write(b: Builder, *, build: str, set_name: str, acc: float, acc_norm: float | None, n: int,
              per_subject: dict[str, dict[str, Any]]) -> None:
        b.metrics.update(build=build, set=set_name, acc=acc, acc_norm=acc_norm, n=n, per_subject=per_subject)


@dataclass(frozen=True, eq=False, kw_only=True)
class FidelityReference(EvalOutput):
    """The GPU build's greedy continuations of the gate prompts, shared by every GGUF's fidelity eval: rows
    (id, prompt_ids, output_ids, stopped)."""

    KIND: ClassVar[str] = "fidelity-ref"

    n: int
    stopped: int  # continuations that ended on a stop id

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        return {**cls._common(art), "n": art.metrics["n"], "stopped": art.metrics["stopped"]}

    @staticmethod
    def write(b: Builder, *, n: int, stopped: int) -> None:
        b.metrics.update(n=n, stopped=stopped)


@dataclass(frozen=True, kw_only=True)
class FidelitySummary:
    """One GGUF against the GPU build over every compared prompt: the figures evals.fidelity.compare measures,
    the fidelity artifact records, the gates (export.gates.check) judge and the report's row shows."""

    kld_mean: float  # mean KL(GPU || edge) per position, nats
    kld_p99: float
    top1_agreement: float
    greedy_agreement: float
    stop_agreement: float
    n_prompts: int
    n_positions: int

    def summary(self) -> dict[str, float]:
        """The summary figures by name (what export.gates.check and the report's row take)."""
        return {f.name: getattr(self, f.name) for f in fields(FidelitySummary)}


@dataclass(frozen=True, eq=False, kw_only=True)
class Fidelity(EvalOutput, FidelitySummary):
    """One GGUF against the GPU build on the same tokens (evals.fidelity): rows per prompt and the summary
    figures (FidelitySummary). Read by the fidelity gates (export.gates) and the report's fidelity columns."""

    KIND: ClassVar[str] = "fidelity"
    SUMMARY: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(FidelitySummary))

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        return {**cls._common(art), **{k: art.metrics[k] for k in cls.SUMMARY}}

    @staticmethod
    def write(b: Builder, *, build: str, summary: dict[str, float]) -> None:
        b.metrics.update(build=build, **summary)


@dataclass(frozen=True, eq=False, kw_only=True)
class PairwiseJudge(EvalOutput):
    """The GPU build against one edge build, judged pairwise in both orders on the task eval's answers: rows
    per item (none when every answer was identical). Read by the report's judge column."""

    KIND: ClassVar[str] = "judge-pairwise"

    n: int
    wins_gpu: int
    ties: int
    wins_edge: int
    invalid: int
    flip_rate: float | None  # verdicts that changed with the order; None when nothing was judged
    calls: int
    identical: int | None
    judge: dict[str, Any] | None  # the judge's description (endpoint and model, or the local GGUF)

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {**cls._common(art), **{k: m[k] for k in ("n", "wins_gpu", "ties", "wins_edge", "invalid",
                                                         "flip_rate", "calls")},
                "identical": m.get("identical"), "judge": m.get("judge")}

    @staticmethod
    def write(b: Builder, *, build: str, n: int, wins_gpu: int, ties: int, wins_edge: int, invalid: int,
              flip_rate: float | None, calls: int, identical: int | None, judge: dict[str, Any] | None) -> None:
        b.metrics.update(build=build, n=n, wins_gpu=wins_gpu, ties=ties, wins_edge=wins_edge, invalid=invalid,
                         flip_rate=flip_rate, calls=calls, identical=identical, judge=judge)


@dataclass(frozen=True, eq=False, kw_only=True)
class PointwiseJudge(EvalOutput):
    """One build's answers graded 1-10 against the reference: rows (id, rating or None, valid, reason). Read
    by the report's pointwise summary (report.pointwise)."""

    KIND: ClassVar[str] = "judge-single"

    n: int
    n_valid: int
    mean_rating: float | None
    calls: int
    judge: dict[str, Any] | None

    @classmethod
    def _read(cls, art: Artifact) -> dict[str, Any]:
        m = art.metrics
        return {**cls._common(art), "n": m["n"], "n_valid": m["n_valid"], "mean_rating": m.get("mean_rating"),
                "calls": m["calls"], "judge": m.get("judge")}

    @staticmethod
    def write(b: Builder, *, build: str, n: int, n_valid: int, mean_rating: float | None, calls: int,
              judge: dict[str, Any] | None) -> None:
        b.metrics.update(build=build, n=n, n_valid=n_valid, mean_rating=mean_rating, calls=calls, judge=judge)

    def ratings(self) -> dict[str, int | None]:
        """Item id -> the 1-10 rating (None: the judge's reply did not parse)."""
        return {r["id"]: r["rating"] for r in self.rows()}
