"""`edgetune build`: every stage in order, each skipped when its cached artifact still matches.

data → base → train → merge → GGUF F16 → quantize (the target's list) → bundle → evals (base, GPU build, every
GGUF; same items, same token ids) → report. Cheap checks (target, llama.cpp tools, dataset) run first, so bad
input fails before any heavy work. Writes `<out_dir>/runs/<target>/` (report.md, report.json, run.json).
This module orders the stages; build_eval.py scores what they made and assembles the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from edgetune import __version__, bundle, data, merge
from edgetune.artifacts import Artifact, Store, write_json
from edgetune.assets import EMBEDDED_MODEL
from edgetune.build_eval import BuildEvaluator
from edgetune.config import BuildConfig
from edgetune.constants import AutoQuant, Quant
from edgetune.errors import ConfigError, GateError, NothingToShip
from edgetune.evals.suites import load_rubric
from edgetune.evals import context as board_context
from edgetune.evals import stage as evals
from edgetune.evals.context import ContextCheck
from edgetune.export import stage as export
from edgetune.export.budget import Budget, target_caps
from edgetune.export.imatrix import LOW_BIT, calibration_text
from edgetune.export.lora import lora_gguf_supported
from edgetune.export.mix import BITS_PER_WEIGHT
from edgetune.export.naming import GGUFNaming, is_hub_id, naming_for
from edgetune.model_card import CardInfo
from edgetune.llamacpp import LlamaCppTools, load_tools
from edgetune.modelshape import read_model_file, shape_from_hf_config
from edgetune.outputs import (
    Adapter,
    BaseModel,
    DataSplit,
    GGUFFile,
    LoraGGUF,
    MergedModel,
)
from edgetune.planner import make_plan
from edgetune.progress import NullProgress, Progress
from edgetune.report.finetune import training_curve
from edgetune.report.render import write_report_files
from edgetune.report.schema import BoardContext, Context, Lengths, Report, Split, TaskMetric, TrainLengths
from edgetune.report.verdict import heldout_needed
from edgetune.targets import Target, get_target
from edgetune.train.launch import available_gpus, check_gpus
from edgetune.train.workflow import inputs as train_inputs
from edgetune.train.workflow import train_registered

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    run_dir: Path
    bundle_dir: Path
    tarball: Path
    report_md: Path
    report_json: Path
    report: dict[str, Any]
    stages: dict[str, Artifact] = field(default_factory=dict)

    @property
    def reused(self) -> list[str]:
        return [name for name, a in self.stages.items() if a.cached]

    @property
    def ran(self) -> list[str]:
        return [name for name, a in self.stages.items() if not a.cached]


def model_name(cfg: BuildConfig) -> str:
    def stem(source: str) -> str:
        tail = source.split(":", 1)[-1].rstrip("/").split("/")[-1]
        return re.sub(r"\.(gguf|jsonl|json|csv)$", "", tail, flags=re.IGNORECASE)

    raw = f"{stem(cfg.model.source)}-{stem(cfg.data.source)}"
    return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-")


def resolve_gate_mode(cfg: BuildConfig) -> str:
    """None means block, except for the embedded 135M demo model (thresholds are calibrated on 7B models);
    that exception is logged and recorded in the manifest, never silent."""
    if cfg.export.gates.mode is not None:
        return cfg.export.gates.mode
    if cfg.model.source == EMBEDDED_MODEL:
        log.warning("export.gates.mode=warn for the embedded 135M demo model: it cannot meet fidelity gates "
                    "calibrated on 7B models; set export.gates.mode: block to enforce them")
        return "warn"
    return "block"


def build(cfg: BuildConfig, home: Path, progress: Progress | None = None, *, strict: bool = False, gpus: int = 1,
          fsdp: bool | None = None, cpu_processes: bool = False) -> BuildResult:
    """Run the whole pipeline for `cfg`. `gpus`/`fsdp` train as `edgetune train --gpus` does (train/launch.py;
    `cpu_processes` runs the N processes on the CPU, as the launcher's tests do). Raises the stage's
    EdgetuneError subclass on bad input or failure (ConfigError for more GPUs than CUDA shows, before any stage),
    GateError (after writing the report, without a bundle) when a fidelity gate fails in block mode, and with
    `strict`, NothingToShip (report written, no bundle) when the report recommends no build."""
    progress = progress or NullProgress()
    if gpus > 1 and not cpu_processes:
        check_gpus(gpus, available_gpus())
    target = get_target(cfg.target)
    if cfg.eval.context_length is not None:  # the board runs the edge builds with this context instead
        target = target.model_copy(update={"context_length": cfg.eval.context_length})
    quants: list[Quant | AutoQuant] = list(dict.fromkeys(cfg.export.quants or target.quants))
    plain = [q for q in quants if isinstance(q, Quant)]
    if cfg.export.recovery is not None and cfg.export.recovery not in plain:
        raise ConfigError(f"export.recovery is {cfg.export.recovery.value}, which is not among the quants built "
                          f"({', '.join(q.value for q in quants)})", "add it to export.quants, or pick one of them")
    tools = load_tools(home)
    if cfg.eval.judge_items:  # a bad rubric file (eval.judge_rubric) fails here, not after training and export
        load_rubric(cfg.eval.judge_rubric)
    stages: dict[str, Artifact] = {}

    store, data_art, base = train_inputs(cfg)  # data and base exactly as `edgetune train` makes them
    stages["data"], stages["base"] = data_art, base
    split = _check_heldout(data_art, cfg.eval.margin)
    # held-out items the board's context cannot take are known from the data: counted (or fatal) before training
    board = _check_context(cfg, target, base, data_art)
    if board.context != target.context_length:  # the model's own context is less: the bundle runs with that
        target = target.model_copy(update={"context_length": board.context})
    # a board too small for every quant fails here, before any training (estimates from the model's shape)
    make_plan(target, hf_config=base.model_dir / "config.json", quants=plain).require_pick()
    _check_search_caps(cfg, target, base, [q for q in quants if isinstance(q, AutoQuant)])
    # trained and registered exactly as `edgetune train` does it, through the same launcher
    train_run = train_registered(cfg, store, data_art, base, gpus=gpus, fsdp=fsdp, cpu=cpu_processes,
                                 progress=progress)
    stages["train"] = trained = train_run.trained.artifact
    adapter_entry = train_run.entry
    naming = gguf_naming(cfg, trained.training.method)
    stages["merge"] = merged = merge.run(base, trained, store, dtype=cfg.export.merged_dtype,
                                         card=card_info(cfg, base, naming, trained.training.method))
    name = model_name(cfg)
    provenance = _provenance(cfg, base, data_art, trained, adapter_entry.id)
    ggufs = _export(cfg, name, provenance, base, merged, data_art, quants, tools, store, stages, naming, target)
    plan = make_plan(target, ggufs=[ggufs[q].gguf_path for q in plain])  # a mix's file type is its budget's
    fitting = {Quant(r.quant) for r in plan.rows if r.fits}
    # a searched mix is planned on its own file: its RAM cap can make it fit where its budget's plain file does not
    fits = {q for q in plain if q in fitting} | {q for q in quants if isinstance(q, AutoQuant)
                                                and make_plan(target, ggufs=[ggufs[q].gguf_path]).rows[0].fits}
    dropped = [q for q in quants if q not in fits]
    if dropped:
        log.warning("dropping %s from the bundle: over %s's usable RAM (see `edgetune plan`)",
                    ", ".join(q.value for q in dropped), target.name)
    plan.require_pick()
    shipped = [q for q in quants if q in fits]

    gate_mode = resolve_gate_mode(cfg)
    ev = BuildEvaluator(cfg, base, merged, data_art, store, stages, progress, board)
    recovered = None
    if cfg.export.recovery is not None and cfg.export.recovery in shipped:
        rq = cfg.export.recovery
        stages[f"recovery-{rq.value}"] = recovered = export.recovery_adapter(
            merged, ggufs[rq], _train_sequences(data_art, merged), tools, store, steps=cfg.export.recovery_steps,
            probe_ids=ev.items[0].prompt_ids)
    verdicts = ev.fidelity(ggufs, recovered)
    context = Context(
        target=target.name, model=name, base=cfg.model.source, data=cfg.data.source,
        method=trained.training.method, llama_cpp=tools.revision[:12], edgetune=__version__,
        train_loss=f"{trained.training.loss_first:.3f} → {trained.training.loss_last:.3f}",
        gate_mode=gate_mode, split=split.summary, task_metric=TaskMetric.model_validate(ev.plan.to_dict()))
    report = ev.report(ggufs, verdicts, plan, context=context, training=_training(trained, cfg),
                       recovered=recovered)
    report["split"] = split.model_dump(mode="json", exclude_unset=True)
    report["lengths"] = Lengths(train=_train_lengths(trained),
                                context=BoardContext.model_validate(board.to_dict())).model_dump(mode="json")
    run_dir = cfg.out_dir / "runs" / target.name
    written = write_report_files(report, run_dir)
    report_json, report_md = written.json_path, written.md_path
    rec = Report.load(written.report).recommendation
    if strict and (rec is None or not rec.quant):
        _write_run(cfg, run_dir, stages)
        why = rec.reason if rec is not None and rec.reason is not None else "no recommendation"
        raise NothingToShip(f"nothing to ship: {why} (report: {report_md})",
                            "see the report's first section; build without --strict to bundle anyway")
    shipped_names = [q.value for q in shipped] + ([recovered.build_name] if recovered is not None else [])
    failed = {n: verdicts[n] for n in shipped_names if not verdicts[n].passed}
    if failed and gate_mode == "block":
        _write_run(cfg, run_dir, stages)
        why = "; ".join(f"{n}: {', '.join(v.reasons)}" for n, v in failed.items())
        raise GateError(f"fidelity gate failed, no bundle written: {why} (report: {report_md})",
                        "fix the export (another quant, an imatrix) or set export.gates.mode: warn to ship anyway")
    gates = {"mode": gate_mode, "verdicts": {n: verdicts[n].to_dict() for n in shipped_names}}
    llama_cpp = {"llama-cpp-python": tools.version, "llama.cpp": tools.revision}
    plan_summary = {"pick": plan.pick.quant, "reason": plan.reason,
                    "rows": {r.quant: {"need_bytes": r.need_bytes, "status": r.status, "prompt_tok_s": r.prompt_tok_s,
                                       "gen_tok_s": r.gen_tok_s} for r in plan.rows}}
    # the LoRA GGUF applies to plain quants of the base model (a searched mix is of the fine-tune's own weights)
    lora = _lora_gguf(cfg, name, base, trained, [q for q in shipped if isinstance(q, Quant)], tools, store,
                      probe_ids=ev.items[0].prompt_ids)
    if lora is not None:
        stages["lora-gguf"] = lora
    # the device side: cross-built llama.cpp + the stdlib runner + the held-out suite on the same token ids
    suite_rows = [{"id": i.id, "prompt_ids": i.prompt_ids, "max_tokens": ev.plan.max_new_tokens,
                   "reference": i.reference} for i in ev.items if board.fits(i)]
    stages["bundle"] = bundled = bundle.run(target, {q: ggufs[q] for q in shipped},
                                            {**provenance, "gates": gates, "plan": plan_summary},
                                            llama_cpp, store, model_name=name, runtime=target.arch == "aarch64",
                                            suite_rows=suite_rows, home=home, lora=lora, recovery=recovered,
                                            file_stems={q: naming.stem(q.value.replace(":", "-")) for q in shipped},
                                            lora_stem=naming.stem("F16", lora=True),
                                            lora_base_stem=f"{naming.base_model['name']}-{shipped[0].value}")
    _write_run(cfg, run_dir, stages)
    return BuildResult(run_dir, bundled.bundle_dir, bundled.tarball_path, report_md, report_json, report,
                       stages)


def _check_heldout(data_art: DataSplit, margin: float) -> Split:
    """The split's numbers for the report, with a WARNING when the held-out part is too small for the verdict
    margin: fewer items than a build that disagrees with the GPU build on 2% of them (a near-lossless quant)
    needs to be shown "not worse" (report.verdict.heldout_needed)."""
    n_heldout, n_train = data_art.n_heldout, data_art.n_train
    needed = heldout_needed(margin, disagreement=0.02)
    if needed is not None and n_heldout < needed:
        log.warning("data: %d held-out items are too few for eval.margin=%g: a build that disagrees with the GPU "
                    "build on 2%% of items is shown \"not worse\" only from about %d items, so verdicts will "
                    "mostly be inconclusive; add data, raise data.heldout_share/heldout_max, or widen eval.margin",
                    n_heldout, margin, needed)
    labels = data_art.labels or []
    n_examples = data_art.n_examples
    summary = (f"{n_train} trained, {n_heldout} held out" + (f" of {n_examples}" if n_examples else "")
               + (f", stratified by {len(labels)} labels" if labels else ""))
    return Split(n_train=n_train, n_heldout=n_heldout, n_examples=n_examples, labels=labels or None,
                 heldout_needed_2pct=needed, margin=margin, summary=summary)


def _check_context(cfg: BuildConfig, target: Target, base: BaseModel, data_art: DataSplit) -> ContextCheck:
    """The held-out items against the context the edge builds get on the board (evals/context.py), from the
    base's tokenizer and chat template (or the fallback training will use: the merged model carries it).
    Raises DataError when no item fits, TrainError for a model with no chat template and no fallback."""
    from transformers import AutoTokenizer

    from edgetune.train.lengths import model_context
    from edgetune.train.stage import apply_template_fallback

    tok = AutoTokenizer.from_pretrained(base.model_dir)
    apply_template_fallback(tok, cfg.train.chat_template_fallback, base.model_dir)
    items = evals.task_items(data.read_examples(data_art.heldout_path), tok)
    budget = evals.plan_task(items, tok, cfg.eval.metric, cfg.eval.max_new_tokens).max_new_tokens
    where = "eval.context_length" if cfg.eval.context_length is not None else f"{target.name}'s context_length"
    limit = model_context(base.model_dir)
    if limit is not None and limit < target.context_length:
        where = f"the model's context ({where} is {target.context_length:,})"
    checked = board_context.check(items, budget, min(target.context_length, limit or target.context_length),
                                  where, cfg.eval.over_context)
    (log.warning if checked.over else log.info)("eval: %s", checked.summary())
    return checked


def _train_lengths(trained: Adapter) -> TrainLengths:
    """What the training length did to the examples (train/lengths.py), for the report."""
    m = trained.training
    return TrainLengths(max_length=m.max_length, why=m.max_length_why, longest=m.longest_example, n=m.n_examples,
                        shortened=m.shortened, most_cut=m.most_cut, dropped=m.dropped)


def _training(trained: Adapter, cfg: BuildConfig) -> dict[str, Any]:
    """The train stage's curve for the report's fine-tune section (report.finetune.training_curve)."""
    history = data.read_examples(trained.log_path)
    return training_curve(trained.metrics, history, cfg.train.learning_rate)


def _provenance(cfg: BuildConfig, base: BaseModel, data_art: DataSplit, trained: Adapter,
                registry_id: str) -> dict:
    """What the GGUF's `edgetune.provenance` key and the bundle manifest say about where the model came from."""
    return {
        "base": {"source": cfg.model.source, "sha256": base.source_sha256, "license": base.license},
        "data": {"source": cfg.data.source, "artifact": data_art.key},
        "adapter": {"artifact": trained.key, "method": trained.training.method, "registry_id": registry_id},
        # compile_layers is how fast the adapter was trained, not what it is (train/stage.py leaves it out of the
        # adapter's key too); left out here, adding it kept every existing GGUF's key and metadata as they were
        "train": cfg.train.model_dump(exclude={"compile_layers"}),
        "edgetune": __version__,
    }


def gguf_naming(cfg: BuildConfig, method: str) -> GGUFNaming:
    """llama.cpp's names and general.* metadata for this fine-tune (export.naming)."""
    from edgetune.assets import smollm2_gguf

    source = cfg.model.source
    gguf = smollm2_gguf() if source == EMBEDDED_MODEL else Path(source).expanduser() \
        if source.lower().endswith(".gguf") else None
    return naming_for(source, cfg.data.source, method=method, gguf_source=gguf)


def card_info(cfg: BuildConfig, base: BaseModel, naming: GGUFNaming, method: str) -> CardInfo:
    """What the model cards say: the base's hub id (or name), the data's hub id (or name), licence and tags."""
    hub_data = cfg.data.source if is_hub_id(cfg.data.source) else None
    return CardInfo(base_model=cfg.model.source if is_hub_id(cfg.model.source) else naming.base_model["name"],
                    datasets=(hub_data or naming.dataset["name"],), license=base.license, tags=naming.tags,
                    title=f"{naming.basename}-{naming.size_label or ''}-{naming.finetune}".replace("--", "-"),
                    method=method)


def _export(cfg: BuildConfig, name: str, provenance: dict, base: BaseModel, merged: MergedModel,
            data_art: DataSplit, quants: list[Quant | AutoQuant], tools: LlamaCppTools, store: Store,
            stages: dict[str, Artifact], naming: GGUFNaming, target: Target) -> dict[Quant | AutoQuant, GGUFFile]:
    """The merged model as an F16 GGUF, then each quant (with an importance matrix from the training text for
    the low-bit ones), then each searched mix under its caps on `target` (export.budget). Records every stage in
    `stages`."""
    from gguf import Keys

    trained = provenance["adapter"]["artifact"]
    description = f"{name}: fine-tuned by edgetune {__version__} (adapter {trained[:12]})"
    # general.source.url is a URL (the hub page), never a bare hub id
    metadata = {Keys.General.DESCRIPTION: description, **naming.metadata()}
    trained_art = Adapter.of(stages["train"])
    stages["gguf-F16"] = f16 = export.convert(merged, tools, store, name=name, provenance=provenance,
                                              license_name=base.license,
                                              metadata={k: v for k, v in metadata.items() if v},
                                              full_precision=partial(merge.full_precision, merged, base, trained_art))
    imatrix = None
    plain = [q for q in quants if isinstance(q, Quant)]
    autos = [q for q in quants if isinstance(q, AutoQuant)]
    if cfg.export.imatrix and any(q in LOW_BIT for q in plain):
        from transformers import AutoTokenizer

        # the merged model's tokenizer: it carries a fallback chat template where the base has none
        text = calibration_text(data.read_examples(data_art.train_path),
                                AutoTokenizer.from_pretrained(merged.model_dir))
        stages["imatrix"] = imatrix = export.importance_matrix(f16, text, tools, store, threads=cfg.threads)
    ggufs: dict[Quant | AutoQuant, GGUFFile] = {Quant.F16: f16}
    for q, art in export.quantize(f16, [q for q in plain if q != Quant.F16], tools, store, threads=cfg.threads,
                                  imatrix=imatrix).items():
        ggufs[q] = art
    if autos:
        seqs = _calibration_sequences(data_art, merged)
        sha = hashlib.sha256(json.dumps(seqs).encode()).hexdigest()
        shape = read_model_file(f16.gguf_path).shape
        for auto in autos:  # the config checked that each budget quant is in the list, so it is built above
            ggufs[auto] = export.searched_mix(
                f16, auto, ggufs[auto.budget], sha, partial(_mix_scorer, merged.model_dir, seqs, cfg.threads), tools,
                store, threads=cfg.threads, imatrix=imatrix if auto.budget in LOW_BIT else None,
                limits=target_caps(target, shape, auto.budget.value, min_tok_s=cfg.export.min_tok_s))
    stages.update({f"gguf-{q.value}": a for q, a in ggufs.items()})
    return ggufs


def _check_search_caps(cfg: BuildConfig, target: Target, base: BaseModel, autos: list[AutoQuant]) -> None:
    """Before training: a searched mix whose target caps (RAM, speed floor) are below every weight at 4.5 bits
    (a lower bound of the smallest mix: Q4_0 everywhere, no norms, no header) can never be built. Raises the
    search's own ExportError naming the cap."""
    if not autos:
        return
    shape = shape_from_hf_config(base.model_dir / "config.json")
    lower_bound = shape.n_params * BITS_PER_WEIGHT["Q4_0"] / 8
    for auto in autos:
        caps = Budget(target_caps(target, shape, auto.budget.value, min_tok_s=cfg.export.min_tok_s))
        if caps.bytes < lower_bound:
            raise caps.refuse(lower_bound, at_least=True)


MIX_CALIBRATION = 12  # training sequences scoring the precision search (never held-out ones)


def _calibration_sequences(data_art: DataSplit, merged: MergedModel) -> list[list[int]]:
    """The sequences a searched mix is scored on against the GPU build: the first training items."""
    return _train_sequences(data_art, merged)[:MIX_CALIBRATION]


def _train_sequences(data_art: DataSplit, merged: MergedModel) -> list[list[int]]:
    """The training items as the model sees them (chat-template prompt, answer, end of turn): what the
    precision search is scored on and the recovery adapter is distilled on (never held-out ones)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged.model_dir)
    items = evals.task_items(data.read_examples(data_art.train_path), tok)
    end = [tok.eos_token_id] if tok.eos_token_id is not None else []
    return [list(i.prompt_ids) + tok(i.reference, add_special_tokens=False)["input_ids"] + end for i in items]


def _mix_scorer(merged_dir: Path, seqs: list[list[int]], threads: int | None) -> Callable[[Path], float]:
    """Mean KL(GPU build || GGUF) over `seqs`' positions (evals.fidelity.kld_and_top1): the GPU build's logits
    are computed once here, each probe file is loaded in llama.cpp as the board runs it."""
    import numpy as np

    from edgetune.evals.fidelity import kld_and_top1
    from edgetune.runtimes import HFRuntime, LlamaCppRuntime

    with HFRuntime(merged_dir) as ref:
        ref_logits = [ref.logits(s) for s in seqs]
    n_ctx = max(512, max(len(s) for s in seqs))

    def score(path: Path) -> float:
        with LlamaCppRuntime(path, n_ctx=n_ctx, n_threads=threads) as edge:
            kl = [kld_and_top1(r, edge.logits(s))[0] for r, s in zip(ref_logits, seqs, strict=True)]
        return float(np.concatenate(kl).mean())

    return score


def _lora_gguf(cfg: BuildConfig, name: str, base: BaseModel, trained: Adapter, shipped: list[Quant],
               tools: LlamaCppTools, store: Store, *, probe_ids: list[int]) -> LoraGGUF | None:
    """The adapter alone as a LoRA GGUF, checked on each shipped quant of the base model; None when turned off
    or when the adapter kind has no llama.cpp form (DoRA, IA3: a warning says so)."""
    if not cfg.export.lora_gguf:
        return None
    if why := lora_gguf_supported(trained.adapter_dir):
        log.warning("export.lora_gguf: skipped, %s (train.adapter=%s); the bundle ships the merged GGUFs only. "
                    "Set export.lora_gguf: false to silence this", why, cfg.train.adapter)
        return None
    base_f16 = export.convert(base, tools, store, name=f"{name}-base", license_name=base.license)
    base_ggufs = {Quant.F16: base_f16, **export.quantize(base_f16, [q for q in shipped if q != Quant.F16],
                                                         tools, store, threads=cfg.threads)}
    return export.lora_adapter(trained, base.model_dir, {q: base_ggufs[q] for q in shipped}, tools,
                               store, probe_ids=probe_ids)


def _write_run(cfg: BuildConfig, run_dir: Path, stages: dict[str, Artifact]) -> None:
    """run.json: the config and every stage's artifact folder (what `edgetune report` and benchmarks read)."""
    write_json(run_dir / "run.json", {"config": cfg.model_dump(mode="json"),
                                      "stages": {k: str(a.path) for k, a in stages.items()}})
