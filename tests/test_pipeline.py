"""`edgetune.pipeline.build` end to end on the tiny Llama and the 42-row colour task: every stage for real
(trl, peft, llama.cpp's converter and quantizer, both runtimes), then what a rebuild re-runs after each kind of
change, and a bad config that fails before anything is half-written."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from edgetune.bundle import verify_bundle
from edgetune.config import BuildConfig, DataConfig, EvalConfig, ExportConfig, ModelConfig, TrainConfig
from edgetune.constants import MANIFEST_FILE, Quant
from edgetune.errors import ModelError, NothingToShip
from edgetune.evals.stage import read_results
from edgetune.home import edgetune_home
from edgetune.pipeline import BuildResult, build

QUANTS = [Quant.Q8_0, Quant.Q4_0]
BUILDS = ["base", "gpu", "F16", "Q8_0", "Q4_0"]
MODEL_STAGES = ["data", "base", "train", "merge", "gguf-F16", "imatrix", "gguf-Q8_0", "gguf-Q4_0"]
GATE_STAGES = ["fidelity-ref", "fidelity-F16", "fidelity-Q8_0", "fidelity-Q4_0"]
FORGETTING = {"mmlu": 8, "arc_easy": 4, "winogrande": 4}
# every build: task eval and each forgetting set; every GGUF also a pairwise judge against the GPU build
EVAL_STAGES = [f"{suite}-{b}" for b in BUILDS for suite in ("eval", *FORGETTING, "judge")
               if suite != "judge" or b not in ("base", "gpu")]
ALL_STAGES = MODEL_STAGES + GATE_STAGES + EVAL_STAGES + ["lora-gguf", "bundle"]


def config(model_dir: Path, jsonl: Path, out_dir: Path) -> BuildConfig:
    return BuildConfig(
        target="rpi5", out_dir=out_dir, threads=1,
        model=ModelConfig(source=str(model_dir)),
        data=DataConfig(source=str(jsonl), heldout_size=10, train_size=32),
        train=TrainConfig(method="lora", r=8, alpha=16, max_steps=8, batch_size=8, learning_rate=1e-2,
                          warmup_ratio=0.0),
        export=ExportConfig(quants=QUANTS),
        eval=EvalConfig(forgetting=FORGETTING, max_new_tokens=4),
    )


def changed(cfg: BuildConfig, out_dir: Path, overrides: dict) -> BuildConfig:
    return cfg.with_overrides({"out_dir": out_dir, **overrides})


@pytest.fixture(scope="module")
def first(tmp_path_factory, tiny_model_dir, colour_jsonl) -> tuple[BuildConfig, BuildResult, float]:
    cfg = config(tiny_model_dir, colour_jsonl, tmp_path_factory.mktemp("pipeline") / "out")
    started = time.monotonic()
    result = build(cfg, edgetune_home())
    return cfg, result, time.monotonic() - started


@pytest.fixture
def copied(first, tmp_path) -> tuple[BuildConfig, Path]:
    """A private copy of the first build's output folder, so each rebuild test starts from the same cache."""
    cfg, _, _ = first
    out = Path(shutil.copytree(cfg.out_dir, tmp_path / "out"))
    return cfg, out


def test_first_build_runs_every_stage(first):
    _, result, elapsed_s = first
    print(f"first build: {elapsed_s:.1f} s")  # shown with -s; about 20-30 s on a shared 2-core machine
    assert result.ran == ALL_STAGES
    assert result.reused == []


def test_bundle_folder_and_tarball(first):
    cfg, result, _ = first
    manifest = verify_bundle(result.bundle_dir)  # every listed file re-hashed
    assert [m["quant"] for m in manifest["models"]] == ["Q8_0", "Q4_0"]
    assert manifest["target"]["name"] == "rpi5-8gb"
    assert manifest["provenance"]["base"]["source"] == cfg.model.source
    assert manifest["provenance"]["adapter"]["method"] == "lora"
    assert "compile_layers" not in manifest["provenance"]["train"]  # a speed setting: not in any GGUF key
    assert sorted(p.name for p in (result.bundle_dir / "models").glob("*.gguf")) == \
        sorted(Path(m["file"]).name for m in manifest["models"])
    # an aarch64 board's bundle runs there with the stdlib runner and cross-built llama.cpp
    assert (result.bundle_dir / "runner" / "edgetune_runner.py").is_file()
    assert (result.bundle_dir / "bin" / "llama-server").is_file()
    assert {p.name for p in (result.bundle_dir / "models").glob("*.Modelfile")} == \
        {Path(m["file"]).stem + ".Modelfile" for m in manifest["models"]}
    # llama.cpp's naming convention (BaseName-SizeLabel-FineTune-Type), a TEMPLATE in every Modelfile
    from edgetune.pipeline import gguf_naming

    naming = gguf_naming(cfg, "lora")
    assert [m["file"] for m in manifest["models"]] == [f"models/{naming.stem(q)}.gguf" for q in ("Q8_0", "Q4_0")]
    assert {m["modelfile_template"] for m in manifest["models"]} == {"translated"}
    [adapter] = manifest["adapters"]
    assert adapter["file"] == f"adapters/{naming.stem('F16', lora=True)}.gguf"
    assert (result.bundle_dir / adapter["file"]).is_file()
    adapter_modelfile = (result.bundle_dir / adapter["modelfile"]).read_text()
    assert f"ADAPTER ./{Path(adapter['file']).name}\n" in adapter_modelfile and 'TEMPLATE """' in adapter_modelfile
    # the merged model: the base's dtype (the tiny base is fp32) and a model card
    merged = result.stages["merge"]
    assert merged.record["params"]["dtype"] == "float32" and (merged.path / "model" / "README.md").is_file()
    assert set(adapter["applies_to_base_gguf_sha256"]) == {"Q8_0", "Q4_0"}
    suite = [json.loads(line) for line in (result.bundle_dir / "suite" / "heldout.jsonl").read_text().splitlines()]
    report = json.loads(result.report_json.read_text())
    assert len(suite) == report["builds"][0]["n"] and all(row["prompt_ids"] for row in suite)
    with tarfile.open(result.tarball) as tar:
        names = tar.getnames()
    top = result.bundle_dir.name
    assert f"{top}/{MANIFEST_FILE}" in names
    assert {f"{top}/{m['file']}" for m in manifest["models"]} <= set(names)


def test_every_bundled_gguf_loads_and_generates(first):
    from tests.helpers import generated_tokens

    _, result, _ = first
    ggufs = sorted((result.bundle_dir / "models").glob("*.gguf"))
    assert len(ggufs) == len(QUANTS)
    for path in ggufs:
        assert generated_tokens(path) > 0, path.name


def test_report_has_one_row_per_build(first):
    cfg, result, _ = first
    assert result.report_md.parent == result.report_json.parent == cfg.out_dir / "runs" / "rpi5-8gb"
    report = json.loads(result.report_json.read_text())
    rows = {r["name"]: r for r in report["builds"]}
    assert [r["name"] for r in report["builds"]] == BUILDS
    for name, row in rows.items():
        assert row["n"] == 10 and 0 <= row["accuracy"] <= 1, name
        assert {s: f["n"] for s, f in row["forgetting"].items()} == FORGETTING, name
        for f in row["forgetting"].values():
            assert 0 <= f["acc"] <= 1 and 0 <= f["acc_norm"] <= 1 and f["ci95"][0] <= f["acc"] <= f["ci95"][1]
        if name not in ("base", "gpu"):  # paired with the GPU build item by item
            assert all(f["n_paired"] == f["n"] and "mcnemar_p" in f for f in row["forgetting"].values()), name
    sizes = [rows[name]["size_bytes"] for name in ("Q4_0", "Q8_0", "F16", "gpu")]
    assert 0 < sizes[0] < sizes[1] < sizes[2] < sizes[3] == rows["base"]["size_bytes"]  # fp32 HF folders
    assert "delta_vs_gpu" in rows["Q4_0"] and "delta_vs_base" in rows["gpu"]["forgetting"]["mmlu"]
    # every build scored the same token ids: per-item prompt hashes agree across builds
    hashes = {name: {r["id"]: r["prompt_sha256"] for r in read_results(result.stages[f"winogrande-{name}"])}
              for name in BUILDS}
    assert all(h == hashes["gpu"] and len(h) == 4 for h in hashes.values())
    markdown = result.report_md.read_text()
    for name in BUILDS:
        assert f"| {name} |" in markdown, name
    assert "### Forgetting: ARC-Easy" in markdown and "### Forgetting: WinoGrande" in markdown
    run = json.loads((result.run_dir / "run.json").read_text())
    assert set(run["stages"]) == set(ALL_STAGES)


def test_second_build_runs_nothing(copied, first):
    cfg, out = copied
    again = build(changed(cfg, out, {}), edgetune_home())
    assert again.ran == []
    assert again.report["builds"] == first[1].report["builds"]


def test_new_quant_runs_only_its_own_stages(copied):
    cfg, out = copied
    result = build(changed(cfg, out, {"export.quants": [*QUANTS, Quant.Q5_0]}), edgetune_home())
    # the LoRA GGUF is re-checked because it must load on the new quant's base GGUF too
    assert result.ran == ["gguf-Q5_0", "fidelity-Q5_0", "eval-Q5_0", "mmlu-Q5_0", "arc_easy-Q5_0", "winogrande-Q5_0",
                          "judge-Q5_0", "lora-gguf", "bundle"]
    assert [r["name"] for r in result.report["builds"]] == [*BUILDS, "Q5_0"]
    assert len(list((result.bundle_dir / "models").glob("*.gguf"))) == 3


def test_new_rank_reruns_training_and_everything_after(copied):
    cfg, out = copied
    result = build(changed(cfg, out, {"train.r": 4}), edgetune_home())
    assert result.reused == ["data", "base", "eval-base", "mmlu-base", "arc_easy-base", "winogrande-base"]
    assert result.ran == [s for s in ALL_STAGES if s not in result.reused]
    assert json.loads((result.stages["train"].file("adapter") / "adapter_config.json").read_text())["r"] == 4


def test_bad_target_modules_fail_before_anything_half_written(tmp_path, tiny_model_dir, colour_jsonl):
    out = tmp_path / "out"
    cfg = changed(config(tiny_model_dir, colour_jsonl, out), out, {"train.target_modules": ["q_prj", "v_proj"]})
    with pytest.raises(ModelError, match=r"q_prj -> q_proj"):
        build(cfg, edgetune_home())
    store = out / "store"
    # only the finished cheap stages before train exist; no temp folder, no later stage, no report
    assert sorted(p.name for p in store.iterdir()) == ["base", "data"]
    assert not [p for p in out.rglob(".*")]
    for kind in ("data", "base"):
        assert all((p / "artifact.json").is_file() for p in (store / kind).iterdir())
    assert not (out / "runs").exists()


def test_dora_build_ships_merged_ggufs_only_and_says_why(copied, caplog):
    """llama.cpp has no form for DoRA's magnitude vector: the build skips the LoRA GGUF with a warning rather
    than failing after training (or shipping an adapter that computes something else)."""
    cfg, out = copied
    with caplog.at_level(logging.WARNING, logger="edgetune.pipeline"):
        result = build(changed(cfg, out, {"train.adapter": "dora"}), edgetune_home())
    assert "train" in result.ran and "lora-gguf" not in result.stages
    assert json.loads((result.stages["train"].file("adapter") / "adapter_config.json").read_text())["use_dora"]
    assert any("lora_gguf: skipped" in r.getMessage() and "DoRA" in r.getMessage() for r in caplog.records)
    assert not list(result.bundle_dir.rglob("*lora*.gguf"))
    assert len(list((result.bundle_dir / "models").glob("*.gguf"))) == 2


def test_strict_build_with_nothing_to_ship_writes_the_report_then_fails(copied):
    # 10 held-out items cannot show any GGUF "not worse" than the GPU build within 2 points (issue 14), so the
    # report recommends nothing and --strict turns that into exit 14, after writing the report
    cfg, out = copied
    with pytest.raises(NothingToShip) as exc:
        build(changed(cfg, out, {}), edgetune_home(), strict=True)
    assert exc.value.exit_code == 14 and "nothing to ship" in str(exc.value)
    report = json.loads((out / "runs" / "rpi5-8gb" / "report.json").read_text())
    assert report["recommendation"]["quant"] is None
    ggufs = [r for r in report["builds"] if r["kind"] == "GGUF"]
    assert ggufs and all(r["vs_gpu"]["verdict"] != "not worse" and r["vs_gpu"]["n"] == 10 for r in ggufs)
    assert report["finetune"]["n"] == 10 and report["finetune"]["training"]["steps"] == 8
    assert report["split"]["n_heldout"] == 10 and report["split"]["heldout_needed_2pct"] > 10
    markdown = (out / "runs" / "rpi5-8gb" / "report.md").read_text()
    assert markdown.index("## Did the fine-tune work?") < markdown.index("**Recommended build: none.**")
