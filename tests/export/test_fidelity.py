"""Fidelity (KLD, top-1, greedy and stop agreement) and gates, on the tiny Llama: HF fp32 vs its own GGUFs."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.constants import Quant
from edgetune.evals.fidelity import compare, kld_and_top1, references
from edgetune.export import gates
from edgetune.export.quantize import quantize_gguf
from edgetune.runtimes import HFRuntime, LlamaCppRuntime

PROMPTS = [("a", [1, 504, 3137, 314, 253]), ("b", [1, 2000, 7, 99, 12, 5]), ("c", [1, 42, 43, 44])]


def test_kld_is_zero_for_identical_and_positive_otherwise():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(5, 50)).astype(np.float32)
    kld, top1 = kld_and_top1(p, p)
    assert np.allclose(kld, 0.0, atol=1e-12) and top1.all()
    q = p + rng.normal(scale=0.5, size=p.shape).astype(np.float32)
    kld2, _ = kld_and_top1(p, q)
    assert (kld2 > 0).all()
    # independent check of one row: sum p (log p - log q)
    p64, q64 = p[0].astype(np.float64), q[0].astype(np.float64)
    lp = p64 - np.log(np.exp(p64).sum())
    lq = q64 - np.log(np.exp(q64).sum())
    assert kld2[0] == pytest.approx(float((np.exp(lp) * (lp - lq)).sum()), rel=1e-6)


@pytest.fixture(scope="module")
def q4_gguf(tmp_path_factory, tiny_gguf, llama_tools):
    return quantize_gguf(tiny_gguf, tmp_path_factory.mktemp("fid") / "q4.gguf", Quant.Q4_0, llama_tools)


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    with HFRuntime(tiny_model_dir) as rt:
        yield rt


def test_f16_is_faithful_and_q4_is_measurably_worse(hf, tiny_gguf, q4_gguf):
    refs = references(hf, PROMPTS, n_tokens=8, stop_ids=[2])
    with LlamaCppRuntime(tiny_gguf, n_ctx=256) as f16:
        r16 = compare(hf, f16, refs, stop_ids=[2])
    with LlamaCppRuntime(q4_gguf, n_ctx=256) as q4:
        r4 = compare(hf, q4, refs, stop_ids=[2])
    assert r16.n_prompts == 3 and r16.n_positions == sum(len(p) + len(r.output_ids) - 1 for (_, p), r in zip(PROMPTS, refs))
    assert r16.kld_mean < 1e-4 and r16.top1_agreement == 1.0 and r16.greedy_agreement == 1.0
    assert r4.kld_mean > 10 * max(r16.kld_mean, 1e-7)
    assert 0.0 <= r4.top1_agreement <= 1.0


def test_gate_verdicts_name_each_failed_threshold():
    summary = {"kld_mean": 0.01, "top1_agreement": 0.9, "stop_agreement": 0.5, "greedy_agreement": 0.2}
    v = gates.check(Quant.Q8_0, summary, kld_max=gates.DEFAULT_KLD_MAX, top1_min=gates.DEFAULT_TOP1_MIN,
                    stop_min=0.95, greedy_min=0.5)
    assert not v.passed and len(v.reasons) == 4
    assert "mean KLD 0.0100 > 0.002" in v.reasons[0]
    ok = gates.check(Quant.Q4_K_M, {"kld_mean": 0.03, "top1_agreement": 0.92, "stop_agreement": 1.0,
                                    "greedy_agreement": 1.0}, kld_max=gates.DEFAULT_KLD_MAX,
                     top1_min=gates.DEFAULT_TOP1_MIN, stop_min=0.95, greedy_min=0.0)
    assert ok.passed and ok.reasons == []


def test_default_gates_follow_llama_cpp_published_points_and_order():
    assert gates.DEFAULT_KLD_MAX[Quant.Q8_0] == 0.002 and gates.DEFAULT_TOP1_MIN[Quant.Q8_0] == 0.975
    assert gates.DEFAULT_KLD_MAX[Quant.Q4_K_M] == 0.035 and gates.DEFAULT_TOP1_MIN[Quant.Q4_K_M] == 0.91
    assert set(gates.DEFAULT_KLD_MAX) == set(Quant) == set(gates.DEFAULT_TOP1_MIN)
