"""GGUF names and general.* metadata per llama.cpp's conventions, written by llama.cpp's own converter from
export.naming, read back with the gguf reader and with llama.cpp (llama-cpp-python, the installed build), shown by
`edgetune inspect`, and carried by llama.cpp's quantizer into every quantized file."""

from __future__ import annotations

import json

import pytest

from edgetune.artifacts import Store
from edgetune.constants import Quant
from edgetune.export import stage as export
from edgetune.export.inspect import inspect_gguf
from edgetune.export.naming import naming_for
from edgetune.outputs import ModelFolder
from tests.clirun import run_edgetune

HUB_BASE, HUB_DATA = "HuggingFaceTB/SmolLM2-135M-Instruct", "stanfordnlp/sst2"


@pytest.fixture(scope="module")
def named(tmp_path_factory, tiny_model_dir, llama_tools):
    """The tiny Llama converted as if fine-tuned from a hub base on a hub data set, then quantized."""
    naming = naming_for(HUB_BASE, HUB_DATA, method="lora")
    store = Store(tmp_path_factory.mktemp("naming") / "store")
    folder = ModelFolder(kind="merge", key="0" * 64, path=tiny_model_dir, record={}, cached=True,
                         model_dir=tiny_model_dir)
    f16 = export.convert(folder, llama_tools, store, name="tiny-sst2", metadata=naming.metadata())
    ggufs = {Quant.F16: f16, **export.quantize(f16, [Quant.Q8_0, Quant.Q4_0], llama_tools, store, threads=1)}
    return naming, ggufs


def test_names_follow_the_convention():
    naming = naming_for(HUB_BASE, HUB_DATA, method="lora")
    assert [naming.stem(q) for q in ("F16", "Q8_0", "Q4_0")] == ["SmolLM2-135M-sst2-F16", "SmolLM2-135M-sst2-Q8_0",
                                                                 "SmolLM2-135M-sst2-Q4_0"]
    assert naming.stem("F16", lora=True) == "SmolLM2-135M-sst2-F16-LoRA"


def test_embedded_gguf_base_is_named_from_its_file_and_metadata(smollm2_gguf):
    naming = naming_for("embedded:smollm2-135m-instruct", "embedded:sst2", method="lora", gguf_source=smollm2_gguf)
    assert naming.stem("Q4_0") == "SmolLM2-135M-sst2-Q4_0"
    assert naming.base_model == {"name": "SmolLM2-135M-Instruct", "organization": "HuggingFaceTB"}
    assert naming.source_url is None  # a local file has no URL: none is made up


def test_every_gguf_carries_the_general_metadata(named):
    naming, ggufs = named
    for quant, art in ggufs.items():
        general = inspect_gguf(art.gguf_path)["general"]
        assert general["basename"] == "SmolLM2" and general["finetune"] == "sst2", quant
        assert general["size_label"] == "135M" and general["quantized_by"] == "edgetune"
        assert general["base_model.count"] == 1
        assert (general["base_model.0.name"], general["base_model.0.organization"], general["base_model.0.repo_url"]) \
            == ("SmolLM2-135M-Instruct", "HuggingFaceTB", f"https://huggingface.co/{HUB_BASE}")
        assert general["dataset.count"] == 1 and general["dataset.0.repo_url"] == f"https://huggingface.co/datasets/{HUB_DATA}"
        assert general["source.url"] == f"https://huggingface.co/{HUB_BASE}"  # a URL, not the bare hub id
        assert set(general["tags"]) >= {"edgetune", "lora"}


def test_llama_cpp_loads_each_gguf_and_reads_the_same_keys(named):
    from llama_cpp import Llama

    _, ggufs = named
    for quant, art in ggufs.items():
        llm = Llama(str(art.gguf_path), n_ctx=64, verbose=False)
        meta = llm.metadata
        assert (meta["general.basename"], meta["general.finetune"], meta["general.base_model.0.repo_url"]) == \
            ("SmolLM2", "sst2", f"https://huggingface.co/{HUB_BASE}"), quant
        assert meta["general.file_type"] == str(quant.file_type)
        llm.close()


def test_inspect_shows_the_names(monkeypatch, named):
    def edgetune(*argv):
        return run_edgetune(monkeypatch, *argv)

    _, ggufs = named
    result = edgetune("--json", "inspect", ggufs[Quant.Q4_0].gguf_path)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["general"]["basename"] == "SmolLM2"
    human = edgetune("inspect", ggufs[Quant.Q4_0].gguf_path).stdout.splitlines()
    assert "general.finetune: sst2" in human and "general.base_model.0.organization: HuggingFaceTB" in human
