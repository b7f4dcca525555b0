"""The contract of `report.json`: what `build_report` (and `complete`) write and every report reader reads.

`Report.load` validates a report dict (one written now, or by an older edgetune: every field added after the
first reports is optional) and `Report.to_dict` gives back the same JSON. Models allow extra keys: other stages
and later versions add sections (`device`, a row's `flipped_items` text) that a reader of this version passes
through untouched, and a dict that round-trips through the schema keeps every key it had and gains none but
`schema_version`. Bump SCHEMA_VERSION when a field changes meaning or is removed (adding an optional one does
not need it); reports without the key are version 1, the shape before the schema existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

# Figures that json.dumps wrote as an int (0, 1) load back as an int: a float field would re-emit them as 0.0.
Number = int | float


class _Part(BaseModel):
    # extra="allow": sections this version does not model are kept as they are (see the module docstring)
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Verdict(_Part):
    """report.verdict.Verdict as a dict: a paired comparison of two builds' item scores with its rule."""

    verdict: str  # report.verdict's BEATS, NOT_BETTER, NOT_WORSE, WORSE, INCONCLUSIVE
    diff: Number | None = None  # other − reference, a share of the metric
    ci95: list[Number] | None = None
    margin: Number | None = None
    rule: str | None = None  # "non-inferiority" or "superiority"
    method: str | None = None
    n: int | None = None
    lost: int | None = None
    gained: int | None = None
    mdd: Number | None = None  # minimal detectable difference at this n
    n_needed: int | None = None  # items that would decide an inconclusive verdict


class Subject(_Part):
    """One MMLU subject of a build: its acc, n and the change against the base."""

    acc: Number
    n: int
    delta_vs_base: Number | None = None


class Forgetting(_Part):
    """One build on one multiple-choice set (report.render._forgetting)."""

    acc: Number
    n: int
    acc_norm: Number | None = None
    ci95: list[Number] | None = None
    ci95_norm: list[Number] | None = None
    delta_vs_base: Number | None = None
    delta_norm_vs_base: Number | None = None
    delta_vs_gpu: Number | None = None
    delta_vs_gpu_ci95: list[Number] | None = None
    n_paired: int | None = None
    flips_lost: list[str] | None = None
    flips_gained: list[str] | None = None
    mcnemar_p: Number | None = None
    per_subject: dict[str, Subject] | None = None


class Gate(_Part):
    passed: bool
    quant: str | None = None
    reasons: list[str] = Field(default_factory=list)


class Fidelity(_Part):
    """A GGUF against the GPU build (outputs.Fidelity's summary) and its gate verdict. A build writes every
    figure; a section another tool added may hold only some, and the readers show what is there."""

    kld_mean: Number | None = None  # mean KL(GPU || edge) per position, nats
    kld_p99: Number | None = None
    top1_agreement: Number | None = None
    greedy_agreement: Number | None = None
    stop_agreement: Number | None = None
    n_prompts: int | None = None
    n_positions: int | None = None
    gate: Gate | None = None


class Pairwise(_Part):
    """The pairwise judge's outcomes from the edge build's side (win: the edge build's answer preferred). A build
    writes counts and every field; a section another tool added may give shares (floats) and only some."""

    win: Number | None = None
    tie: Number | None = None
    loss: Number | None = None
    invalid: int | None = None
    n: int | None = None
    calls: int | None = None
    position_flip_rate: Number | None = None


class MetricAgreement(_Part):
    """How often the pairwise judge picks the build the task metric prefers (evals.judge_reliability)."""

    n: int | None = None
    agreement: Number | None = None
    n_decisive: int | None = None
    agreement_decisive: Number | None = None


class Reliability(_Part):
    """How far to trust a row's judge: the task metric it is checked against, and the embedded-judge flag."""

    metric: str | None = None
    metric_agreement: MetricAgreement | None = None  # pairwise only
    embedded_judge: bool | None = None


class PointwiseVsGpu(_Part):
    n: int
    diff: Number | None = None
    ci95: list[Number] | None = None


class Judge(_Part):
    """A row's judge section: the pairwise comparison (GGUF rows) and/or the pointwise ratings (every row, with
    eval.judge_pointwise), the judge's description and how far to trust it."""

    judge: dict[str, Any] | None = None
    pairwise: Pairwise | None = None
    reliability: Reliability | None = None
    # pointwise (report.pointwise.summarise)
    n: int | None = None
    n_valid: int | None = None
    invalid: int | None = None
    mean_score: Number | None = None  # mean 1-10 rating over valid replies
    ci95: list[Number] | None = None
    vs_gpu: PointwiseVsGpu | None = None
    metric_spearman: Number | None = None
    n_metric: int | None = None
    constant_rating: Number | None = None  # every valid reply gave this one rating: the ratings carry nothing


class Plan(_Part):
    """The planner's row for a GGUF on the target."""

    need_bytes: int | None = None
    status: str | None = None  # "fits", or why not
    predicted_prompt_tps: Number | None = None
    predicted_gen_tps: Number | None = None
    budget: str | None = None  # a searched mix: the cap that bound its search (size, ram, speed; export/budget.py)


class FlipDetail(_Part):
    """One flipped item against the GPU build: its text (cut to render.MAX_TEXT_CHARS) and both outputs."""

    id: str
    text: str | None = None
    reference: Any = None
    gpu_output: Any = None
    output: Any = None


class Bench(_Part):
    """The bundle's llama-bench run on the device (pp<n_prompt>, tg<n_gen>) next to the planner's prediction for
    the same GGUF on the bundle's target; a ratio is measured / predicted."""

    n_prompt: int | None = None
    n_gen: int | None = None
    prompt_tps: Number | None = None
    gen_tps: Number | None = None
    predicted_prompt_tps: Number | None = None
    predicted_gen_tps: Number | None = None
    prompt_ratio: Number | None = None
    gen_ratio: Number | None = None
    efficiency_source: str | None = None  # the published fit, or the board's calibration file
    error: str | None = None  # why there is no measurement (no llama-bench in the bundle, a failed run)


class DeviceRun(_Part):
    """One quant measured on a device (report.device), or a device section another tool put on a row."""

    device: str | None = None
    quant: str | None = None
    n: int | None = None
    device_facts: dict[str, Any] | None = None
    metric: str | None = None
    score: Number | None = None
    accuracy: Number | None = None
    ci95: list[Number] | None = None
    flips_lost: int | None = None  # counts here, not item ids as on a build row
    flips_gained: int | None = None
    mcnemar_p: Number | None = None
    prompt_tps: Number | None = None
    gen_tps: Number | None = None
    ttft_p50_s: Number | None = None
    ttft_p95_s: Number | None = None
    peak_rss_mb: Number | None = None
    predicted_prompt_tps: Number | None = None
    predicted_gen_tps: Number | None = None
    bench: Bench | None = None


class BuildRow(_Part):
    """One build (base, GPU build, each GGUF): its task metric, the paired comparison with the GPU build,
    forgetting per set, and the optional fidelity, judge and plan sections."""

    name: str
    kind: str | None = None  # "base (HF fp32)", "GPU build (HF fp32, merged)", "GGUF"
    size_bytes: int | None = None
    # the task metric
    accuracy: Number | None = None  # share of items strictly correct
    n: int | None = None
    ci95: list[Number] | None = None
    metric: str | None = None
    score: Number | None = None  # mean item score under `metric`
    truncated: int | None = None
    answer_forms: dict[str, int] | None = None
    # against the GPU build on the same items
    delta_vs_gpu: Number | None = None
    delta_vs_gpu_ci95: list[Number] | None = None
    n_paired: int | None = None
    flips_lost: list[str] | None = None
    flips_gained: list[str] | None = None
    mcnemar_p: Number | None = None
    flipped_items: dict[str, list[FlipDetail]] | None = None  # "lost", "gained"
    vs_gpu: Verdict | None = None
    forgetting: dict[str, Forgetting] | None = None
    mmlu: Forgetting | None = None  # reports from before the other forgetting sets
    fidelity: Fidelity | None = None
    judge: Judge | None = None
    plan: Plan | None = None
    device: DeviceRun | None = None


class Majority(Verdict):
    """A label task's GPU build against always answering the commonest held-out label (superiority)."""

    label: str
    score: Number | None = None  # the constant answer's share right


class Epoch(_Part):
    """The held-out loss and exact match the train stage measured after an epoch."""

    epoch: Number | None = None
    step: int | None = None
    eval_loss: Number | None = None
    accuracy: Number | None = None
    n: int | None = None


class Training(_Part):
    """The train stage's curve (report.finetune.training_curve)."""

    loss: list[tuple[int, Number]] = Field(default_factory=list)  # (optimizer step, training loss)
    epochs: list[Epoch] = Field(default_factory=list)
    loss_check: dict[str, Any] | None = None  # train.callbacks.loss_check
    steps: int | None = None
    n_examples: int | None = None
    learning_rate: Number | None = None


class Example(_Part):
    """A held-out answer kept when the fine-tune did not work."""

    id: str
    text: str | None = None
    reference: Any = None
    gpu_output: Any = None
    base_output: Any = None


class Finetune(Verdict):
    """Did the fine-tune work: the GPU build against the base (superiority), with the training curve."""

    worked: bool | None = None
    base_score: Number | None = None
    gpu_score: Number | None = None
    labels: list[str] | None = None
    training: Training | None = None
    vs_majority: Majority | None = None  # label tasks only
    causes: list[str] | None = None  # when it did not work: the checklist with this run's evidence
    examples: list[Example] | None = None


class Split(_Part):
    """The data split behind the held-out numbers (pipeline._check_heldout)."""

    n_train: int
    n_heldout: int
    n_examples: int | None = None
    labels: list[str] | None = None
    heldout_needed_2pct: int | None = None
    margin: Number | None = None
    summary: str | None = None


class TrainLengths(_Part):
    """What the training length did to the examples (train/lengths.py)."""

    max_length: int | None = None
    why: str | None = None
    longest: int | None = None
    n: int | None = None
    shortened: int = 0
    most_cut: int = 0
    dropped: int = 0


class BoardContext(_Part):
    """The held-out items against the context the edge builds run with (evals/context.py)."""

    context: int
    where: str
    budget: int
    longest: int
    n: int
    over: int
    policy: str
    summary: str


class Lengths(_Part):
    train: TrainLengths | None = None
    context: BoardContext | None = None


class TaskMetric(_Part):
    """How the held-out task was scored (evals.stage.TaskPlan.to_dict)."""

    metric: str | None = None
    metric_options: dict[str, Any] | None = None
    why: str | None = None
    max_new_tokens: int | None = None
    max_new_tokens_derived: bool | None = None


class Context(_Part):
    """What was built: target, model, sources, tool versions, the task metric's plan."""

    target: str | None = None
    model: str | None = None
    base: str | None = None
    data: str | None = None
    method: str | None = None
    llama_cpp: str | None = Field(default=None, alias="llama.cpp")  # the revision, 12 hex digits
    edgetune: str | None = None
    train_loss: str | None = None
    gate_mode: str | None = None  # "block" or "warn"
    split: str | None = None
    task_metric: TaskMetric | None = None


class Recommendation(_Part):
    """Which build to ship (report.recommend), or None with the reason."""

    quant: str | None = None
    reason: str | None = None
    rule: str | None = None
    source: str | None = None  # "computed" (report.recommend) or "report" (a stage wrote it)
    margin: Number | None = None
    excluded: dict[str, str] | None = None


class BenchScore(_Part):
    """One build on one harness task (harness.bench): the task's report metric and, against its reference
    (the GPU build; the base for the GPU build), the paired verdict on the same items."""

    metric: str  # "acc" or "acc_norm": the one the score and verdict use
    score: Number
    n: int
    ci95: list[Number] | None = None
    acc: Number | None = None
    acc_norm: Number | None = None
    reference: str | None = None
    verdict: Verdict | None = None
    items: dict[str, Number] | None = None  # "<harness task>/<doc id>" -> 0/1 on `metric`


class StandardBenchmarks(_Part):
    """lm-evaluation-harness tasks on every build (`edgetune bench`, or `build` with eval.lm_eval_tasks)."""

    harness: str  # "lm-eval 0.4.13"
    tasks: list[str]
    num_fewshot: int | None = None  # None: each task's own default
    limit: int | None = None  # items per harness task (per MMLU subject)
    device: str | None = None  # the GGUFs ran there over SSH; None: on the host
    margin: Number | None = None
    builds: dict[str, str] = Field(default_factory=dict)  # build -> what ran it
    seconds: dict[str, Number] = Field(default_factory=dict)
    requests: dict[str, int] = Field(default_factory=dict)  # log-likelihood requests scored per build
    notes: dict[str, str] = Field(default_factory=dict)  # task -> how its offline copy differs
    scores: dict[str, dict[str, BenchScore]] = Field(default_factory=dict)  # task -> build -> score


class Report(_Part):
    """The whole report.json (report.render.load_report insists on a title; a section passed around alone,
    as recommend() takes, may lack it)."""

    builds: list[BuildRow]
    title: str = ""
    schema_version: int = SCHEMA_VERSION
    context: Context = Field(default_factory=Context)
    margin: Number | None = None  # the non-inferiority margin (eval.margin)
    finetune: Finetune | None = None
    split: Split | None = None
    lengths: Lengths | None = None
    recommendation: Recommendation | None = None
    # sections other stages add by build name instead of on the rows (a row's own section wins)
    fidelity: dict[str, Fidelity] | None = None
    judge: dict[str, Judge] | None = None
    device: dict[str, DeviceRun] | None = None  # "<quant> @ <device>" (report.device)
    standard_benchmarks: StandardBenchmarks | None = None  # harness.bench

    @classmethod
    def load(cls, report: Mapping[str, Any] | Report) -> Report:
        """Validate a report dict (raises pydantic.ValidationError naming the bad field's path)."""
        return report if isinstance(report, Report) else cls.model_validate(dict(report))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: only the keys the report holds (unset optional fields stay absent), aliases as
        written (`llama.cpp`), plus `schema_version`."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        out["schema_version"] = self.schema_version
        return out

    def row(self, name: str) -> BuildRow | None:
        return next((r for r in self.builds if r.name == name), None)
