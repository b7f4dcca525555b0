"""Winning back what quantization costs, in `edgetune build` (issue 20), on the tiny Llama and the colour task:
`export.quants: [..., auto:Q4_0-size]` writes a searched per-tensor mix beside the plain quants, and
`export.recovery: Q4_0` trains a recovery LoRA shipped beside the Q4_0 file. Every part real: llama-quantize
with --tensor-type, llama.cpp loading the mix and applying the adapter, the report's rows and verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetune.bundle import verify_bundle
from edgetune.config import BuildConfig, ExportConfig
from edgetune.constants import AutoQuant, Quant
from edgetune.errors import ConfigError, ExportError
from edgetune.home import edgetune_home
from edgetune.pipeline import build
from tests.test_pipeline import BUILDS, config

AUTO = "auto:Q4_0-size"
QUANTS = [Quant.Q8_0, Quant.Q4_0, AUTO]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir, colour_jsonl):
    cfg = config(tiny_model_dir, colour_jsonl, tmp_path_factory.mktemp("quant-recovery") / "out")
    # the x86-64 host as the target: its bundle needs no cross-built runtime (the rpi5 bundle is test_pipeline's)
    cfg = cfg.with_overrides({"target": "x86_64-host", "export.quants": QUANTS, "export.recovery": "Q4_0",
                              "export.recovery_steps": 20})
    return cfg, build(cfg, edgetune_home())


def test_auto_quant_parses_and_needs_its_budget_listed():
    q = ExportConfig(quants=["Q4_0", AUTO]).quants
    assert q == [Quant.Q4_0, AUTO] and isinstance(q[1], AutoQuant) and q[1].budget == Quant.Q4_0
    assert ExportConfig(quants=["Q4_0", AUTO]).model_dump(mode="json")["quants"] == ["Q4_0", AUTO]
    with pytest.raises(ValueError, match="needs Q4_0 in export.quants too"):
        ExportConfig(quants=["Q8_0", AUTO])
    for bad in ("auto:Q4_0", "auto:Q9_9-size", "auto:F16-size", "Q4_0-size"):
        with pytest.raises(ValueError, match="auto:<QUANT>-size|budget must be a quantized type"):
            ExportConfig(quants=["Q4_0", bad])


def test_recovery_of_a_quant_not_built_fails_before_any_work(tmp_path, tiny_model_dir, colour_jsonl):
    out = tmp_path / "out"
    cfg = config(tiny_model_dir, colour_jsonl, out).with_overrides({"export.recovery": "Q5_0"})
    with pytest.raises(ConfigError, match="export.recovery is Q5_0, which is not among the quants built"):
        build(cfg, edgetune_home())
    assert not out.exists()


def test_a_speed_floor_no_mix_can_meet_fails_before_training(tmp_path, tiny_model_dir, colour_jsonl):
    """export.min_tok_s far above what the board's bandwidth allows any mix: the build stops after the cheap
    data and base stages, naming the speed cap and how to relax it."""
    out = tmp_path / "out"
    cfg = config(tiny_model_dir, colour_jsonl, out).with_overrides(
        {"target": "x86_64-host", "export.quants": QUANTS, "export.min_tok_s": 1e9})
    with pytest.raises(ExportError, match=r"^no mix fits the speed cap of 0\.0 MB \(predicted generation of at least "
                                          r"1e\+09 tok/s on x86_64-host .*\): the smallest is at least") as err:
        build(cfg, edgetune_home())
    assert err.value.hint == "lower export.min_tok_s (now 1e+09)"
    assert not (out / "store" / "train").exists()
    with pytest.raises(ValueError, match="greater than 0"):
        ExportConfig(min_tok_s=0)


def test_the_searched_mix_is_written_beside_the_plain_quants_within_its_budget(built):
    from gguf import GGUFReader

    from edgetune.export.mix import tensor_groups

    _, result = built
    mix, q4 = result.stages[f"gguf-{AUTO}"], result.stages["gguf-Q4_0"]
    assert "gguf-Q8_0" in result.stages and mix.metrics["quant"] == AUTO
    search = json.loads(mix.file("search").read_text())
    size = mix.file("gguf").stat().st_size
    assert size == search["size_bytes"] == mix.metrics["size_bytes"] <= q4.metrics["size_bytes"]
    # the budget: Q4_0's file bound it; the host's RAM cap was there too, far above
    assert search["binding"] == "size" and search["caps"]["size"]["bytes"] == q4.metrics["size_bytes"]
    assert search["caps"]["ram"]["bytes"] > 100 * size and "speed" not in search["caps"]
    # every group has the searched type in the file llama-quantize wrote (its own mixture rules never apply)
    groups = tensor_groups(result.stages["gguf-F16"].file("gguf"), bands=3)
    assert sorted({i for g in groups for i in g.layers}) == [0, 1]  # every layer is searched
    assert set(search["types"]) == {g.name for g in groups}
    got = {t.name: t.tensor_type.name for t in GGUFReader(mix.file("gguf")).tensors}
    for g in groups:
        names = ["token_embd.weight"] if g.kind == "token_embd" else [f"blk.{i}.{g.kind}.weight" for i in g.layers]
        assert {got[n] for n in names} == {search["types"][g.name]}, g.name
    # the sensitivities were measured: one per group at Q4_0, and the embedding at Q5_0 too
    assert len(search["increase"]) == len(groups) + 1
    # `edgetune plan --run` plans the plain files only (the mix has Q4_0's file type: it would be a second Q4_0 row)
    from edgetune.planner import make_plan
    from edgetune.targets import get_target

    rows = [r.quant for r in make_plan(get_target("x86_64-host"), run_dir=result.run_dir).rows if r.source == "file"]
    assert sorted(rows) == ["F16", "Q4_0", "Q8_0"]


def test_the_report_compares_mix_and_recovery_with_the_plain_quants_on_the_same_items(built):
    from edgetune.report.html import to_html

    _, result = built
    report = json.loads(result.report_json.read_text())
    rows = {r["name"]: r for r in report["builds"]}
    assert [r["name"] for r in report["builds"]] == [*BUILDS, AUTO, "Q4_0+recovery"]
    for name in (AUTO, "Q4_0+recovery", "Q4_0"):
        row = rows[name]
        assert row["n"] == rows["gpu"]["n"] == 10 and row["vs_gpu"]["n"] == 10, name
        assert row["fidelity"]["kld_mean"] >= 0 and "passed" in row["fidelity"]["gate"], name
    recovery = result.stages["recovery-Q4_0"]
    assert rows["Q4_0+recovery"]["size_bytes"] == rows["Q4_0"]["size_bytes"] + recovery.metrics["size_bytes"]
    assert recovery.metrics["last_kld"] < recovery.metrics["first_kld"]  # the distillation learned something
    assert f"| {AUTO} |" in result.report_md.read_text()
    # the mix is planned on its own file, and its row says which cap bound the search (its budget's file size)
    mix_plan = rows[AUTO]["plan"]
    assert mix_plan["budget"] == "size" and mix_plan["status"] == "fits" and mix_plan["predicted_gen_tps"] > 0
    assert mix_plan["need_bytes"] < rows["Q4_0"]["plan"]["need_bytes"] + 1
    assert "budget" not in rows["Q4_0"]["plan"]  # a plain quant's row is as it was
    assert f"{AUTO}'s search was bound by its size cap." in result.report_md.read_text()
    assert 'alt="accuracy and KLD vs file size"' in to_html(report)


def test_the_bundle_ships_the_mix_and_the_recovery_adapter_and_llama_cpp_runs_them(built):
    from edgetune.runtimes import LlamaCppRuntime
    from tests.helpers import SMOLLM2_PROMPT_IDS, generated_tokens

    _, result = built
    manifest = verify_bundle(result.bundle_dir)
    files = {m["quant"]: result.bundle_dir / m["file"] for m in manifest["models"]}
    assert list(files) == ["Q8_0", "Q4_0", AUTO]
    # named by llama.cpp's convention like the plain quants (which upper-cases the type), with no colon
    assert files[AUTO].name.lower().endswith("-auto-q4_0-size.gguf") and ":" not in files[AUTO].name
    assert generated_tokens(files[AUTO]) > 0
    [rec] = manifest["recovery_adapters"]
    assert result.bundle_dir / rec["applies_to"] == files["Q4_0"]
    assert rec["usage"] == f"llama-server -m {rec['applies_to']} --lora {rec['file']}"
    adapter = result.bundle_dir / rec["file"]
    # `edgetune eval --recovery` runs exactly these two files; the report files that run as Q4_0+recovery
    from edgetune.report.device import _build_of

    assert _build_of({"model": str(files["Q4_0"]), "lora": str(adapter)}) == "Q4_0+recovery"
    ids = list(SMOLLM2_PROMPT_IDS)
    with LlamaCppRuntime(files["Q4_0"], n_ctx=256, n_threads=1) as alone:
        plain = alone.logits(ids)
    with LlamaCppRuntime(files["Q4_0"], n_ctx=256, n_threads=1, lora_path=adapter) as recovered:
        with_adapter = recovered.logits(ids)
    assert np.abs(with_adapter - plain).max() > 1e-4  # llama.cpp applied the adapter


def test_a_rebuild_without_the_extras_reuses_the_plain_builds(built, tmp_path):
    import shutil

    cfg, _ = built
    out = Path(shutil.copytree(cfg.out_dir, tmp_path / "out"))
    again = build(BuildConfig.model_validate({**cfg.model_dump(), "out_dir": out,
                                              "export": {**cfg.export.model_dump(), "quants": ["Q8_0", "Q4_0"],
                                                         "recovery": None}}), edgetune_home())
    assert again.ran == ["bundle"]
    assert [r["name"] for r in again.report["builds"]] == BUILDS
