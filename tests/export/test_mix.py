"""Per-tensor precision search (export/mix.py) and the recovery adapter (export/recovery.py), with llama.cpp's own
llama-quantize and runtime on the tiny Llama."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from edgetune.errors import ExportError
from edgetune.export.mix import (
    BITS_PER_WEIGHT,
    UNIT_BYTES,
    Mix,
    Sensitivity,
    TensorGroup,
    choose_mix,
    quantize_mix,
    tensor_groups,
)


def _groups(sizes: list[int]) -> list[TensorGroup]:
    return [TensorGroup(f"g{i}", "attn_v", (i,), n) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("seed", range(5))
def test_knapsack_finds_the_best_mix_a_brute_force_finds(seed):
    rng = random.Random(seed)
    groups = _groups([rng.randrange(200_000, 3_000_000) for _ in range(4)])
    sens = Sensitivity("Q8_0", 0.01)
    for g in groups:
        q5 = rng.uniform(0, 0.05)
        sens.increase[(g.name, "Q5_0")] = q5
        sens.increase[(g.name, "Q4_0")] = q5 + rng.uniform(0, 0.1)
    lo = sum(g.size_bytes("Q4_0") for g in groups)
    hi = sum(g.size_bytes("Q8_0") for g in groups)
    budget = lo + rng.uniform(0.2, 0.8) * (hi - lo)
    mix = choose_mix(groups, sens, budget, base="Q4_0")
    assert mix.predicted_size_bytes <= budget

    def loss(types):
        return sum(0.0 if t == "Q8_0" else sens.increase[(g.name, t)] for g, t in zip(groups, types, strict=True))

    # brute force over every assignment that fits (with the knapsack's rounding of each group's size to units)
    fits = [ts for ts in itertools.product(("Q4_0", "Q5_0", "Q8_0"), repeat=len(groups))
            if sum(-(-int(g.size_bytes(t)) // UNIT_BYTES) for g, t in zip(groups, ts, strict=True)) * UNIT_BYTES <= budget]
    best = min(fits, key=loss)
    assert loss([mix.types[g.name] for g in groups]) == pytest.approx(loss(best))
    assert mix.predicted_kld_increase == pytest.approx(loss(best))


def test_knapsack_spends_a_budget_on_the_most_sensitive_group():
    groups = _groups([1_000_000, 1_000_000])
    sens = Sensitivity("Q8_0", 0.0, {("g0", "Q4_0"): 0.001, ("g1", "Q4_0"): 0.1})
    budget = groups[0].size_bytes("Q4_0") + groups[1].size_bytes("Q8_0") + UNIT_BYTES * 2
    mix = choose_mix(groups, sens, budget, base="Q4_0")
    assert mix.types == {"g0": "Q4_0", "g1": "Q8_0"}


def test_a_budget_below_the_smallest_mix_is_refused():
    groups = _groups([1_000_000])
    sens = Sensitivity("Q8_0", 0.0, {("g0", "Q4_0"): 0.1})
    with pytest.raises(ExportError, match="no mix fits .* raise the size budget|no mix fits"):
        choose_mix(groups, sens, groups[0].size_bytes("Q4_0") / 2, base="Q4_0")


def test_quantize_mix_gives_each_group_its_type(tmp_path, tiny_gguf, llama_tools):
    from gguf import GGUFReader

    groups = tensor_groups(tiny_gguf, bands=2)
    assert [g.name for g in groups[:3]] == ["token_embd", "attn_q@0-0", "attn_k@0-0"]
    assert len(groups) == 1 + 7 * 2
    types = {g.name: "Q4_0" for g in groups}
    types.update({"token_embd": "Q5_0", "attn_v@0-0": "Q8_0", "ffn_down@1-1": "Q5_0"})
    out = quantize_mix(tiny_gguf, tmp_path / "mix.gguf", groups, Mix("Q4_0", types), llama_tools)
    got = {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}
    assert got["token_embd.weight"] == "Q5_0"
    assert got["blk.0.attn_v.weight"] == "Q8_0" and got["blk.1.attn_v.weight"] == "Q4_0"
    assert got["blk.1.ffn_down.weight"] == "Q5_0" and got["blk.0.ffn_down.weight"] == "Q4_0"
    assert got["blk.0.attn_norm.weight"] == "F32"
    assert [p.name for p in tmp_path.iterdir()] == ["mix.gguf"]  # no temp file left
    # the predicted size (bits per weight) is what llama.cpp writes, give or take the norms and metadata
    predicted = sum(g.size_bytes(types[g.name]) for g in groups)
    assert 0 < out.stat().st_size - predicted < 0.1 * out.stat().st_size + 2e6


def test_more_bands_than_layers_still_group_every_layer(tiny_gguf):
    """3 bands over the tiny Llama's 2 layers: one band per layer, none empty (an empty band once left layer 1
    out of every group, so llama-quantize gave it the file's base type unsearched)."""
    groups = tensor_groups(tiny_gguf, bands=3)
    assert sorted({i for g in groups for i in g.layers}) == [0, 1]
    assert len(groups) == 1 + 7 * 2


def test_quantize_mix_needs_every_group_and_known_types(tmp_path, tiny_gguf, llama_tools):
    groups = tensor_groups(tiny_gguf, bands=1)
    with pytest.raises(ExportError, match="names no type for"):
        quantize_mix(tiny_gguf, tmp_path / "x.gguf", groups, Mix("Q4_0", {}), llama_tools)
    with pytest.raises(ExportError, match="not one the search uses"):
        quantize_mix(tiny_gguf, tmp_path / "x.gguf", groups, Mix("Q4_0", {g.name: "Q3_K" for g in groups}),
                     llama_tools)
    assert not (tmp_path / "x.gguf").exists()
    assert set(BITS_PER_WEIGHT) >= {"Q4_0", "Q5_0", "Q8_0"}


def test_dequantized_student_holds_the_gguf_weights(tmp_path, tiny_model_dir, tiny_gguf, llama_tools):
    """Q8_0 round trip: every weight (q/k un-permuted) within Q8_0's rounding of the original; a wrong
    permutation or name would be off by the weights' own size."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgetune.constants import Quant
    from edgetune.export.quantize import quantize_gguf
    from edgetune.export.recovery import load_dequantized

    q8 = quantize_gguf(tiny_gguf, tmp_path / "q8.gguf", Quant.Q8_0, llama_tools)
    student = dict(load_dequantized(tiny_model_dir, q8).named_parameters())
    ref = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).named_parameters())
    for name, w in ref.items():
        err = float(((student[name] - w).norm() / w.norm()).detach())
        assert err < 0.02, name


def test_recovery_adapter_lowers_the_quantized_kld_in_llama_cpp(tmp_path, tiny_model_dir, tiny_gguf, llama_tools,
                                                                tokenizer):
    """Trained against the Q4_0 file's own weights, converted to a LoRA GGUF, applied by llama.cpp at run time:
    the KL to the full-precision model on the training text falls."""
    from edgetune.constants import Quant
    from edgetune.evals.fidelity import kld_and_top1
    from edgetune.export.lora import convert_lora
    from edgetune.export.quantize import quantize_gguf
    from edgetune.export.recovery import RecoveryConfig, train_recovery
    from edgetune.runtimes import HFRuntime, LlamaCppRuntime

    q4 = quantize_gguf(tiny_gguf, tmp_path / "q4.gguf", Quant.Q4_0, llama_tools)
    texts = ["the cat sat on the mat", "a movie review: positive", "one two three four five six",
             "hello world, how are you", "Is the sentiment negative?", "edge boards run small models"]
    seqs = [tokenizer(t)["input_ids"] for t in texts]
    res = train_recovery(tiny_model_dir, q4, seqs, tmp_path / "adapter",
                         RecoveryConfig(rank=4, alpha=8, steps=40, batch_size=3, learning_rate=5e-3))
    assert res.last_kld < res.first_kld
    lora = convert_lora(res.adapter_dir, tiny_model_dir, tmp_path / "recovery.gguf", llama_tools)

    def mean_kld(ref, lora_path=None):
        with LlamaCppRuntime(q4, n_ctx=256, n_threads=1, lora_path=lora_path) as edge:
            return float(np.mean([kld_and_top1(ref.logits(s), edge.logits(s))[0][1:].mean() for s in seqs]))

    with HFRuntime(tiny_model_dir) as ref:
        alone, recovered = mean_kld(ref), mean_kld(ref, lora)
    assert recovered < 0.8 * alone, (alone, recovered)


# --- the budget: the plain file's size, the target's usable RAM, a speed floor (export/budget.py) -------------

def _sens(groups):
    """Every group loses something at Q4_0, the later ones more: the knapsack keeps what it can at Q8_0."""
    return Sensitivity("Q8_0", 0.0, {(g.name, "Q4_0"): 0.01 * (i + 1) for i, g in enumerate(groups)})


def _board(**update):
    from edgetune.targets import get_target

    return get_target("rpi5-8gb").model_copy(update=update)


def test_the_ram_cap_is_the_largest_file_the_planner_says_fits(tmp_path, tiny_gguf, llama_tools):
    """A board whose usable RAM is exactly the Q8_0 file + KV cache + runtime: the ram cap is that file's size,
    and the planner's own row says it fits; one byte less RAM and the planner says it does not."""
    from edgetune.constants import Quant
    from edgetune.export.budget import target_caps
    from edgetune.export.quantize import quantize_gguf
    from edgetune.modelshape import read_model_file
    from edgetune.planner import make_plan, runtime_bytes

    q8 = quantize_gguf(tiny_gguf, tmp_path / "q8.gguf", Quant.Q8_0, llama_tools)
    shape, size = read_model_file(q8).shape, q8.stat().st_size
    board = _board(usable_ram_share=1.0)
    kv, overhead = runtime_bytes(board, shape)
    exact = board.model_copy(update={"ram_gb": (size + kv + overhead) / 1e9})
    (ram,) = target_caps(exact, shape, "Q8_0")
    assert ram.name == "ram" and abs(ram.bytes - size) <= 1  # ram_gb * 1e9 rounds to a byte
    assert make_plan(exact, ggufs=[q8]).rows[0].fits == (ram.bytes >= size)
    short = exact.model_copy(update={"ram_gb": (size + kv + overhead - 2) / 1e9})
    assert not make_plan(short, ggufs=[q8]).rows[0].fits and target_caps(short, shape, "Q8_0")[0].bytes < size


def test_a_tight_ram_target_binds_the_search_and_changes_the_mix(tiny_gguf):
    from edgetune.export.budget import Budget, Cap, target_caps
    from edgetune.modelshape import read_model_file
    from edgetune.planner import runtime_bytes

    groups, shape = tensor_groups(tiny_gguf, bands=2), read_model_file(tiny_gguf).shape
    sens = _sens(groups)
    high, low = (sum(g.size_bytes(t) for g in groups) for t in ("Q8_0", "Q4_0"))
    size = Cap("size", high + 1e6, "a loose size", "raise it")  # alone it keeps every group at Q8_0
    board = _board()
    roomy = choose_mix(groups, sens, Budget((size, *target_caps(board, shape, "Q4_0"))), base="Q4_0")
    assert set(roomy.types.values()) == {"Q8_0"}
    kv, overhead = runtime_bytes(board, shape)
    midway = (high + low) / 2
    tight = board.model_copy(update={"ram_gb": (midway + kv + overhead) / board.usable_ram_share / 1e9})
    budget = Budget((size, *target_caps(tight, shape, "Q4_0")))
    assert budget.binding.name == "ram" and budget.bytes == pytest.approx(midway, abs=2)
    assert budget.to_dict()["binding"] == "ram" and set(budget.to_dict()["caps"]) == {"size", "ram"}
    mix = choose_mix(groups, sens, budget, base="Q4_0")
    assert mix.predicted_size_bytes <= budget.bytes < roomy.predicted_size_bytes
    assert {"Q4_0", "Q8_0"} <= set(mix.types.values())
    # the most sensitive groups (the later ones) keep Q8_0
    assert mix.types[groups[-1].name] == "Q8_0" and mix.types[groups[0].name] == "Q4_0"


def test_a_speed_floor_is_the_planners_bandwidth_roofline_solved_for_bytes(tmp_path, tiny_gguf, llama_tools):
    """The floor at the planner's predicted decode speed of the real Q8_0 file caps the file at that file's
    size; a floor 1.5x higher binds the search below it; one above the prompt roofline admits nothing."""
    from edgetune.constants import Quant
    from edgetune.export.budget import Budget, Cap, target_caps
    from edgetune.export.quantize import quantize_gguf
    from edgetune.modelshape import read_model_file
    from edgetune.planner import predict_speeds

    q8 = read_model_file(quantize_gguf(tiny_gguf, tmp_path / "q8.gguf", Quant.Q8_0, llama_tools))
    board = _board()
    speeds = predict_speeds(board, q8.shape, "Q8_0", q8.read_bytes)
    assert speeds.prompt > speeds.gen_roofline  # decode is bandwidth-bound here, so bytes decide it
    _, speed = target_caps(board, q8.shape, "Q8_0", min_tok_s=speeds.gen_roofline)
    assert speed.name == "speed" and speed.bytes == pytest.approx(q8.size_bytes, abs=2)

    groups = tensor_groups(tiny_gguf, bands=2)
    size = Cap("size", 1e12, "no size limit", "raise it")
    budget = Budget((size, *target_caps(board, q8.shape, "Q4_0", min_tok_s=1.5 * speeds.gen_roofline)))
    assert budget.binding.name == "speed" and budget.bytes < q8.size_bytes
    mix = choose_mix(groups, _sens(groups), budget, base="Q4_0", other_bytes=q8.shape.metadata_bytes)
    assert mix.predicted_size_bytes <= budget.bytes and "Q4_0" in mix.types.values()
    # the planner predicts the chosen mix's bytes at or above the floor
    read = mix.predicted_size_bytes - q8.shape.metadata_bytes
    assert predict_speeds(board, q8.shape, "Q4_0", int(read)).gen >= 1.5 * speeds.gen_roofline

    # Q4_0's prompt roofline (repacked on the A76: twice Q8_0's) caps decode too
    prompt_q4 = predict_speeds(board, q8.shape, "Q4_0", q8.read_bytes).prompt
    beyond = Budget((size, *target_caps(board, q8.shape, "Q4_0", min_tok_s=1.01 * prompt_q4)))
    with pytest.raises(ExportError, match=r"^no mix fits the speed cap of 0\.0 MB \(predicted generation of at "
                                          r"least .* tok/s on rpi5-8gb") as err:
        choose_mix(groups, _sens(groups), beyond, base="Q4_0")
    assert err.value.hint.startswith("lower export.min_tok_s")


def test_a_budget_nothing_fits_is_refused_before_any_probe(tmp_path, tiny_gguf, llama_tools):
    """A board too small for even the all-Q4_0 mix: search_mix names the ram cap and how to relax it, without
    quantizing or scoring a single probe."""
    from edgetune.export.budget import Budget, Cap, target_caps
    from edgetune.export.mix import search_mix
    from edgetune.modelshape import read_model_file
    from edgetune.planner import runtime_bytes

    shape = read_model_file(tiny_gguf).shape
    board = _board(usable_ram_share=1.0)
    kv, overhead = runtime_bytes(board, shape)
    tiny_board = board.model_copy(update={"ram_gb": (kv + overhead + 1000) / 1e9})
    budget = Budget((Cap("size", 1e12, "no size limit", "raise it"), *target_caps(tiny_board, shape, "Q4_0")))

    def score(_path):
        raise AssertionError("no probe may be scored")

    with pytest.raises(ExportError, match=r"^no mix fits the ram cap of 0\.0 MB \(rpi5-8gb's usable RAM .* less "
                                          r"the KV cache and runtime at .* tokens\): the smallest is") as err:
        search_mix(tiny_gguf, tmp_path, budget, llama_tools, score, base="Q4_0", bands=1)
    assert "more RAM" in err.value.hint and list(tmp_path.iterdir()) == []
