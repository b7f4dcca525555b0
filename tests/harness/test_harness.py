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


def _loglikelihoods(lm, names, limit):
    """Every (context, continuation) request of the tasks and the model's answer, in the harness's order."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    from edgetune.harness.tasks import build_tasks

    tasks = [t for ts in build_tasks(names, num_fewshot=0).values() for t in ts]
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_defaults=False), limit=limit,
                          log_samples=True, bootstrap_iters=0)
    return {(s["doc_id"], t.config.task, i): (req[0], s["arguments"][i])
            for t in tasks for s in out["samples"][t.config.task]
            for i, req in enumerate(s["resps"])}


def test_edgetune_lm_matches_the_harness_hf_class(tiny_model_dir):
    """Same requests, same tokens: log-likelihoods equal the `hf` class's to float rounding, accuracies exactly."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from edgetune.harness.bench import evaluate
    from edgetune.harness.lm import EdgetuneLM
    from edgetune.runtimes import HFRuntime

    with HFRuntime(tiny_model_dir) as rt:
        ours = EdgetuneLM(rt, AutoTokenizer.from_pretrained(tiny_model_dir), max_length=512)
        mine = _loglikelihoods(ours, TASKS, 3)
        acc_mine = evaluate(ours, TASKS, limit=3)
    hf = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4, dtype="float32", max_length=512)
    theirs = _loglikelihoods(hf, TASKS, 3)
    acc_theirs = evaluate(hf, TASKS, limit=3)
    assert mine.keys() == theirs.keys() and len(mine) >= 12
    for key, ((lp, greedy), args) in mine.items():
        (lp_hf, greedy_hf), args_hf = theirs[key]
        assert args == args_hf
        assert math.isclose(lp, lp_hf, abs_tol=1e-4), (key, lp, lp_hf)
        assert greedy == greedy_hf
    for name in TASKS:
        assert acc_mine[name].acc == acc_theirs[name].acc and acc_mine[name].acc_norm == acc_theirs[name].acc_norm


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


def test_bench_cli_on_a_run(tmp_path, monkeypatch, tiny_model_dir, tiny_gguf):
    """`edgetune --json bench`: every build on the same items, verdicts against the GPU build (base for the GPU
    build), the section typed in report.json and bench.json."""
    from edgetune.report.schema import Report

    run_dir = make_run(tmp_path, tiny_model_dir, tiny_model_dir, {"F16": tiny_gguf})
    res = run_edgetune(monkeypatch, *["--json", "bench", str(run_dir), "--tasks", "piqa,mmlu", "--limit", "1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["builds"] == {"base": "base (HF fp32)", "gpu": "GPU build (HF fp32, merged)",
                             "F16": "GGUF (llama.cpp, host)"}
    assert out["scores"]["mmlu"]["gpu"]["n"] == 57 and out["scores"]["piqa"]["F16"]["n"] == 1
    section = Report.load(json.loads((run_dir / "report.json").read_text())).standard_benchmarks
    assert section is not None and section.tasks == ["piqa", "mmlu"]
    mmlu = section.scores["mmlu"]
    # the base and GPU build are the same weights here: same answers, a zero paired difference
    assert mmlu["gpu"].items == mmlu["base"].items and mmlu["gpu"].verdict.diff == 0
    assert mmlu["F16"].reference == "gpu" and mmlu["F16"].verdict.n == 57
    assert mmlu["F16"].items.keys() == mmlu["gpu"].items.keys()
    assert json.loads((run_dir / "bench.json").read_text())["scores"]["piqa"]["base"]["metric"] == "acc_norm"
    from edgetune.report.markdown import to_markdown

    md = to_markdown(json.loads((run_dir / "report.json").read_text()))
    assert "## Standard benchmarks (lm-evaluation-harness)" in md and "mmlu acc (n=57)" in md


def test_bench_bad_input(tmp_path, monkeypatch, tiny_model_dir):
    run_dir = make_run(tmp_path, tiny_model_dir, tiny_model_dir, {})
    res = run_edgetune(monkeypatch, *["bench", str(run_dir), "--tasks", "piqa,gsm8k"])
    assert res.exit_code == 2 and "no offline copy of harness task 'gsm8k'" in res.stderr
    res = run_edgetune(monkeypatch, *["bench", str(tmp_path), "--tasks", "piqa"])
    assert res.exit_code == 2 and "is not a build's run folder" in res.stderr
    from edgetune.config import BuildConfig

    with pytest.raises(ValueError, match="no offline copy of harness task 'gsm8k'"):
        BuildConfig.model_validate({"eval": {"lm_eval_tasks": ["gsm8k"]}})
    assert BuildConfig().eval.lm_eval_tasks == []  # off by default: the default build is unchanged
    with pytest.raises(ConfigError, match="exactly one"):
        from edgetune.harness.lm import open_lm

        open_lm()
