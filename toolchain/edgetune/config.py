"""The build configuration: pydantic models for edgetune.yaml, validated once at the edge.

Every section is frozen and forbids unknown keys, so a typo fails at load time with the field path rather than
hours into a run. CLI flags override file values through `BuildConfig.with_overrides`.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from edgetune.assets import EMBEDDED_DATA, EMBEDDED_MODEL
from edgetune.chat_templates import BUILTIN as BUILTIN_TEMPLATES
from edgetune.constants import FORGETTING_SETS, LM_EVAL_TASKS, AutoQuant, Quant
from edgetune.errors import ConfigError
from edgetune.judge_config import JudgeConfig
from edgetune.metric_spec import MetricSpec


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Section):
    source: str = Field(
        EMBEDDED_MODEL,
        description="Base model: a local HF folder, a .gguf file, a hub id, or the embedded SmolLM2-135M-Instruct.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when source is a hub id.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with a hub repo. Off unless asked.")


class DataSource(_Section):
    source: str = Field(description="jsonl, json, csv, an HF dataset folder, a hub id, or embedded:sst2.")
    weight: float = Field(1.0, gt=0, description="Share of the mixture, relative to the other sources' weights.")
    split: str | None = Field(None, description="Split to read (None: data.split).")
    revision: str | None = Field(None, description="Hub revision when source is a hub id (None: data.revision).")

    @model_validator(mode="before")
    @classmethod
    def _path_is_source(cls, data: Any) -> Any:  # `path:` reads as naturally as `source:` in a list entry
        if isinstance(data, dict) and "path" in data and "source" not in data:
            data = {("source" if k == "path" else k): v for k, v in data.items()}
        return data


class DataConfig(_Section):
    source: str = Field(EMBEDDED_DATA, description="jsonl, json, csv, an HF dataset folder, a hub id, or embedded:sst2.")
    split: str = Field("train", description="Split to read from a hub id or a DatasetDict folder.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when source is a hub id "
                                                   "(None: main); pinned to its commit for the run.")
    mix: list[DataSource] = Field(
        default_factory=list, description="Several sources mixed by weight instead of source (each {source, "
                                          "weight, split}): the largest mixture in those proportions that repeats "
                                          "no row, drawn with data.seed. `data:` given as a list means this.")
    input_column: str = Field("input", description="Column holding the user prompt.")
    output_column: str = Field("output", description="Column holding the expected answer.")
    messages_column: str = Field("messages", description="Column of chat messages, used instead of input/output.")
    system_prompt: str | None = Field(None, description="System message added to every example, if set.")
    heldout_size: int | None = Field(
        None, ge=10, description="Examples held out for evaluation (never trained on), a count. None: "
                                 "heldout_share of the data, at least heldout_min and at most heldout_max, and "
                                 "never more than half the data.")
    heldout_share: float = Field(0.2, gt=0, lt=1, description="Share of the examples held out when heldout_size "
                                                              "is None (0-1).")
    heldout_min: int = Field(50, ge=10, description="Fewest held-out examples when heldout_size is None, a count.")
    heldout_max: int = Field(500, ge=10, description="Most held-out examples when heldout_size is None, a count.")
    stratify: bool = Field(True, description="For label tasks (few distinct short answers), hold out each label "
                                             "in its share of the data, so both parts see every label.")
    train_size: int | None = Field(384, ge=1, description="Cap on training examples (None: all that remain).")
    seed: int = Field(0, description="Seed of the train/held-out split.")

    @model_validator(mode="after")
    def _source_or_mix(self) -> DataConfig:
        # compared with the default, not by fields set: with_overrides re-validates a dump holding every field
        if self.mix and self.source != EMBEDDED_DATA:
            raise ValueError("set either source or mix, not both (mix lists every source with its weight)")
        return self

    @model_validator(mode="after")
    def _heldout_bounds(self) -> DataConfig:
        if self.heldout_min > self.heldout_max:
            raise ValueError(f"heldout_min ({self.heldout_min}) is above heldout_max ({self.heldout_max})")
        return self


# Adapter kinds refused, with the reason: llama.cpp runs none of them and none folds into the weights.
REFUSED_ADAPTERS = {
    "prefix": "prefix tuning", "prefix_tuning": "prefix tuning", "prompt": "prompt tuning",
    "prompt_tuning": "prompt tuning", "p_tuning": "p-tuning", "ptuning": "p-tuning",
}


class TrainConfig(_Section):
    method: Literal["auto", "lora", "qlora"] = Field(
        "auto", description="Base precision. auto: QLoRA (NF4 base) when CUDA and bitsandbytes are present, else "
                            "an fp32 (CPU) or bf16 (CUDA) base; lora: full-precision base; qlora: NF4 base.",
    )
    adapter: Literal["lora", "dora", "rslora", "ia3"] = Field(
        "lora", description="Adapter kind, each mergeable into the base: lora; dora (weight-decomposed LoRA); "
                            "rslora (LoRA scaled alpha/sqrt(r)); ia3 (learned scaling vectors, far fewer parameters).",
    )
    r: int = Field(16, ge=1, description="LoRA rank (lora, dora, rslora).")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r; alpha / sqrt(r) for rslora).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names (suffixes) or a preset to adapt with lora/dora/rslora; checked against the model.",
    )
    ia3_target_modules: list[str] = Field(
        default_factory=lambda: ["k_proj", "v_proj", "down_proj"],
        description="Modules IA3 scales (its paper's choice: keys, values and the feed-forward output).",
    )
    ia3_feedforward_modules: list[str] = Field(
        default_factory=lambda: ["down_proj"],
        description="Those of ia3_target_modules whose input (not output) IA3 scales: the feed-forward ones.",
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    epochs: float | None = Field(
        None, gt=0, description="Passes over the training set. None: 1, raised (up to 10) until the run makes "
                                "min_steps optimizer steps (train/schedule.py).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    min_steps: int = Field(
        60, ge=0, description="Fewest optimizer steps when max_steps is None: a small data set gets more epochs "
                              "(up to 10) until epochs x steps per epoch reaches this, when epochs is None (0: "
                              "off). See train/schedule.py.")
    batch_size: int = Field(8, ge=1, description="Per-device batch size, in examples.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    micro_batch_tokens: int | None = Field(
        None, ge=1, description="Split each device batch into micro-batches of at most this many tokens (examples x "
                          "max_length), raising accumulation so every optimizer step still sees batch_size "
                          "examples: the same gradients in less activation memory, but slower (H200, Mistral-7B "
                          "shape, 4 x 2048: 4096 tokens gave 0.76x the memory at 0.73x the tok/s). None: off.")
    max_length: int | None = Field(
        None, ge=16, description="Longest tokenised example, in tokens (None: the training data's 99th percentile, "
                                 "rounded up to 64, capped by the model's context). Longer examples are shortened "
                                 "in the prompt, never in the answer.")
    gradient_checkpointing: bool | None = Field(
        None, description="Recompute activations in the backward pass (less memory, ~25% slower). None: on for "
                          "CUDA, off on CPU.")
    offload_activations: bool | None = Field(
        None, description="With gradient checkpointing, hold each checkpointed layer's saved input in pinned host "
                          "memory while the GPU computes, the copies on a side stream (train/offload.py). CUDA only. "
                          "None: on for a single CUDA process training a model of hidden size 4096 or more, where "
                          "the copies hide behind the layers' compute (H100, Mistral-7B shape: 1.00x the tok/s at "
                          "0.76x the memory; Llama-3.2-1B shape, hidden 2048: 0.88x the tok/s, so off there); "
                          "docs/benchmarks.md.")
    compile_layers: bool | None = Field(
        None, description="torch.compile each decoder layer's parts (attention, MLP, norms) for fewer, fused kernels; "
                          "Liger then patches none of the layers; the loss stays fused (train/compile.py). The "
                          "first step pays the compile (~10 s on an H100). None: on for a single CUDA process "
                          "training a model of hidden size 2048 to 4095 without offload_activations (H100, "
                          "Llama-3.2-1B shape: 1.23x the tok/s at dropout 0, 1.07x at 0.05; Mistral-7B shape: "
                          "0.99x, so off there); docs/benchmarks.md.")
    save_steps: int = Field(50, ge=0, description="Checkpoint every this many optimizer steps, so an interrupted "
                                                  "run resumes (0: no checkpoints). Checkpoints go once the "
                                                  "adapter is saved.")
    eval_items: int = Field(16, ge=0, description="Held-out items answered greedily after each epoch for the task "
                                                  "accuracy (0: off; the held-out loss is always measured).")
    packing: bool = Field(False, description="Pack several examples into each max_length row (TRL's best-fit "
                                             "decreasing, padding-free: position_ids keep examples from attending "
                                             "to each other). batch_size then counts packed rows.")
    chat_template_fallback: str | None = Field(
        None, description="Chat template for a base model that has none: a built-in name (chatml) or a .jinja file. "
                          "Ignored when the model has its own; the merged model and GGUFs carry it.")
    seed: int = Field(0, description="Training seed (CPU runs are bit-reproducible).")
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = Field(
        "none", description="Where training metrics go as they are logged: tensorboard (event files in the train "
                            "artifact's tensorboard/ folder; the [tensorboard] extra), wandb (its own settings and "
                            "key, from WANDB_* variables) or mlflow (MLFLOW_TRACKING_URI). Does not change the "
                            "adapter or the cache key.")

    @field_validator("chat_template_fallback")
    @classmethod
    def _template_name_or_file(cls, v: str | None) -> str | None:
        if v is not None and v not in BUILTIN_TEMPLATES and not v.endswith(".jinja"):
            builtin = ", ".join(BUILTIN_TEMPLATES)
            raise ValueError(f"{v!r} is neither a built-in template ({builtin}) nor a .jinja file")
        return v

    @field_validator("adapter", mode="before")
    @classmethod
    def _refuse_unmergeable(cls, v: Any) -> Any:
        name = str(v).strip().lower().replace("-", "_")
        if name in REFUSED_ADAPTERS:
            kind = REFUSED_ADAPTERS[name]
            raise ConfigError(
                f"train.adapter: {kind} is not supported: it learns virtual tokens rather than weight changes, "
                "so it cannot be merged into the model, and llama.cpp cannot run it on the board",
                "use adapter: lora (or dora, rslora, ia3), which merge into the weights",
            )
        return name if isinstance(v, str) else v

    @model_validator(mode="after")
    def _ia3_feedforward_is_targeted(self) -> TrainConfig:
        extra = sorted(set(self.ia3_feedforward_modules) - set(self.ia3_target_modules))
        if extra:
            raise ValueError(f"ia3_feedforward_modules {extra} must also be in ia3_target_modules")
        return self


class GateConfig(_Section):
    mode: Literal["block", "warn"] | None = Field(
        None, description="block: a failed gate stops the bundle; warn: ship and report. None: block, except for "
                          "the embedded 135M demo model, which cannot meet thresholds calibrated on 7B models.")
    prompts: int = Field(20, ge=1, description="Held-out prompts compared against the GPU build.")
    n_tokens: int = Field(64, ge=1, description="Greedy tokens compared per prompt.")
    kld_max: dict[Quant, float] = Field(default_factory=dict, description="Mean KLD limit per quant (nats); "
                                        "unset types use edgetune.export.gates.DEFAULT_KLD_MAX.")
    top1_min: dict[Quant, float] = Field(default_factory=dict, description="Top-1 agreement floor per quant (0-1).")
    stop_min: float = Field(0.95, ge=0, le=1, description="Share of prompts where the build stops where the GPU build does.")
    greedy_min: float = Field(0.0, ge=0, le=1, description="Floor on the mean share of matching greedy tokens.")


def _quant_or_auto(value: Any) -> Quant | AutoQuant:
    """A plain quant type (the enum), or auto:<QUANT>-size; one error naming both forms otherwise."""
    if isinstance(value, (Quant, AutoQuant)):
        return value
    if isinstance(value, str) and value.startswith(AutoQuant.PREFIX):
        return AutoQuant(value)
    try:
        return Quant(value)
    except ValueError:
        known = ", ".join(repr(q.value) for q in Quant)
        raise ValueError(f"Input should be {known} or auto:<QUANT>-size (e.g. auto:Q4_0-size)") from None


QuantOrAuto = Annotated[Quant | AutoQuant, PlainValidator(_quant_or_auto, json_schema_input_type=str),
                        PlainSerializer(lambda q: q.value, return_type=str)]


class ExportConfig(_Section):
    quants: list[QuantOrAuto] | None = Field(
        None, description="Quant types to build; None: the target's own list. auto:<QUANT>-size (e.g. "
                          "auto:Q4_0-size) adds a per-tensor precision mix searched to be no larger than the plain "
                          "<QUANT> file, with the least KLD to the GPU build on training prompts (export/mix.py).")
    min_tok_s: float | None = Field(
        None, gt=0, description="Speed floor of a searched mix (auto:<QUANT>-size), tokens/s: the planner's "
                                "predicted generation speed on the target (its bandwidth roofline, published fit) "
                                "must stay at or above it, which caps the file's bytes (export/budget.py). None: "
                                "no floor; the target's usable RAM and the plain file's size still cap it.")
    imatrix: bool = Field(True, description="Use an importance matrix from the training text for 4-bit and "
                                           "lower types (needs llama.cpp's native tools: scripts/setup.sh).")
    lora_gguf: bool = Field(True, description="Also export the adapter as a LoRA GGUF, checked to load on each "
                                              "quantized base GGUF (ship the base once, small adapters after).")
    merged_dtype: Literal["base", "float32"] = Field(
        "base", description="dtype of the saved merged model: the base's own (bf16 for a bf16 base; fp32 for a "
                            "dequantized GGUF base), or float32 (2x a bf16 base's disk). The merge is always done "
                            "in fp32 and GGUFs are converted from the fp32 merge either way.")
    recovery: Quant | None = Field(
        None, description="Also train a recovery LoRA for this quant (one of export.quants): distilled from the GPU "
                          "build on the training prompts with the quantized file's own weights frozen, shipped as a "
                          "LoRA GGUF beside that file and evaluated as <QUANT>+recovery. None: off.")
    recovery_steps: int = Field(120, ge=1, description="Optimizer steps of the recovery LoRA (batch 8, rank 8).")
    gates: GateConfig = Field(GateConfig(), description="Fidelity of each GGUF to the GPU build, on held-out "
                              "prompts.")

    @field_validator("quants")
    @classmethod
    def _auto_budget_is_built(cls, quants: list[Quant | AutoQuant] | None) -> list[Quant | AutoQuant] | None:
        # the plain file is the budget's measure, and the report compares the mix with it on the same items
        for q in quants or []:
            if isinstance(q, AutoQuant) and q.budget not in quants:  # type: ignore[operator]
                raise ValueError(f"{q} needs {q.budget.value} in export.quants too: its file size is the budget, "
                                 "and the report compares the two")
        return quants


# Forgetting sets of the default build and their sizes: MMLU carries the check; the small subsets of the
# others add about a minute to the embedded default on a 2-core CPU (docs/benchmarks.md) and flag large drops.
DEFAULT_FORGETTING = {"mmlu": 100, "arc_easy": 30, "arc_challenge": 30, "hellaswag": 15, "piqa": 25,
                      "winogrande": 30}


class EvalConfig(_Section):
    metric: MetricSpec = Field(MetricSpec(), description="How held-out answers are scored: a name (auto, label, "
                               "exact, contains, regex, json, number, text) or {name, pattern, json_schema, "
                               "tolerance}. auto: json when every reference is a JSON object, number when each "
                               "ends with a number, label for a small set of short labels, else text.")
    max_new_tokens: int | None = Field(None, ge=1, description="Greedy tokens generated per held-out item; None: "
                                       "4 for labels, else the references' 99th-percentile token length x 1.25 "
                                       "+ 16 (at most 512).")
    margin: float = Field(
        0.02, gt=0, lt=1, description="Non-inferiority margin, in units of the task metric (0.02 = 2 points of "
                                      "accuracy): a build is \"not worse\" than the GPU build only when the 95% CI "
                                      "of the paired difference lies above -margin.")
    judge_items: int = Field(20, ge=0, description="Held-out items judged pairwise, GPU vs each GGUF (0: off).")
    judge_rubric: str = Field("reference-match", description="Judge rubric: a name (shipped, or "
                              "~/.config/edgetune/judge/<name>.yaml) or a path.")
    judge_pointwise: bool | None = Field(
        None, description="Also grade every build's answers (base, GPU build, each GGUF) 1-10 against the reference "
                          "on the same judge_items, with the paired difference from the GPU build. None: on when "
                          "the task metric is text (where string overlap says least).")
    forgetting: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_FORGETTING),
        description="Forgetting check: set name -> items in its seeded subset (0 or absent: not run). Sets: mmlu, "
                    "arc_easy, arc_challenge, hellaswag, piqa, winogrande; log-likelihood multiple choice on the "
                    "base, the GPU build and every GGUF.")
    seed: int = Field(0, description="Seed of every forgetting subset.")
    lm_eval_tasks: list[str] = Field(
        default_factory=list, description="lm-evaluation-harness tasks run on every build after the evals, as "
                                          "`edgetune bench` runs them (needs edgetune[lmeval]; empty: off). Tasks: "
                                          "mmlu, arc_challenge, arc_easy, hellaswag, piqa, winogrande; "
                                          "TASK:N gives one its own few-shot count (mmlu,mmlu:5).")
    lm_eval_limit: int | None = Field(None, ge=1, description="Items per lm_eval task (per MMLU subject); None: all.")
    lm_eval_num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples for the lm_eval tasks; "
                                                                     "None: each task's own default.")
    context_length: int | None = Field(
        None, ge=128, description="Context the edge builds run with, tokens: the bundle's runner, Modelfile and "
                                  "llama-server line, and every GGUF eval. None: the target profile's "
                                  "context_length (never more than the model's own).")
    over_context: Literal["exclude", "fail"] = Field(
        "exclude", description="Held-out items whose prompt plus answer budget exceed that context: exclude (left "
                               "out of every build's score) or fail (scored as failures on the GGUF builds). The "
                               "report says how many.")

    @model_validator(mode="before")
    @classmethod
    def _fold_mmlu_items(cls, data: Any) -> Any:
        """`mmlu_items: N` (edgetune <= 0.1) still works: it sets `forgetting.mmlu`, with a warning."""
        if isinstance(data, dict) and "mmlu_items" in data:
            data = dict(data)
            n = data.pop("mmlu_items")
            sets = data.get("forgetting")
            data["forgetting"] = {**(sets if isinstance(sets, dict) else DEFAULT_FORGETTING), "mmlu": n}
            logging.getLogger(__name__).warning(
                "eval.mmlu_items is deprecated: read as eval.forgetting.mmlu = %s; write `forgetting: {mmlu: %s}` "
                "under eval: instead", n, n)
        return data

    @field_validator("lm_eval_tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        for name in v:
            task, colon, shots = name.partition(":")
            if task not in LM_EVAL_TASKS:
                raise ValueError(f"no offline copy of harness task {task!r}; "
                                 f"choose from {', '.join(LM_EVAL_TASKS)}")
            if colon and not shots.isdigit():
                raise ValueError(f"bad few-shot count in {name!r}: write TASK:N with N >= 0, e.g. mmlu:5")
        if len(set(v)) != len(v):
            raise ValueError("a harness task is listed twice in eval.lm_eval_tasks")
        return v

    @field_validator("forgetting")
    @classmethod
    def _known_sets(cls, v: dict[str, int]) -> dict[str, int]:
        for name, n in v.items():
            if name not in FORGETTING_SETS:
                raise ValueError(f"unknown forgetting set {name!r}; choose from {', '.join(FORGETTING_SETS)}")
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"{name}: items must be a whole number >= 0, got {n!r}")
        return v


class BuildConfig(_Section):
    target: str = Field("rpi5", description="Target board profile: shipped, or in "
                        "~/.config/edgetune/targets/ (`edgetune targets list`).")
    out_dir: Path = Field(Path("edgetune-out"), description="Where stage artifacts, bundles and reports go.")
    threads: int | None = Field(None, ge=1, description="CPU threads for training and llama.cpp (None: all).")
    model: ModelConfig = Field(ModelConfig(), description="The base model to fine-tune.")
    data: DataConfig = Field(DataConfig(), description="The examples: where they come from and how they split "
                             "into training and held-out parts.")
    train: TrainConfig = Field(TrainConfig(), description="The adapter and its training run.")
    export: ExportConfig = Field(ExportConfig(), description="GGUF conversion, quantization and the fidelity "
                                 "gates.")
    eval: EvalConfig = Field(EvalConfig(), description="How every build (base, GPU build, each GGUF) is scored.")
    judge: JudgeConfig | None = Field(
        None, description="OpenAI-compatible judge endpoint; None: a local llama.cpp judge over the embedded "
                          "SmolLM2 (weak, a smoke test). api_key_env names the variable holding the key, never "
                          "the key itself.",
        json_schema_extra={"example": {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                                       "api_key_env": "OPENAI_API_KEY", "concurrency": 4}})

    @field_validator("target")
    @classmethod
    def _target_name(cls, v: str) -> str:
        return v.strip().lower()

    def with_overrides(self, overrides: dict[str, Any]) -> BuildConfig:
        """A new config with dotted keys replaced, e.g. {"train.r": 8, "target": "rpi4-4gb"}; re-validated."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"command-line flags: {dotted}: no such setting",
                                      "`edgetune init` lists every key")
                node = node[p]
            node[leaf] = value
        return _validate(data, "command-line flags")


def _validate(data: dict[str, Any], origin: str) -> BuildConfig:
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{origin}: {where}: {err['msg']}", "fix that field; `edgetune init` writes a commented example") from exc


def load_config(path: Path | None) -> BuildConfig:
    """Read and validate edgetune.yaml (None: the embedded default). Raises ConfigError."""
    if path is None:
        return BuildConfig()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", "create one with `edgetune init`")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: not UTF-8 text
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}", "check indentation and quoting") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level", "see `edgetune init`")
    # Relative paths in the file mean "relative to the file", wherever edgetune is run from.
    base = path.parent
    if isinstance(data.get("out_dir"), str):
        data["out_dir"] = str((base / data["out_dir"]))
    if isinstance(data.get("data"), list):  # `data: [{path, weight}, ...]`: a weighted mixture
        data["data"] = {"mix": data["data"]}
    for section in ("model", "data"):
        src = (data.get(section) or {}).get("source") if isinstance(data.get(section), dict) else None
        if isinstance(src, str) and not Path(src).is_absolute() and (base / src).exists():
            data[section]["source"] = str(base / src)
    mix = data["data"].get("mix") if isinstance(data.get("data"), dict) else None
    for entry in mix if isinstance(mix, list) else []:
        key = "source" if isinstance(entry, dict) and "source" in entry else "path"
        src = entry.get(key) if isinstance(entry, dict) else None
        if isinstance(src, str) and not Path(src).is_absolute() and (base / src).exists():
            entry[key] = str(base / src)
    metric = data["eval"].get("metric") if isinstance(data.get("eval"), dict) else None
    if isinstance(metric, dict) and isinstance(metric.get("json_schema"), str) \
            and not Path(metric["json_schema"]).expanduser().is_absolute():
        metric["json_schema"] = str(base / metric["json_schema"])
    return _validate(data, str(path))


STARTER_HEADER = """\
# edgetune.yaml: what to fine-tune, for which board, and how to check it. Every key is optional;
# the values shown are the defaults (the embedded SmolLM2 + SST-2 sentiment example).
# CLI flags override this file, e.g. `edgetune build --target rpi4-4gb --quant Q4_0 --rank 8`.
"""
STARTER_WIDTH = 110  # the repository's line length


def _yaml_value(value: Any) -> str:
    """One value in YAML flow style, as a line of the starter file shows it."""
    text: str = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return text.strip().removesuffix("...").strip()


def _starter_lines(model: BaseModel, indent: str) -> list[str]:
    lines: list[str] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if info.description:
            width = STARTER_WIDTH - len(indent) - 2
            lines += [f"{indent}# {line}" for line in textwrap.wrap(info.description, width)]
        if isinstance(value, _Section):  # a section: its own fields, indented under its key
            lines.append(f"{indent}{name}:")
            lines += _starter_lines(value, indent + "  ")
            continue
        if isinstance(value, MetricSpec):  # the default metric is written by name, as users write it
            dumped = value.model_dump(mode="json", exclude_defaults=True)
            shown = _yaml_value(dumped) if dumped else value.name
        else:
            shown = _yaml_value(value.value if isinstance(value, Quant) else
                                [q.value for q in value] if isinstance(value, list) and value
                                and isinstance(value[0], Quant) else
                                str(value) if isinstance(value, Path) else value)
        lines.append(f"{indent}{name}: {shown}")
        extra = info.json_schema_extra
        example = extra.get("example") if isinstance(extra, dict) else None
        if example is not None:  # an optional section left unset: how it looks when set, commented out
            body = yaml.safe_dump({name: example}, default_flow_style=False, sort_keys=False)
            lines += [f"{indent}# {line}" for line in body.splitlines()]
    return lines


def starter_yaml() -> str:
    """The commented edgetune.yaml that `edgetune init` writes, generated from the models above: every field
    with its default and its description, so a field added to a section appears here by construction.
    tests/test_config.py checks it loads back to BuildConfig()."""
    return STARTER_HEADER + "\n" + "\n".join(_starter_lines(BuildConfig(), "")) + "\n"


STARTER = starter_yaml()
