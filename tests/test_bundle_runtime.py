"""Bundles that carry their own runtime (runtime=True) and eval suite (suite_rows): layout, manifest, Ollama
Modelfiles, hashes, cache keys, and the refusals. The binaries are the real cross-built ones from the cache
(scripts/cross-build-llama.sh, through the cross_runtime fixture); tests/pi runs them under emulation."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from edgetune import bundle
from edgetune.artifacts import Store
from edgetune.constants import MANIFEST_FILE, Quant
from edgetune.errors import BundleError, ToolError
from edgetune.outputs import GGUFFile
from edgetune.runtime_build import BINARIES, runner_source
from edgetune.targets import get_target

NAME = "tiny-rpi5-8gb"
ROWS = [{"id": "a", "prompt_ids": [1, 2, 3], "max_tokens": 4, "reference": "blue"},
        {"id": 7, "prompt": "Hello", "max_tokens": 2}]


@pytest.fixture(scope="module")
def inputs(tiny_bundle):
    store = Store(tiny_bundle.path.parents[1])
    ggufs = {Quant(q): GGUFFile.of(store.lookup("gguf", key)) for q, key in tiny_bundle.record["inputs"].items()}
    return store, ggufs, tiny_bundle.record["params"]


@pytest.fixture(scope="module")
def home(cross_runtime) -> Path:
    """The cache folder holding the real cross-build (bundle.run only reads its cross/ folder)."""
    return cross_runtime.root.parents[1]


def make(inputs, home, **kwargs):
    store, ggufs, params = inputs
    return bundle.run(get_target("rpi5"), ggufs, params["provenance"], params["llama_cpp"], store,
                      model_name="tiny", home=home, **kwargs)


@pytest.fixture(scope="module")
def rt_bundle(inputs, home):
    art = make(inputs, home, runtime=True, suite_rows=ROWS)
    return art, art.path / art.outputs["bundle"]


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_layout(rt_bundle, cross_runtime):
    _, root = rt_bundle
    assert files_under(root) == {
        "README.md", "SHA256SUMS", MANIFEST_FILE, "runner/edgetune_runner.py", "suite/heldout.jsonl",
        *(f"bin/{b}" for b in BINARIES),
        *(f"models/tiny-{q}.{ext}" for q in ("Q4_0", "Q8_0") for ext in ("gguf", "Modelfile")),
    }
    for rel in ("runner/edgetune_runner.py", *(f"bin/{b}" for b in BINARIES)):
        assert (root / rel).stat().st_mode & stat.S_IXUSR, rel
    for name, path in cross_runtime.binaries.items():  # the cached build itself, byte for byte
        assert (root / "bin" / name).read_bytes() == path.read_bytes(), name
    assert (root / "runner/edgetune_runner.py").read_bytes() == runner_source().read_bytes()
    assert bundle.verify_bundle(root)["name"] == NAME


def test_manifest_records_runtime_runner_and_suite(rt_bundle, cross_runtime, llama_tools):
    _, root = rt_bundle
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    build = json.loads((cross_runtime.root / "build.json").read_text())
    assert manifest["runtime"] == {
        "binaries": {b: f"bin/{b}" for b in BINARIES}, "build_flags": build["cmake_flags"],
        "llama_cpp": {"llama-cpp-python": llama_tools.version, "llama.cpp": build["llama.cpp"]},
        "arch": "aarch64", "mcpu": "cortex-a76", "arm_features": build["arm_features"],
        "compiler": build["compiler"], "static": True}
    assert manifest["runner"]["file"] == "runner/edgetune_runner.py"
    assert manifest["suite"] == {"file": "suite/heldout.jsonl", "items": 2}
    assert [m["modelfile"] for m in manifest["models"]] == ["models/tiny-Q4_0.Modelfile", "models/tiny-Q8_0.Modelfile"]
    assert manifest["target"]["cores"] == 4 and manifest["target"]["context_length"] == 2048  # runner defaults
    rows = [json.loads(line) for line in (root / "suite/heldout.jsonl").read_text().splitlines()]
    assert rows == ROWS


def test_modelfile_points_at_its_gguf_with_eos_stops(rt_bundle):
    _, root = rt_bundle
    text = (root / "models/tiny-Q4_0.Modelfile").read_text()
    assert "FROM ./tiny-Q4_0.gguf\n" in text and "PARAMETER num_ctx 2048\n" in text
    assert 'PARAMETER stop "<|im_end|>"' in text  # SmolLM2's EOS, read from the GGUF
    assert 'TEMPLATE """' in text  # the GGUF's chat template, translated (tests/test_modelfile.py renders it)


def test_readme_shows_the_runner(rt_bundle):
    _, root = rt_bundle
    readme = (root / "README.md").read_text()
    assert "python3 runner/edgetune_runner.py --job-dir jobs/q --model models/tiny-Q4_0.gguf" in readme
    assert "bin/llama-server -m models/tiny-Q4_0.gguf -t 4 -c 2048" in readme
    revision = json.loads((root / MANIFEST_FILE).read_text())["runtime"]["llama_cpp"]["llama.cpp"]
    assert f"statically\nlinked for aarch64 (-mcpu=cortex-a76, llama.cpp {revision}" in readme


def test_tarball_keeps_the_executable_bits(rt_bundle, tmp_path):
    art, _ = rt_bundle
    with tarfile.open(art.file("tarball")) as tar:
        tar.extractall(tmp_path, filter="data")
    assert os.access(tmp_path / NAME / "bin/llama-server", os.X_OK)
    bundle.verify_bundle(tmp_path / NAME)


def test_cache_keys(inputs, home, rt_bundle, tiny_bundle):
    art, _ = rt_bundle
    assert make(inputs, home, runtime=True, suite_rows=ROWS).cached
    assert make(inputs, home).key == tiny_bundle.key  # new parameters off: the old bundle, the old key
    other = make(inputs, home, runtime=True, suite_rows=ROWS[:1])
    assert not other.cached and other.key != art.key
    suite_only = make(inputs, home, suite_rows=ROWS)
    assert files_under(suite_only.path / NAME) == {"README.md", "SHA256SUMS", MANIFEST_FILE, "suite/heldout.jsonl",
                                                   "models/tiny-Q4_0.gguf", "models/tiny-Q8_0.gguf",
                                                   "models/tiny-Q4_0.Modelfile", "models/tiny-Q8_0.Modelfile"}


def test_missing_cross_build_names_the_script(inputs, tmp_path):
    with pytest.raises(ToolError) as exc:
        make(inputs, tmp_path, runtime=True)
    assert "no aarch64 llama.cpp runtime is built for -mcpu=cortex-a76" in exc.value.message
    assert "scripts/cross-build-llama.sh cortex-a76" in exc.value.hint


def test_runtime_needs_home(inputs):
    with pytest.raises(BundleError, match="needs `home`"):
        make(inputs, None, runtime=True)


def test_x86_target_has_no_runtime(inputs, home):
    store, ggufs, params = inputs
    with pytest.raises(ToolError, match="only for aarch64, not x86_64"):
        bundle.run(get_target("x86_64-host"), ggufs, params["provenance"], params["llama_cpp"], store,
                   model_name="tiny", runtime=True, home=home)


@pytest.mark.parametrize("row, message", [
    ({"prompt_ids": [1], "max_tokens": 1}, "suite row 1 (None): 'id' must be a unique"),
    ({"id": "a", "prompt_ids": [1], "max_tokens": 1}, "suite row 1 ('a'): 'id' must be a unique"),
    ({"id": "b", "max_tokens": 1}, "give exactly one of 'prompt_ids' and 'prompt'"),
    ({"id": "b", "prompt_ids": [], "max_tokens": 1}, "'prompt_ids' must be a non-empty list"),
    ({"id": "b", "prompt": "x", "max_tokens": 0}, "'max_tokens' must be an integer >= 1"),
], ids=["no-id", "duplicate", "no-prompt", "empty-ids", "zero-max"])
def test_bad_suite_rows(inputs, home, row, message):
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(inputs, home, suite_rows=[ROWS[0], row])
