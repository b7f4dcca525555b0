"""Remote evaluation jobs against a real sshd: the real on-device runner (runner/edgetune_runner.py) driving this
machine's real llama-server on the tiny GGUF (see conftest.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
from edgetune.device import run_eval, run_fleet
from edgetune.errors import ConfigError, DeviceError, DeviceUnreachable

from tests.device.conftest import SLOW_TOKENS, server_runs, write_suite


def test_eval_runs_once_then_collects(sshd, device_bundle, tmp_path):
    suite = write_suite(tmp_path / "suite.jsonl", 4, max_tokens=3)
    out = tmp_path / "out"
    first = asyncio.run(run_eval(device_bundle, sshd.device(), suite, out_dir=out, timeout_s=60))
    assert first.status == "ran" and first.items == 4 and first.ran_items == 4
    rows = [json.loads(line) for line in first.results_path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3"]
    for row in rows:  # real answers: three greedy tokens each, timed by llama-server itself
        assert row["stop_type"] == "limit" and row["output_tokens"] == 3 and row["output"]
        assert row["prompt_tokens"] > 1 and row["gen_tokens_per_s"] > 0
    summary = json.loads(first.summary_path.read_text())
    assert summary["items"] == 4
    assert {"cpu_model", "ram_mb", "os", "temperature_c", "throttled"} <= set(first.device_facts)
    assert first.results_path.parent == out / "testdev" / first.job_id
    assert (first.results_path.parent / "device_run.json").is_file()
    again = asyncio.run(run_eval(device_bundle, sshd.device(), suite, out_dir=out, timeout_s=60))
    assert again.status == "collected" and again.job_id == first.job_id and again.deploy["bytes_sent"] == 0
    assert again.results_path.read_text() == first.results_path.read_text()
    assert server_runs(first.remote_job_dir) == 4  # nothing ran twice


def test_concurrent_evals_never_run_the_job_twice(sshd, device_bundle, tmp_path):
    n = 12  # >= 3 s of answers on one thread: the second run below starts 0.5 s into the first
    suite = write_suite(tmp_path / "suite.jsonl", n, max_tokens=SLOW_TOKENS)
    asyncio.run(run_eval(device_bundle, sshd.device(), write_suite(tmp_path / "warm.jsonl", 1), out_dir=tmp_path,
                         timeout_s=60))  # deploy first, so both runs below race on the job itself

    async def both():
        one = asyncio.create_task(run_eval(device_bundle, sshd.device(), suite, out_dir=tmp_path / "a",
                                           timeout_s=120, threads=1))
        await asyncio.sleep(0.5)
        two = asyncio.create_task(run_eval(device_bundle, sshd.device(), suite, out_dir=tmp_path / "b",
                                           timeout_s=120, threads=1))
        return await asyncio.gather(one, two)

    a, b = asyncio.run(both())
    assert {a.status, b.status} == {"ran", "joined"}
    assert a.results_path.read_text() == b.results_path.read_text()
    assert server_runs(a.remote_job_dir) == n


def test_bad_suite_is_refused_before_connecting(device_bundle, tmp_path):
    from edgetune.device import parse_device

    from tests.device.conftest import free_port

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "max_tokens": 2}\n')  # neither prompt nor prompt_ids
    nowhere = parse_device(f"nobody@127.0.0.1:{free_port()}", connect_timeout_s=3)  # never contacted
    with pytest.raises(ConfigError, match="line 1: give exactly one of 'prompt_ids' and 'prompt'"):
        asyncio.run(run_eval(device_bundle, nowhere, bad, out_dir=tmp_path, timeout_s=60))


def test_runner_failure_is_an_error_naming_the_cause(sshd, device_bundle, tmp_path):
    suite = write_suite(tmp_path / "suite.jsonl", 1)
    with pytest.raises(DeviceError, match="runner failed.*README.md"):  # a bundle file that is not a GGUF
        asyncio.run(run_eval(device_bundle, sshd.device(), suite, out_dir=tmp_path, timeout_s=60, model="README.md"))


def test_fleet_eval_captures_errors_per_device(sshd, device_bundle, tmp_path):
    from edgetune.device import parse_device

    from tests.device.conftest import free_port

    bad = parse_device(f"nobody@127.0.0.1:{free_port()}", name="gone", known_hosts=sshd.folder / "known_hosts",
                       ssh_config=sshd.folder / "none", connect_timeout_s=3)
    suite = write_suite(tmp_path / "suite.jsonl", 2)
    fleet = asyncio.run(run_fleet(device_bundle, [bad, sshd.device()], suite, out_dir=tmp_path, timeout_s=60))
    assert fleet.results["testdev"].items == 2 and isinstance(fleet.errors["gone"], DeviceUnreachable)


def test_eval_runs_the_bundles_llama_bench_next_to_the_prediction(sshd, device_bundle, tmp_path):
    """The runner runs bin/llama-bench (here this machine's real x86 build) on the job's model after the suite;
    device_run.json holds its pp/tg tok/s and the planner's prediction for that GGUF on the bundle's target (an
    rpi5 prediction for an x86 run: the ratio is wiring, not a claim), and the report shows both."""
    from edgetune.report.device import bench_entry
    from edgetune.report.schema import Bench

    run = asyncio.run(run_eval(device_bundle, sshd.device(), write_suite(tmp_path / "s.jsonl", 1), out_dir=tmp_path,
                               timeout_s=120, threads=1, bench=(64, 16)))
    bench, pred = run.bench, run.predicted
    assert bench["exit_code"] == 0 and "error" not in bench, bench
    assert [t["test"] for t in bench["tests"]] == ["pp64", "tg16"]
    assert all(t["n_threads"] == 1 and len(t["samples_ts"]) == 3 and t["avg_ts"] > 0 for t in bench["tests"])
    assert bench["argv"][0].endswith("bin/llama-bench") and bench["model_n_params"] > 0
    assert bench["prompt_tokens_per_s"] == bench["tests"][0]["avg_ts"]
    assert bench["gen_tokens_per_s"] == bench["tests"][1]["avg_ts"]
    assert pred["target"] == "rpi5-8gb" and pred["quant"] in {"Q4_0", "Q8_0"} and pred["prompt_tok_s"] > 0
    assert pred["gen_tok_s"] == pytest.approx(min(pred["gen_roofline_tok_s"], pred["prompt_tok_s"]), rel=1e-3)
    record = json.loads((run.results_path.parent / "device_run.json").read_text())
    assert record["bench"] == bench and record["predicted"] == pred
    shown = Bench.model_validate(bench_entry(record))
    assert shown.n_prompt == 64 and shown.n_gen == 16 and shown.error is None
    assert shown.prompt_ratio == pytest.approx(bench["prompt_tokens_per_s"] / pred["prompt_tok_s"], rel=1e-3)
    assert shown.gen_ratio == pytest.approx(bench["gen_tokens_per_s"] / pred["gen_tok_s"], rel=1e-3)


def test_eval_without_llama_bench_says_so(sshd, device_bundle, tmp_path):
    from tests.device.conftest import make_device_bundle

    bundle = make_device_bundle(device_bundle, tmp_path / "nobench")
    (bundle / "bin" / "llama-bench").unlink()
    from tests.device.conftest import rewrite_manifest

    rewrite_manifest(bundle)
    run = asyncio.run(run_eval(bundle, sshd.device(), write_suite(tmp_path / "s.jsonl", 1), out_dir=tmp_path,
                               timeout_s=60, threads=1))
    assert run.items == 1 and run.bench["skipped"].startswith("no llama-bench at ")


def _recovery_bundle(device_bundle, tmp_path, tiny_model_dir, llama_tools):
    """device_bundle plus a recovery adapter for its Q4_0 file, placed and listed as bundle.run places it
    (adapters/<model>-Q4_0-recovery-f16.gguf, manifest recovery_adapters): a real LoRA GGUF of the tiny Llama."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from edgetune.constants import MANIFEST_FILE
    from edgetune.export.lora import convert_lora
    from tests.device.conftest import make_device_bundle, rewrite_manifest

    bundle = make_device_bundle(device_bundle, tmp_path / "recovery")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False)).save_pretrained(tmp_path / "adapter")
    rel = "adapters/tiny-Q4_0-recovery-f16.gguf"
    (bundle / "adapters").mkdir(exist_ok=True)
    convert_lora(tmp_path / "adapter", tiny_model_dir, bundle / rel, llama_tools)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    q4 = next(m["file"] for m in manifest["models"] if m["quant"] == "Q4_0")
    manifest["recovery_adapters"] = [{"file": rel, "applies_to": q4, "usage": f"llama-server -m {q4} --lora {rel}"}]
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    rewrite_manifest(bundle)
    return bundle, q4, rel


def test_eval_with_recovery_runs_the_quant_with_its_adapter(sshd, device_bundle, tmp_path, tiny_model_dir,
                                                            llama_tools):
    """`edgetune eval --recovery`: the runner on the device gets the quant the adapter was trained for and the
    adapter, llama-server applies it, and the report files the run as <QUANT>+recovery with llama-server's own
    per-item speeds (llama-bench has no --lora, so it says so instead of timing the bare quant)."""
    from edgetune.report.device import _build_of

    bundle, q4, rel = _recovery_bundle(device_bundle, tmp_path, tiny_model_dir, llama_tools)
    suite = write_suite(tmp_path / "suite.jsonl", 2, max_tokens=3)
    run = asyncio.run(run_eval(bundle, sshd.device(), suite, out_dir=tmp_path / "out", timeout_s=120, threads=1,
                               recovery=True))
    assert run.status == "ran" and run.items == 2
    summary = json.loads(run.summary_path.read_text())
    job = summary["job"]
    assert job["model"].endswith(f"/{q4}") and job["lora"].endswith(f"/{rel}")
    argv = summary["server_argv"]
    assert argv[argv.index("--lora") + 1].endswith(rel) and argv[argv.index("-m") + 1].endswith(q4)
    assert run.bench["skipped"].startswith("llama-bench cannot apply a LoRA adapter")
    assert _build_of(job) == "Q4_0+recovery"
    assert all(json.loads(line)["gen_tokens_per_s"] > 0 for line in run.results_path.read_text().splitlines())
    # the same suite without the adapter is another job (its id hashes the adapter too)
    plain = asyncio.run(run_eval(bundle, sshd.device(), suite, out_dir=tmp_path / "out", timeout_s=120, threads=1,
                                 model=q4))
    assert plain.job_id != run.job_id and "lora" not in json.loads(plain.summary_path.read_text())["job"]


def test_recovery_without_an_adapter_is_refused_before_connecting(device_bundle, tmp_path):
    from edgetune.device import parse_device

    from tests.device.conftest import free_port

    nowhere = parse_device(f"nobody@127.0.0.1:{free_port()}", connect_timeout_s=3)  # never contacted
    suite = write_suite(tmp_path / "suite.jsonl", 1)
    with pytest.raises(ConfigError, match="carries no recovery adapter") as err:
        asyncio.run(run_eval(device_bundle, nowhere, suite, out_dir=tmp_path, timeout_s=60, recovery=True))
    assert err.value.hint == "build with export.recovery: <QUANT> (one of export.quants)"
    with pytest.raises(ConfigError, match="--lora and --recovery both name an adapter"):
        asyncio.run(run_eval(device_bundle, nowhere, suite, out_dir=tmp_path, timeout_s=60, recovery=True,
                             lora="adapters/x.gguf"))
    with pytest.raises(ConfigError, match="has no file adapters/x.gguf"):
        asyncio.run(run_eval(device_bundle, nowhere, suite, out_dir=tmp_path, timeout_s=60, lora="adapters/x.gguf"))
