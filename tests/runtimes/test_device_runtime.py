"""DeviceRuntime against a real device: the unprivileged sshd of tests/device/conftest.py serving this machine, a
real bundle (the tiny bundle plus the varied tiny GGUF and the x86 llama-server built from the same llama.cpp as
the bundles' aarch64 one), and the real runner in serve mode. Compared with LlamaCppRuntime on the same GGUF and
the same token ids: greedy ids equal, log-likelihoods within float32 rounding, the forgetting scorer's choices
equal."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from edgetune.errors import ConfigError, DeviceError, EvalError
from edgetune.evals.forgetting import mmlu_items, run_multiple_choice

from tests.device.conftest import make_device_bundle, rewrite_manifest, running_sshd, ssh_keys
from tests.helpers import chat_suite_rows

__all__ = ["ssh_keys"]  # a fixture, imported so that pytest finds it here

MODEL = "models/varied-f16.gguf"
QUESTIONS = ["What colour is grass?", "Name a prime number.", "Say hello.", "Count to three."]
N_NEW = 8
# llama-server reports float32 probabilities and is a separate build that computes one output row where eval()
# with logits_all computes every row, so its kernels may round differently. On the varied model (logits up to ~18, log-probs down to ~-20)
# the measured differences reach 1.1e-3 on a -16.56 log-prob (6.6e-5 relative) and 1.1e-4 per token on the chat
# prompts; the tolerance is 1e-3 per token, or 2e-4 relative for the very unlikely tokens.
LOGPROB_TOL, LOGPROB_REL_TOL = 1e-3, 2e-4


def close_enough(got: float, want: float, n_tokens: int) -> bool:
    return math.isclose(got, want, abs_tol=LOGPROB_TOL * n_tokens, rel_tol=LOGPROB_REL_TOL)


def run_serve(model: Path, llama_tools, stdin: str) -> subprocess.CompletedProcess:
    """The runner's `serve` mode run directly (no SSH), isolated from site-packages as on a device."""
    from edgetune.runtime_build import runner_source

    argv = [sys.executable, "-I", "-S", str(runner_source()), "serve", "--model", str(model),
            "--server", str(llama_tools.tool("llama-server")), "--threads", "1", "--ctx-size", "256"]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)


@pytest.fixture(scope="module")
def device_sshd(tmp_path_factory, ssh_keys):
    with running_sshd(tmp_path_factory.mktemp("device-runtime-sshd"), ssh_keys) as server:
        yield server


@pytest.fixture(scope="module")
def host_bundle(tiny_bundle, varied_gguf, llama_tools, tmp_path_factory) -> Path:
    """The tiny bundle with the runner, an x86 llama-server and the varied GGUF (decisive greedy argmaxes)."""
    root = make_device_bundle(tiny_bundle.file("bundle"), tmp_path_factory.mktemp("host-bundle") / "bundle",
                              server=llama_tools.tool("llama-server"))
    shutil.copyfile(varied_gguf, root / MODEL)
    rewrite_manifest(root)
    return root


@pytest.fixture(scope="module")
def device_runtime(device_sshd, host_bundle):
    from edgetune.runtimes import DeviceRuntime

    with DeviceRuntime(device_sshd.device(), MODEL, bundle_dir=host_bundle, n_ctx=512, threads=1) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def local_runtime(varied_gguf):
    from edgetune.runtimes import LlamaCppRuntime

    with LlamaCppRuntime(varied_gguf, n_ctx=512, n_threads=1) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def prompts(tokenizer_dir) -> list[list[int]]:
    return [row["prompt_ids"] for row in chat_suite_rows(tokenizer_dir, QUESTIONS, N_NEW)]


def test_greedy_generate_equals_local(device_runtime, local_runtime, prompts):
    for ids in prompts:
        want = local_runtime.generate(ids, N_NEW, stop_ids=[])
        assert len(set(want)) > 2  # varied text: agreement is not a repeated token's accident
        assert device_runtime.generate(ids, N_NEW, stop_ids=[]) == want
        stop = want[3]  # a stop id met mid-way: both stop before its first occurrence
        cut = local_runtime.generate(ids, N_NEW, stop_ids=[stop])
        assert cut == want[: want.index(stop)]
        assert device_runtime.generate(ids, N_NEW, stop_ids=[stop]) == cut
    assert device_runtime.generate(prompts[0], 0, stop_ids=[]) == []


def test_loglikelihood_agrees_with_local(device_runtime, local_runtime, prompts):
    requests = []
    for ids in prompts:
        greedy = local_runtime.generate(ids, 4, stop_ids=[])
        requests += [(ids, greedy), (ids, greedy[:1]), (ids, [greedy[0] + 1, 42])]  # greedy and not
    requests.append((prompts[0][:1], prompts[0][1:6]))  # a one-token context
    want = local_runtime.loglikelihood(requests)
    got = device_runtime.loglikelihood(requests)
    assert len(got) == len(requests)
    worst = 0.0
    for (lp_want, greedy_want), (lp_got, greedy_got), (_, cont) in zip(want, got, requests, strict=True):
        assert close_enough(lp_got, lp_want, len(cont)), (lp_got, lp_want)
        assert greedy_got == greedy_want
        worst = max(worst, abs(lp_got - lp_want) / len(cont))
    assert {g for _, g in got} == {True, False}
    print(f"max |device - local| log-prob per token: {worst:.2e}")


def test_forgetting_scorer_gives_the_same_choices(device_runtime, local_runtime, tokenizer):
    items = mmlu_items(tokenizer, n_items=6, seed=0)
    local = run_multiple_choice(local_runtime, items)
    on_device = run_multiple_choice(device_runtime, items)
    assert [r.pred for r in on_device.items] == [r.pred for r in local.items]
    assert [r.pred_norm for r in on_device.items] == [r.pred_norm for r in local.items]
    worst = 0.0
    for a, b, item in zip(on_device.items, local.items, items, strict=True):
        for lp_a, lp_b, ids in zip(a.logprobs, b.logprobs, item.choice_ids, strict=True):
            assert close_enough(lp_a, lp_b, len(ids)), (lp_a, lp_b)
            worst = max(worst, abs(lp_a - lp_b) / abs(lp_b))
    print(f"max relative |device - local| choice log-prob: {worst:.2e}")
    assert on_device.acc == local.acc


def test_refusals_are_one_line_eval_errors(device_runtime, prompts):
    with pytest.raises(EvalError, match="cannot return full-vocabulary logits"):
        device_runtime.logits(prompts[0])
    with pytest.raises(EvalError, match=f"token id {device_runtime.n_vocab} is outside"):
        device_runtime.generate([1, device_runtime.n_vocab], 2, stop_ids=[])
    with pytest.raises(EvalError, match="needs 513 positions"):
        device_runtime.loglikelihood([([1] * 500, [2] * 13)])
    with pytest.raises(EvalError, match="empty continuation"):
        device_runtime.loglikelihood([([1], [])])
    assert device_runtime.generate(prompts[1], 2, stop_ids=[]) != []  # still serving after the refusals


def test_deployed_bundle_path_and_close_stops_the_server(device_sshd, host_bundle, device_runtime, prompts):
    from edgetune.runtimes import DeviceRuntime

    where = remote_bundle(device_sshd, host_bundle)  # deployed by the device_runtime fixture
    runtime = DeviceRuntime(device_sshd.device(), MODEL, remote_bundle=where, n_ctx=256, threads=1)
    port = int(runtime.server_argv[runtime.server_argv.index("--port") + 1])
    assert runtime.n_ctx == 256 and runtime.device_facts["cpu_count"] >= 1
    assert runtime.generate(prompts[2], 3, stop_ids=[]) == device_runtime.generate(prompts[2], 3, stop_ids=[])
    runtime.close()
    runtime.close()  # idempotent
    with pytest.raises(OSError):  # the channel's end stopped the runner, and the runner its llama-server
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(EvalError, match="closed"):
        runtime.generate(prompts[2], 3, stop_ids=[])


def test_bad_arguments_are_config_errors(device_sshd, host_bundle):
    from edgetune.runtimes import DeviceRuntime

    with pytest.raises(ConfigError, match="has no file models/nope.gguf"):
        DeviceRuntime(device_sshd.device(), "models/nope.gguf", bundle_dir=host_bundle)
    with pytest.raises(ConfigError, match="exactly one of bundle_dir and remote_bundle"):
        DeviceRuntime(device_sshd.device(), MODEL)


def remote_bundle(sshd, host_bundle: Path) -> str:
    from edgetune.device.transfer import remote_bundle_dir

    return remote_bundle_dir(sshd.device(), json.loads((host_bundle / "manifest.json").read_text()))


def test_a_model_llama_server_refuses_is_a_device_error(device_sshd, host_bundle, device_runtime):
    from edgetune.runtimes import DeviceRuntime

    where = remote_bundle(device_sshd, host_bundle)  # deployed by the device_runtime fixture
    (Path(where) / "models" / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(DeviceError, match="did not start serving models/broken.gguf: llama-server exited"):
        DeviceRuntime(device_sshd.device(), "models/broken.gguf", remote_bundle=where, n_ctx=256, threads=1)


def test_llama_server_dying_mid_session_is_a_device_error(device_sshd, host_bundle, device_runtime, prompts):
    from edgetune.runtimes import DeviceRuntime

    runtime = DeviceRuntime(
        device_sshd.device(),
        MODEL,
        remote_bundle=remote_bundle(device_sshd, host_bundle),
        n_ctx=256,
        threads=1,
    )
    port = runtime.server_argv[runtime.server_argv.index("--port") + 1]
    pids = [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit()
        and f"--port\0{port}\0".encode() in _cmdline(pid)
        and b"llama-server" in _cmdline(pid)
    ]
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(DeviceError, match="the runner stopped: llama-server died"):
        runtime.generate(prompts[0], 2, stop_ids=[])
    with pytest.raises(EvalError, match="closed"):  # closed after the failure: no stale answer can be misread
        runtime.generate(prompts[0], 2, stop_ids=[])


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_runner_serve_protocol_without_ssh(varied_gguf, llama_tools, prompts, local_runtime):
    """The runner alone under `python -I -S` (stdlib only): refusals answer ok=false and serving goes on;
    closing stdin stops it (exit 0)."""
    lines = [
        {"op": "generate", "requests": [{"prompt_ids": prompts[0], "max_new_tokens": 3, "stop_ids": []}]},
        {"op": "nope"},
        {"op": "loglikelihood", "requests": [[[], [1]]]},
        {"op": "loglikelihood", "requests": [[prompts[0], [3, 4]]]},
    ]
    proc = run_serve(varied_gguf, llama_tools, "".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    assert proc.returncode == 0, proc.stderr
    ready, gen, bad_op, bad_ids, scored, bad_json = (json.loads(x) for x in proc.stdout.splitlines())
    assert ready["status"] == "ready" and ready["n_vocab"] == local_runtime.n_vocab and ready["n_ctx"] == 256
    assert gen == {
        "ok": True,
        "result": [local_runtime.generate(prompts[0], 3, [])],
        "peak_rss_mb": gen["peak_rss_mb"],
    }
    assert bad_op["ok"] is False and "unknown op 'nope'" in bad_op["error"]
    assert bad_ids["ok"] is False and "context_ids must be a non-empty list" in bad_ids["error"]
    assert scored["ok"] is True and close_enough(
        scored["result"][0][0], local_runtime.loglikelihood([(prompts[0], [3, 4])])[0][0], 2
    )
    assert bad_json["ok"] is False and bad_json["error"].startswith("bad request:")


def test_runner_serve_keeps_decoding_past_an_end_token_that_is_not_a_stop_id(
    smollm2_gguf, tokenizer, llama_tools
):
    """llama-server ends a completion at end-of-generation by itself; the runner must go on as the local runtime
    does when that token is not a stop id (SmolLM2 answers this prompt, then emits <|im_end|> and goes on)."""
    from edgetune.runtimes import LlamaCppRuntime

    text = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nReply with one word: yes or no?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with LlamaCppRuntime(smollm2_gguf, n_ctx=256, n_threads=1) as local:
        want = local.generate(ids, 12, stop_ids=[])
        want_stopped = local.generate(ids, 12, stop_ids=[end])
    assert end in want[:-1] and want_stopped == want[: want.index(end)]
    request = {
        "op": "generate",
        "requests": [{"prompt_ids": ids, "max_new_tokens": 12, "stop_ids": s} for s in ([], [end])],
    }
    proc = run_serve(smollm2_gguf, llama_tools, json.dumps(request) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[1])["result"] == [want, want_stopped]
