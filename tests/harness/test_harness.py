"""The `edgetune` harness model class and `edgetune bench` on real models: the tiny random Llama (HF) against
the harness's own `hf` class, the embedded SmolLM2 GGUF through llama.cpp, and a run folder's builds end to
end. Items come from the offline copies of the harness tasks (no hub); limits are a few items a task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[lmeval]')")

from edgetune.constants import ARTIFACT_FILE, RUN_RECORD  # noqa: E402
from edgetune.errors import ConfigError  # noqa: E402

from tests.clirun import run_edgetune  # noqa: E402

TASKS = ["arc_challenge", "winogrande"]
# the issue's list: MMLU 0-shot and 5-shot, ARC-Challenge, HellaSwag, PIQA, WinoGrande
STANDARD = ["mmlu", "mmlu:5", "arc_challenge", "hellaswag", "piqa", "winogrande"]


def _loglikelihoods(lm, entry, limit):
    """Every (context, continuation) request of one task entry and the model's answer, in the harness's order
    (one evaluation per entry: `mmlu` and `mmlu:5` share the harness's task names)."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    from edgetune.harness.tasks import build_tasks

    tasks = build_tasks([entry])[entry]
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_defaults=False), limit=limit,
                          log_samples=True, bootstrap_iters=0)
    return {(s["doc_id"], t.config.task, i): (req[0], s["arguments"][i])
            for t in tasks for s in out["samples"][t.config.task]
            for i, req in enumerate(s["resps"])}


def _limit(entry: str) -> int:
    return 1 if entry.startswith("mmlu") else 3  # MMLU's limit is per subject: 57 items


def test_edgetune_lm_matches_the_harness_hf_class(tiny_model_dir):
    """The same local model folder through edgetune's HF runtime and through the harness's own `hf` class, on
    every standard task (MMLU 0- and 5-shot included; 5-shot prompts pass max_length, so both cut them from
    the left): the same requests, log-likelihoods equal to float rounding, accuracies equal (to 1e-3, in fact
    item by item)."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from edgetune.harness.bench import evaluate
    from edgetune.harness.lm import EdgetuneLM
    from edgetune.runtimes import HFRuntime

    hf = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4, dtype="float32", max_length=512)
    with HFRuntime(tiny_model_dir) as rt:
        ours = EdgetuneLM(rt, AutoTokenizer.from_pretrained(tiny_model_dir), max_length=512)
        for entry in STANDARD:
            mine, theirs = _loglikelihoods(ours, entry, _limit(entry)), _loglikelihoods(hf, entry, _limit(entry))
            assert mine.keys() == theirs.keys() and len(mine) >= 6, entry
            for key, ((lp, greedy), args) in mine.items():
                (lp_hf, greedy_hf), args_hf = theirs[key]
                assert args == args_hf
                assert math.isclose(lp, lp_hf, abs_tol=1e-4), (entry, key, lp, lp_hf)
                assert greedy == greedy_hf
            acc_mine = evaluate(ours, [entry], limit=_limit(entry))[entry]
            acc_theirs = evaluate(hf, [entry], limit=_limit(entry))[entry]
            assert acc_mine.acc == acc_theirs.acc and acc_mine.acc_norm == acc_theirs.acc_norm, entry
            for metric in ("acc", "acc_norm"):
                a, b = getattr(acc_mine, metric), getattr(acc_theirs, metric)
                assert abs(sum(a.values()) / max(len(a), 1) - sum(b.values()) / max(len(b), 1)) <= 1e-3
    # 5-shot is really 5-shot: its prompts hold four more questions with their answers than 0-shot's
    five = _loglikelihoods(hf, "mmlu:5", 1)
    zero = _loglikelihoods(hf, "mmlu", 1)
    key = next(iter(zero))
    assert five[key][1][0].count("Answer:") == zero[key][1][0].count("Answer:") + 5


def test_rolling_and_generate_on_the_embedded_gguf(smollm2_gguf):
    """loglikelihood_rolling sums the windows' log-likelihoods (one window == the plain request); generate_until
    stops at the harness's stop strings and equals the runtime's greedy ids."""
    from lm_eval.api.instance import Instance
    from transformers import AutoTokenizer

    from edgetune.harness.lm import EdgetuneLM
    from edgetune.runtimes import LlamaCppRuntime

    tok = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    text = "The capital of France is Paris. The capital of Italy is Rome."
    with LlamaCppRuntime(smollm2_gguf, n_ctx=256, n_threads=1) as rt:
        lm = EdgetuneLM(rt, tok, max_length=8)  # several windows
        ids = tok.encode(text, add_special_tokens=False)
        rolled = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])[0]
        whole = EdgetuneLM(rt, tok, max_length=256).loglikelihood_rolling(
            [Instance("loglikelihood_rolling", {}, (text,), 0)])[0]
        assert rolled < whole < 0  # shorter windows see less context: less likely text
        (lp, _), = rt.loglikelihood([([tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id],
                                      ids)])
        assert math.isclose(whole, lp, abs_tol=1e-3)
        prompt = "Question: What is 2+2?\nAnswer:"
        out = EdgetuneLM(rt, tok, max_length=256).generate_until(
            [Instance("generate_until", {}, (prompt, {"until": ["\n"], "max_gen_toks": 12}), 0)])[0]
        greedy = tok.decode(rt.generate(tok.encode(prompt), 12, [tok.eos_token_id]))
        assert out == greedy.split("\n")[0] and "\n" not in out
        with pytest.raises(Exception, match="greedily"):
            lm.generate_until([Instance("generate_until", {}, (prompt, {"do_sample": True}), 0)])


def make_run(root: Path, base: Path, merged: Path, ggufs: dict[str, Path], bundle: Path | None = None) -> Path:
    """A run folder as `edgetune build` leaves it (run.json naming the stage artifact folders)."""
    def art(name: str, kind: str, outputs: dict, metrics: dict | None = None) -> str:
        folder = root / "store" / name
        folder.mkdir(parents=True)
        (folder / ARTIFACT_FILE).write_text(json.dumps({"kind": kind, "key": name, "outputs": outputs,
                                                        "metrics": metrics or {}}))
        return str(folder)

    stages = {"base": art("base", "base", {"model_dir": str(base), "source_sha256": "x"}),
              "merge": art("merge", "merge", {"model_dir": str(merged)}, {"max_logit_diff": 0.0})}
    for quant, path in ggufs.items():
        stages[f"gguf-{quant}"] = art(f"gguf-{quant}", "gguf", {"gguf": str(path)},
                                      {"quant": quant, "size_bytes": path.stat().st_size, "sha256": "0" * 64})
    if bundle is not None:
        stages["bundle"] = art("bundle", "bundle", {"bundle": str(bundle), "tarball": str(bundle) + ".tar"},
                               {"files": 1, "size_bytes": 1})
    run_dir = root / "runs" / "rpi5"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_RECORD).write_text(json.dumps({"config": {}, "stages": stages}))
    (run_dir / "report.json").write_text(json.dumps({"title": "t", "builds": [], "margin": 0.05}))
    return run_dir


def test_bench_cli_on_a_run(tmp_path, monkeypatch, tiny_model_dir, tiny_gguf, tiny_bundle):
    """`edgetune --json bench` on the standard list (MMLU 0- and 5-shot side by side): every build (the HF base
    and GPU build, the F16 GGUF and the bundle's Q4_0/Q8_0, as a default build makes them) on the same items,
    verdicts against the GPU build (base for the GPU build), the section typed in report.json and bench.json."""
    from edgetune.bundle_manifest import read_manifest
    from edgetune.report.schema import Report

    bundle_dir = tiny_bundle.file("bundle")
    ggufs = {"F16": tiny_gguf, **{m["quant"]: bundle_dir / m["file"] for m in read_manifest(bundle_dir)["models"]}}
    run_dir = make_run(tmp_path, tiny_model_dir, tiny_model_dir, ggufs)
    res = run_edgetune(monkeypatch, *["--json", "bench", str(run_dir), "--tasks", ",".join(STANDARD), "--limit",
                                      "1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["builds"] == {"base": "base (HF fp32)", "gpu": "GPU build (HF fp32, merged)",
                             "F16": "GGUF (llama.cpp, host)", "Q4_0": "GGUF (llama.cpp, host)",
                             "Q8_0": "GGUF (llama.cpp, host)"}
    assert out["tasks"] == STANDARD and list(out["scores"]) == STANDARD
    for build in out["builds"]:
        assert out["scores"]["mmlu"][build]["n"] == out["scores"]["mmlu:5"][build]["n"] == 57
        assert all(out["scores"][t][build]["n"] == 1 for t in STANDARD[2:])
    # one request per MMLU choice (4 x 57, twice) plus each other task's choices, the same for every build
    assert len(set(out["requests"].values())) == 1 and out["requests"]["gpu"] >= 2 * 4 * 57 + 4 + 4 + 2 + 2
    section = Report.load(json.loads((run_dir / "report.json").read_text())).standard_benchmarks
    assert section is not None and section.tasks == STANDARD
    mmlu = section.scores["mmlu"]
    # the base and GPU build are the same weights here: same answers, a zero paired difference
    assert mmlu["gpu"].items == mmlu["base"].items and mmlu["gpu"].verdict.diff == 0
    assert mmlu["F16"].reference == "gpu" and mmlu["F16"].verdict.n == 57
    assert mmlu["Q4_0"].items.keys() == mmlu["gpu"].items.keys() == section.scores["mmlu:5"]["Q8_0"].items.keys()
    assert json.loads((run_dir / "bench.json").read_text())["scores"]["piqa"]["base"]["metric"] == "acc_norm"
    from edgetune.report.markdown import to_markdown

    md = to_markdown(json.loads((run_dir / "report.json").read_text()))
    assert "## Standard benchmarks (lm-evaluation-harness)" in md and "mmlu:5 acc (n=57)" in md


def test_bench_bad_input(tmp_path, monkeypatch, tiny_model_dir):
    run_dir = make_run(tmp_path, tiny_model_dir, tiny_model_dir, {})
    res = run_edgetune(monkeypatch, *["bench", str(run_dir), "--tasks", "piqa,gsm8k"])
    assert res.exit_code == 2 and "no offline copy of harness task 'gsm8k'" in res.stderr
    for bad, says in (("mmlu:five", "bad few-shot count in 'mmlu:five'"), ("piqa,piqa", "listed twice")):
        res = run_edgetune(monkeypatch, *["bench", str(run_dir), "--tasks", bad])
        assert res.exit_code == 2 and says in res.stderr, res.stderr
    res = run_edgetune(monkeypatch, *["bench", str(tmp_path), "--tasks", "piqa"])
    assert res.exit_code == 2 and "is not a build's run folder" in res.stderr
    from edgetune.config import BuildConfig

    with pytest.raises(ValueError, match="no offline copy of harness task 'gsm8k'"):
        BuildConfig.model_validate({"eval": {"lm_eval_tasks": ["gsm8k"]}})
    with pytest.raises(ValueError, match="bad few-shot count"):
        BuildConfig.model_validate({"eval": {"lm_eval_tasks": ["mmlu:-1"]}})
    assert BuildConfig.model_validate({"eval": {"lm_eval_tasks": ["mmlu", "mmlu:5"]}}).eval.lm_eval_tasks == [
        "mmlu", "mmlu:5"]
    assert BuildConfig().eval.lm_eval_tasks == []  # off by default: the default build is unchanged
    with pytest.raises(ConfigError, match="exactly one"):
        from edgetune.harness.lm import open_lm

        open_lm()


def test_build_runs_the_harness_tasks(tmp_path, tiny_model_dir, colour_jsonl):
    """`build` with eval.lm_eval_tasks: the same path as `edgetune bench`, on every build the pipeline made (base,
    GPU build, F16 and each quant), MMLU 5-shot beside a 0-shot task, in the build's report.json."""
    from edgetune.home import edgetune_home
    from edgetune.pipeline import build

    from tests.test_pipeline import config

    cfg = config(tiny_model_dir, colour_jsonl, tmp_path / "out").with_overrides(
        {"eval.lm_eval_tasks": ["winogrande", "mmlu:5"], "eval.lm_eval_limit": 1, "eval.forgetting": {"mmlu": 4}})
    result = build(cfg, edgetune_home())
    section = json.loads(result.report_json.read_text())["standard_benchmarks"]
    assert section["tasks"] == ["winogrande", "mmlu:5"] and section["limit"] == 1
    assert sorted(section["builds"]) == sorted(["base", "gpu", "F16", "Q8_0", "Q4_0"])  # in the eval stages' order
    for build_name in section["builds"]:
        assert section["scores"]["mmlu:5"][build_name]["n"] == 57
        assert section["scores"]["winogrande"][build_name]["n"] == 1
    assert section["scores"]["mmlu:5"]["Q4_0"]["reference"] == "gpu"
