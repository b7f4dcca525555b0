"""The bundle stage on real quantized GGUFs: manifest, SHA256SUMS, tarball, and verify_bundle's failure modes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from edgetune import bundle
from edgetune.artifacts import Store
from edgetune.constants import MANIFEST_FILE, MANIFEST_SCHEMA, Quant
from edgetune.errors import BundleError
from edgetune.outputs import GGUFFile
from edgetune.targets import get_target

NAME = "tiny-rpi5-8gb"
MODELS = ["models/tiny-Q4_0.gguf", "models/tiny-Q8_0.gguf"]  # the rpi5 target's order: Q4_0 first


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle) -> Path:
    return tiny_bundle.path / tiny_bundle.outputs["bundle"]


@pytest.fixture(scope="module")
def manifest(bundle_dir) -> dict:
    return json.loads((bundle_dir / MANIFEST_FILE).read_text())


@pytest.fixture
def copy(bundle_dir, tmp_path) -> Path:
    """A private copy of the bundle (real copies, not the store's hard links) to damage."""
    return Path(shutil.copytree(bundle_dir, tmp_path / NAME))


def test_layout(tiny_bundle, bundle_dir):
    assert bundle_dir.name == NAME
    modelfiles = [m.removesuffix(".gguf") + ".Modelfile" for m in MODELS]  # every bundle, ARM or x86
    assert files_under(bundle_dir) == {"README.md", "SHA256SUMS", MANIFEST_FILE, *MODELS, *modelfiles}
    assert tiny_bundle.outputs == {"bundle": NAME, "tarball": f"{NAME}.tar.gz"}
    assert tiny_bundle.metrics["files"] == 5


def test_manifest_lists_every_file_with_its_sha256(bundle_dir, manifest):
    assert set(manifest["files"]) == files_under(bundle_dir) - {MANIFEST_FILE, bundle.SUMS_FILE}
    for rel, meta in manifest["files"].items():
        assert meta == {"sha256": sha256(bundle_dir / rel), "size_bytes": (bundle_dir / rel).stat().st_size}, rel


def test_manifest_describes_target_models_and_provenance(manifest, tiny_bundle, llama_tools):
    target = get_target("rpi5")
    assert manifest["schema"] == MANIFEST_SCHEMA and manifest["name"] == NAME
    assert manifest["target"] == {"name": "rpi5-8gb", "arch": "aarch64", "mcpu": "cortex-a76",
                                  "features": target.cpu.features, "ram_gb": target.ram_gb}
    assert [(m["quant"], m["file"]) for m in manifest["models"]] == [("Q4_0", MODELS[0]), ("Q8_0", MODELS[1])]
    assert manifest["default_model"] == MODELS[0]
    assert manifest["llama_cpp"] == {"llama-cpp-python": llama_tools.version, "llama.cpp": llama_tools.revision}
    assert "base" in manifest["provenance"]
    sizes = {m["file"]: m["size_bytes"] for m in manifest["models"]}
    assert sizes[MODELS[0]] < sizes[MODELS[1]]
    assert tiny_bundle.metrics["size_bytes"] == sum(v["size_bytes"] for v in manifest["files"].values())


def test_models_are_the_quantized_ggufs(bundle_dir, tiny_bundle):
    store = Store(tiny_bundle.path.parents[1])
    for quant, rel in zip((Quant.Q4_0, Quant.Q8_0), MODELS):
        gguf = store.lookup("gguf", tiny_bundle.record["inputs"][quant.value])
        assert gguf.metrics["quant"] == quant.value
        assert sha256(bundle_dir / rel) == gguf.metrics["sha256"] == sha256(gguf.file("gguf"))
        assert (bundle_dir / rel).read_bytes()[:4] == b"GGUF"


def test_sha256sums_matches_sha256sum_c(bundle_dir, manifest):
    lines = (bundle_dir / bundle.SUMS_FILE).read_text().splitlines()
    parsed = []
    for line in lines:  # coreutils' format: hash, space, space (text) or '*' (binary), path
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        assert m, line
        parsed.append((m[2], m[1]))
    assert [p for p, _ in parsed] == sorted(manifest["files"])
    for rel, digest in parsed:
        assert digest == sha256(bundle_dir / rel), rel
    if shutil.which("sha256sum"):
        proc = subprocess.run(["sha256sum", "-c", bundle.SUMS_FILE], cwd=bundle_dir, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_names_the_default_model(bundle_dir):
    readme = (bundle_dir / "README.md").read_text()
    assert f"llama-cli -m {MODELS[0]}" in readme and "sha256sum -c SHA256SUMS" in readme


def test_tarball_holds_the_folder(tiny_bundle, bundle_dir, tmp_path):
    tarball = tiny_bundle.file("tarball")
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        assert all(m.name == NAME or m.name.startswith(f"{NAME}/") for m in members)
        assert {m.name[len(NAME) + 1:] for m in members if m.isfile()} == files_under(bundle_dir)
        tar.extractall(tmp_path, filter="data")
    assert bundle.verify_bundle(tmp_path / NAME)["name"] == NAME


def test_verify_passes(bundle_dir, manifest):
    assert bundle.verify_bundle(bundle_dir) == manifest


def test_second_run_is_cached_and_a_new_name_is_not(tiny_bundle, llama_tools):
    store = Store(tiny_bundle.path.parents[1])
    ggufs = {Quant(q): GGUFFile.of(store.lookup("gguf", key))
             for q, key in tiny_bundle.record["inputs"].items()}
    args = (get_target("rpi5"), ggufs, tiny_bundle.record["params"]["provenance"],
            tiny_bundle.record["params"]["llama_cpp"], store)
    again = bundle.run(*args, model_name="tiny")
    assert again.cached and again.key == tiny_bundle.key
    other = bundle.run(*args, model_name="other")
    assert not other.cached and other.key != tiny_bundle.key
    assert files_under(other.path / other.outputs["bundle"]) >= {"models/other-Q4_0.gguf", "models/other-Q8_0.gguf"}


# --- damaged bundles -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel", [*MODELS, "README.md"])
def test_changed_byte_names_the_file(copy, rel):
    path = copy / rel
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(BundleError) as exc:
        bundle.verify_bundle(copy)
    assert exc.value.message == f"bundle file changed: {rel} (sha256 does not match the manifest)"
    assert exc.value.exit_code == 7


@pytest.mark.parametrize("rel", ["models/extra.gguf", "notes.txt"])
def test_extra_file(copy, rel):
    (copy / rel).write_text("not in the manifest")
    with pytest.raises(BundleError) as exc:
        bundle.verify_bundle(copy)
    assert exc.value.message == f"bundle has files the manifest does not list: {rel}"


@pytest.mark.parametrize("rel", [MODELS[1], "README.md"])
def test_missing_file(copy, rel):
    (copy / rel).unlink()
    with pytest.raises(BundleError) as exc:
        bundle.verify_bundle(copy)
    assert exc.value.message == f"bundle file missing: {rel}"


def test_truncated_gguf(copy):
    path = copy / MODELS[0]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BundleError, match=f"bundle file changed: {MODELS[0]}"):
        bundle.verify_bundle(copy)


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.unlink(), "has no manifest.json"),
    (lambda m: m.write_text("{ not json"), "is not readable JSON"),
    (lambda m: m.write_bytes(b"\xff\xfe garbage"), "is not readable JSON"),
    (lambda m: m.write_text("[]"), "not a JSON object"),
    (lambda m: m.write_text(json.dumps({**json.loads(m.read_text()), "schema": 99})), "schema: unsupported schema 99"),
    (lambda m: m.write_text(json.dumps({"schema": MANIFEST_SCHEMA})), "name: Field required"),
], ids=["absent", "bad-json", "binary", "not-a-mapping", "schema", "no-files"])
def test_damaged_manifest(copy, damage, message):
    damage(copy / MANIFEST_FILE)
    with pytest.raises(BundleError, match=message):
        bundle.verify_bundle(copy)


def test_edited_sha256sums_is_caught(copy):
    sums = copy / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("README.md", "README.txt"))
    with pytest.raises(BundleError, match="SHA256SUMS does not match manifest.json"):
        bundle.verify_bundle(copy)


def test_bundle_files_are_copies_not_links(tiny_bundle):
    root = tiny_bundle.path / tiny_bundle.outputs["bundle"]
    assert all(p.stat().st_nlink == 1 for p in (root / "models").iterdir())
