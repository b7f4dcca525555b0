"""`edgetune build`'s evaluation of every build on the same items and token ids: base and GPU build in transformers,
GGUFs (and a quant with its recovery LoRA) in llama.cpp; fidelity against the GPU build, the task, forgetting
sets, judges and the harness's tasks; then the report rows (report/schema.py) and the report.

Split from pipeline.py, which orders the stages; this module only scores what they made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgetune import data
from edgetune.constants import AutoQuant, Quant
from edgetune.evals import context as board_context
from edgetune.evals import stage as evals
from edgetune.evals.context import ContextCheck
from edgetune.evals.judge_reliability import is_embedded_judge
from edgetune.export import gates
from edgetune.export.gates import GateVerdict
from edgetune.outputs import Fidelity, ForgettingEval, GGUFFile, PointwiseJudge, RecoveryGGUF, TaskEval
from edgetune.planner import make_plan
from edgetune.report import pointwise
from edgetune.report.render import BASE_BUILD, GPU_BUILD, build_report, item_texts
from edgetune.report.schema import (
    BuildRow,
    Context,
    Gate,
    Judge,
    MetricAgreement,
    Pairwise,
    Plan,
    Reliability,
)
from edgetune.report.schema import Fidelity as FidelitySection


class BuildEvaluator:
    """Scores every build on the same items and token ids: base and GPU build in transformers, GGUFs in
    llama.cpp. Each (build, suite) is a cached eval artifact recorded in `stages`."""

    def __init__(self, cfg, base, merged, data_art, store, stages, progress, board: ContextCheck):
        from transformers import AutoTokenizer

        self.cfg, self.store, self.stages, self.progress = cfg, store, stages, progress
        self.base, self.merged = base, merged
        self.fidelities: dict[str, Fidelity] = {}  # build name -> its fidelity eval (GGUFs only)
        self.base_dir = base.model_dir
        self.merged_dir = merged.model_dir
        # every build is prompted in the fine-tune's format (the base's template, or the fallback train used)
        self.tokenizer = AutoTokenizer.from_pretrained(self.merged_dir)
        self.examples = data.read_examples(data_art.heldout_path)
        self.texts = item_texts(self.examples)
        items = evals.task_items(self.examples, self.tokenizer)
        # the plan from every item, as the context check made it; then the items the policy keeps
        self.plan = evals.plan_task(items, self.tokenizer, cfg.eval.metric, cfg.eval.max_new_tokens)
        self.board = board
        self.items = board_context.keep(items, board)
        # pointwise grading against the reference: where the metric is text (chrF says least) unless set
        self.pointwise = bool(cfg.eval.judge_items) and (
            cfg.eval.judge_pointwise if cfg.eval.judge_pointwise is not None else self.plan.metric.name == "text")
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)

    def _hf(self, path: Path):
        from edgetune.runtimes import HFRuntime

        return lambda: HFRuntime(path)

    def _gguf(self, art: GGUFFile, lora: Path | None = None):
        from edgetune.runtimes import LlamaCppRuntime

        # the board's context, or 1024 where that is less: the forgetting sets are a host-side check, and
        # held-out items over the board's context are excluded or failed before they reach the runtime
        return lambda: LlamaCppRuntime(art.gguf_path, n_ctx=max(self.board.context, 1024),
                                       n_threads=self.cfg.threads, lora_path=lora)

    def _edges(self, ggufs: dict[Quant | AutoQuant, GGUFFile],
               recovered: RecoveryGGUF | None) -> list[tuple[str, Quant, str, Any, int]]:
        """(name, the quant whose gate applies, cache key, runtime opener, size in bytes) of every GGUF build: each
        file, and the recovered quant as its file with the recovery LoRA applied (size: both files)."""
        edges = [(q.value, q.budget if isinstance(q, AutoQuant) else q, a.key, self._gguf(a), a.size_bytes)
                 for q, a in ggufs.items()]
        if recovered is not None:
            q = Quant(recovered.quant)
            art = ggufs[q]
            edges.append((recovered.build_name, q, f"{art.key}+{recovered.key}",
                          self._gguf(art, lora=recovered.gguf_path), art.size_bytes + recovered.size_bytes))
        return edges

    def fidelity(self, ggufs: dict[Quant | AutoQuant, GGUFFile],
                 recovered: RecoveryGGUF | None = None) -> dict[str, GateVerdict]:
        g = self.cfg.export.gates
        self.stages["fidelity-ref"] = ref = evals.run_fidelity_reference(
            self.merged.key, self._hf(self.merged_dir), [i for i in self.items if self.board.fits(i)][: g.prompts],
            self.tokenizer, self.store,
            n_tokens=g.n_tokens, progress=self.progress)
        verdicts: dict[str, GateVerdict] = {}
        for name, quant, key, opener, _ in self._edges(ggufs, recovered):
            fid = self.stages[f"fidelity-{name}"] = self.fidelities[name] = evals.run_fidelity(
                name, key, ref, self._hf(self.merged_dir), opener, self.tokenizer, self.store,
                progress=self.progress)
            # a searched mix (a recovered quant) is held to its budget type's (its quant's) thresholds
            verdicts[name] = gates.check(quant, fid.summary(), name=name,
                                         kld_max={**gates.DEFAULT_KLD_MAX, **g.kld_max},
                                         top1_min={**gates.DEFAULT_TOP1_MIN, **g.top1_min},
                                         stop_min=g.stop_min, greedy_min=g.greedy_min)
        return verdicts

    def report(self, ggufs: dict[Quant | AutoQuant, GGUFFile], verdicts: dict[str, GateVerdict], plan,
               context: Context, training: dict[str, Any] | None = None,
               recovered: RecoveryGGUF | None = None) -> dict[str, Any]:
        """Every build's evals as report rows (report.schema's BuildRow, from the typed eval outputs), then
        the report (render.build_report) in its JSON form."""
        from edgetune.evals.mc_sets import forgetting_items

        cfg = self.cfg
        mc_sets = {name: forgetting_items(name, self.tokenizer, n_items=n, seed=cfg.eval.seed)
                   for name, n in cfg.eval.forgetting.items() if n}
        runs = [(BASE_BUILD, "base (HF fp32)", self.base.key, self._hf(self.base_dir), weights_bytes(self.base_dir)),
                (GPU_BUILD, "GPU build (HF fp32, merged)", self.merged.key, self._hf(self.merged_dir),
                 weights_bytes(self.merged_dir))]
        runs += [(name, "GGUF", key, opener, size) for name, _, key, opener, size in self._edges(ggufs, recovered)]
        task_arts: dict[str, TaskEval] = {}
        builds: list[BuildRow] = []
        graded: dict[str, PointwiseJudge] = {}
        searched = {q.value: a for q, a in ggufs.items() if isinstance(q, AutoQuant)}
        mc_arts: dict[str, dict[str, ForgettingEval]] = {name: {} for name in mc_sets}
        for build_name, kind, key, opener, size in runs:
            with evals.RuntimeLease(opener) as lease:  # one model load for the task and every forgetting set
                task_arts[build_name] = self.stages[f"eval-{build_name}"] = evals.run_task(
                    build_name, key, lease, self.items, self.tokenizer, self.store,
                    max_new_tokens=self.plan.max_new_tokens, metric=self.plan.metric, progress=self.progress,
                    context=self.board.context if kind == "GGUF" and self.board.policy == "fail" else None)
                for set_name, mc in mc_sets.items():
                    mc_arts[set_name][build_name] = self.stages[evals.forgetting_stage(set_name, build_name)] = \
                        evals.run_forgetting(build_name, key, lease, mc, self.store, set_name=set_name,
                                             progress=self.progress)
            row = BuildRow(name=build_name, kind=kind, size_bytes=size)
            if self.pointwise:
                graded[build_name] = self._judge_single(build_name, task_arts[build_name])
            if kind == "GGUF" and cfg.eval.judge_items:
                row.judge = self._judge(build_name, task_arts[GPU_BUILD], task_arts[build_name])
            planned = next((r for r in plan.rows if r.quant == build_name), None)
            if build_name in searched:  # planned on its own file: its file type is its budget's, so no row is its
                planned = make_plan(plan.target, ggufs=[searched[build_name].gguf_path],
                                    efficiency=plan.efficiency).rows[0]
            if planned is not None:
                row.plan = Plan(need_bytes=planned.need_bytes, status=planned.status,
                                predicted_prompt_tps=planned.prompt_tok_s, predicted_gen_tps=planned.gen_tok_s)
                if build_name in searched:  # set only here: the plain rows' report.json stays as it was
                    row.plan.budget = search_binding(searched[build_name])
            fid = self.fidelities.get(build_name)
            if fid is not None:
                row.fidelity = FidelitySection(**fid.summary(),
                                               gate=Gate.model_validate(verdicts[build_name].to_dict()))
            builds.append(row)
        for row in builds if self.pointwise else []:  # after the loop: the base is judged before the GPU build
            art = graded[row.name]
            gpu = None if row.name == GPU_BUILD else graded[GPU_BUILD].ratings()
            ratings = pointwise.summarise(art.ratings(), gpu, task_arts[row.name].item_scores())
            # a pairwise judge's id and reliability (GGUF rows) stay; the pointwise judge's fill in elsewhere
            reliability = Reliability(metric=self.plan.metric.name, embedded_judge=is_embedded_judge(art.judge or {}))
            own = {"judge": art.judge, "reliability": reliability.model_dump(exclude_unset=True)}
            pairwise = row.judge.model_dump(exclude_unset=True) if row.judge is not None else {}
            row.judge = Judge.model_validate({**own, **pairwise, **ratings})
        out = build_report(title=f"edgetune build: {context.model} for {context.target}",
                            builds=[r.model_dump(mode="json", by_alias=True, exclude_unset=True) for r in builds],
                            task=task_arts, forgetting=mc_arts,
                            context=context.model_dump(mode="json", by_alias=True, exclude_unset=True),
                            item_text=self.texts, margin=cfg.eval.margin, training=training,
                            max_new_tokens=self.plan.max_new_tokens)
        if cfg.eval.lm_eval_tasks:  # the harness's tasks through `edgetune bench`'s path, on the same openers
            out["standard_benchmarks"] = self._standard_benchmarks(runs).model_dump(mode="json", exclude_none=True)
        return out

    def _standard_benchmarks(self, runs: list) -> Any:
        from edgetune.harness import require_lm_eval

        require_lm_eval()
        from edgetune.harness.bench import BenchBuild, score_builds

        # one length cut for every build (the GGUFs' context), so all of them score the very same tokens
        n_ctx = max(self.board.context, 1024)
        builds = [BenchBuild(name, kind, opener, self.merged_dir, max_length=n_ctx)
                  for name, kind, _, opener, _ in runs]
        ev = self.cfg.eval
        return score_builds(builds, ev.lm_eval_tasks, num_fewshot=ev.lm_eval_num_fewshot, limit=ev.lm_eval_limit,
                            margin=ev.margin, progress=self.progress)

    def _judge_items(self) -> list[Any]:
        from edgetune.evals.judge import JudgeItem

        return [JudgeItem(i.id, question=self.texts.get(i.id, ""), reference=i.reference)
                for i in self.items[: self.cfg.eval.judge_items]]

    def _judge_single(self, build: str, task: TaskEval) -> PointwiseJudge:
        """The pointwise judge's 1-10 ratings of this build's answers (`ratings()`) and who judged."""
        from edgetune.assets import smollm2_gguf

        art = self.stages[f"judge-single-{build}"] = evals.run_judge_single(
            build, task, self._judge_items(), self.cfg.eval.judge_rubric, self.cfg.judge, smollm2_gguf(),
            self.cfg.out_dir / "judge-cache", self.store, progress=self.progress)
        return art

    def _judge(self, build: str, gpu_task: TaskEval, edge_task: TaskEval) -> Judge:
        from edgetune.assets import smollm2_gguf
        from edgetune.evals.judge_reliability import metric_agreement

        items = self._judge_items()
        art = self.stages[f"judge-{build}"] = evals.run_judge_pairwise(
            build, gpu_task, edge_task, items, self.cfg.eval.judge_rubric, self.cfg.judge, smollm2_gguf(),
            self.cfg.out_dir / "judge-cache", self.store, progress=self.progress)
        agreement = metric_agreement(art.rows(), gpu_task.item_scores(), edge_task.item_scores())
        return Judge(pairwise=Pairwise(win=art.wins_edge, tie=art.ties, loss=art.wins_gpu, invalid=art.invalid,
                                       position_flip_rate=art.flip_rate, n=art.n, calls=art.calls),
                     judge=art.judge,
                     reliability=Reliability(metric=self.plan.metric.name,
                                             metric_agreement=MetricAgreement.model_validate(agreement),
                                             embedded_judge=is_embedded_judge(art.judge or {})))


def weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def search_binding(mix: GGUFFile) -> str | None:
    """The cap that bound a searched mix (its search.json), None for one searched before caps were recorded."""
    return json.loads(mix.file("search").read_text()).get("binding")
