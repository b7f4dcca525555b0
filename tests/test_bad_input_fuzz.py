"""Bad input never escapes as a traceback: real files (a GGUF made by llama.cpp's converter, the tiny bundle's
manifest, the tiny Llama's folder, a real dataset, config, devices file and device suite), cut short or with one
field wrong, go through every command that reads them. Each must end with one `error:` line and the exit code
the README documents, and fail before anything heavy (no training, no connection to a device)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import yaml
from edgetune.config import STARTER
from edgetune.constants import MANIFEST_FILE

from tests.clirun import run_edgetune
from tests.device.conftest import make_device_bundle

DEAD_DEVICE = "nobody@127.0.0.1:9"  # never contacted: every case fails before connecting


@pytest.fixture
def run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    return lambda *argv: run_edgetune(monkeypatch, *argv)


def one_error(result, exit_code: int) -> str:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.exit_code == exit_code, text
    # logged WARNINGs may come first (the colour set is small); the error itself is one line, the last
    lines = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("WARNING: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stderr.strip().splitlines()[-1] == lines[0], result.stderr
    return lines[0]


# --- GGUF: cut at every header field --------------------------------------------------------------------

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_cuts(blob: bytes) -> list[tuple[str, int]]:
    """(label, offset) of every header field of a little-endian GGUF v3, from llama.cpp's docs/gguf.md (walked
    here by hand, not by the reader under test). A cut at an offset keeps the bytes before that field, plus cuts
    inside a field (half a key, the first item of an array) and in the tensor data."""
    cuts = [("magic", 0), ("inside magic", 2), ("version", 4), ("tensor count", 8), ("kv count", 16)]
    n_tensors, n_kv = struct.unpack_from("<QQ", blob, 8)
    pos = 24

    def string_end(at: int) -> int:
        return at + 8 + struct.unpack_from("<Q", blob, at)[0]

    def value_end(vtype: int, at: int) -> int:
        if vtype in _SCALAR_SIZES:
            return at + _SCALAR_SIZES[vtype]
        if vtype == 8:
            return string_end(at)
        etype, count = struct.unpack_from("<IQ", blob, at)
        at += 12
        if etype in _SCALAR_SIZES:
            return at + _SCALAR_SIZES[etype] * count
        for _ in range(count):
            at = value_end(etype, at)
        return at

    for _ in range(n_kv):
        key_end = string_end(pos)
        key = blob[pos + 8:key_end].decode()
        (vtype,) = struct.unpack_from("<I", blob, key_end)
        cuts += [(f"{key}: key length", pos), (f"{key}: key", pos + 8), (f"{key}: inside key", pos + 9),
                 (f"{key}: type", key_end), (f"{key}: value", key_end + 4)]
        if vtype == 9:
            cuts += [(f"{key}: array count", key_end + 8), (f"{key}: first item", key_end + 16)]
        pos = value_end(vtype, key_end + 4)
    for i in range(n_tensors):
        name_end = string_end(pos)
        (n_dims,) = struct.unpack_from("<I", blob, name_end)
        fields = [("name", pos), ("n_dims", name_end), ("dims", name_end + 4), ("type", name_end + 4 + 8 * n_dims),
                  ("offset", name_end + 8 + 8 * n_dims)]
        cuts += [(f"tensor {i}: {f}", at) for f, at in (fields if i in (0, n_tensors - 1) else fields[:1])]
        pos = name_end + 16 + 8 * n_dims
    cuts += [("tensor data", pos + 32), ("half the data", len(blob) // 2), ("last byte", len(blob) - 1)]
    return cuts


@pytest.fixture(scope="module")
def gguf_blob(tiny_gguf) -> bytes:
    return tiny_gguf.read_bytes()


@pytest.fixture
def cut_gguf(tmp_path, gguf_blob):
    def make(offset: int) -> Path:
        path = tmp_path / "cut.gguf"
        path.write_bytes(gguf_blob[:offset])
        return path
    return make


def test_gguf_cuts_cover_every_field(gguf_blob):
    cuts = gguf_cuts(gguf_blob)
    assert len(cuts) > 150 and len({at for _, at in cuts}) > 140
    assert any(label.startswith("tokenizer.ggml.tokens") for label, _ in cuts)


def test_inspect_and_plan_on_every_cut(run, cut_gguf, gguf_blob):
    """Every cut, through the two commands that read any GGUF: inspect (export error, 6) and plan (6)."""
    for label, offset in gguf_cuts(gguf_blob):
        path = cut_gguf(offset)
        line = one_error(run("inspect", path), 6)
        assert "cut.gguf" in line and ("truncated" in line or "not a readable GGUF" in line), (label, line)
        one_error(run("plan", "--target", "rpi5", "--gguf", path), 6)


def _patched(blob: bytes, at: int, fmt: str, value) -> bytes:
    return blob[:at] + struct.pack(fmt, value) + blob[at + struct.calcsize(fmt):]


def test_garbled_headers(run, tmp_path, gguf_blob):
    """Values no writer would produce: each fails in one line, without reading (or allocating) what it claims."""
    cuts = dict(gguf_cuts(gguf_blob))
    tokens_count = cuts["tokenizer.ggml.tokens: array count"]
    variants = {
        "magic": b"GGML" + gguf_blob[4:],
        "version": _patched(gguf_blob, 4, "<I", 99),
        "kv count": _patched(gguf_blob, 16, "<Q", 2 ** 62),
        "tensor count": _patched(gguf_blob, 8, "<Q", 2 ** 62),
        "key length": _patched(gguf_blob, cuts["general.architecture: key length"], "<Q", 2 ** 63),
        "value type": _patched(gguf_blob, cuts["general.architecture: type"], "<I", 77),
        "array count": _patched(gguf_blob, tokens_count, "<Q", 2 ** 60),
        "tensor dims": _patched(gguf_blob, cuts["tensor 0: n_dims"], "<I", 9),
        "tensor type": _patched(gguf_blob, cuts["tensor 0: type"], "<I", 999),
        "tensor offset": _patched(gguf_blob, cuts["tensor 0: offset"], "<Q", 2 ** 40),
    }
    for name, blob in variants.items():
        path = tmp_path / "garbled.gguf"
        path.write_bytes(blob)
        line = one_error(run("inspect", path), 6)
        assert "garbled.gguf" in line, (name, line)


# one cut per header section, through the commands that take a GGUF as the base model (exit 4, model)
SECTIONS = ["magic", "version", "kv count", "general.architecture: value", "tokenizer.ggml.tokens: first item",
            "tokenizer.chat_template: value", "tensor 0: name", "tensor 0: dims", "half the data", "last byte"]


@pytest.mark.parametrize("section", SECTIONS)
def test_gguf_as_base_model(run, cut_gguf, gguf_blob, colour_jsonl, edgetune_home, llama_tools, monkeypatch,
                            section):
    offset = dict(gguf_cuts(gguf_blob))[section]
    path = cut_gguf(offset)
    monkeypatch.setenv("EDGETUNE_HOME", str(edgetune_home))  # build checks the real llama.cpp tools first
    for command in ("build", "train"):
        line = one_error(run(command, "--model", path, "--data", colour_jsonl, "--out", "out"), 4)
        assert line.startswith(f"error: base model {path}"), line
        assert not list(Path("out").glob("store/base/*/model")), "nothing is loaded from a bad GGUF"


# --- the bundle manifest: each field wrong --------------------------------------------------------------

_DELETE = object()


def damaged(manifest: dict, where: tuple, value) -> dict:
    """A deep copy of `manifest` with the field at path `where` (keys and list indices) set to `value` or
    deleted. Paths, not dotted names: file names hold dots."""
    copy = json.loads(json.dumps(manifest))
    node = copy
    for part in where[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    return copy


def manifest_damage(manifest: dict) -> list[tuple[tuple, object]]:
    """(field path, wrong value) for every top-level field the device relies on and for each part of one entry."""
    first = next(iter(manifest["files"]))
    entry = manifest["files"][first]
    cases: list[tuple[tuple, object]] = []
    for key in ("schema", "name", "target", "models", "default_model", "files"):
        cases += [((key,), _DELETE), ((key,), 12345), ((key,), None)]
    cases += [(("schema",), 99), (("schema",), "1"), (("name",), ""), (("name",), "../escape"), (("name",), "a/b"),
              (("target", "name"), _DELETE), (("target", "arch"), 64), (("models",), []),
              (("models", 0, "file"), "models/none.gguf"), (("models", 0, "size_bytes"), "big"),
              (("models", 0, "quant"), _DELETE), (("default_model",), "elsewhere.gguf"), (("files",), {}),
              (("files", first, "sha256"), "abc"), (("files", first, "sha256"), _DELETE),
              (("files", first, "size_bytes"), -1), (("files", first, "size_bytes"), True),
              (("files", first), "deadbeef"), (("files", "../outside"), entry), (("files", "/etc/passwd"), entry)]
    return cases


@pytest.fixture(scope="module")
def device_bundle_src(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny real bundle with the runner (what deploy and eval need), read-only: cases copy it. No llama-server:
    every case fails before one would start."""
    return make_device_bundle(tiny_bundle.file("bundle"), tmp_path_factory.mktemp("fuzz-bundle") / "bundle")


def test_manifest_with_each_field_wrong(run, device_bundle_src, tmp_path):
    original = json.loads((device_bundle_src / MANIFEST_FILE).read_text())
    bundle = Path(shutil.copytree(device_bundle_src, tmp_path / "bundle"))
    for where, value in manifest_damage(original):
        (bundle / MANIFEST_FILE).write_text(json.dumps(damaged(original, where, value)))
        for argv in (["bundle", "verify", bundle], ["deploy", bundle, "--device", DEAD_DEVICE],
                     ["eval", bundle, "--device", DEAD_DEVICE, "--out", tmp_path / "runs"]):
            line = one_error(run(*argv), 7)
            assert MANIFEST_FILE in line, (where, line)
    for cut in (0, 1, len(json.dumps(original)) // 2):  # a manifest cut short
        (bundle / MANIFEST_FILE).write_text(json.dumps(original)[:cut])
        assert "is not readable JSON" in one_error(run("bundle", "verify", bundle), 7)


def test_a_cut_bundle_file_is_named(run, device_bundle_src, tmp_path):
    bundle = Path(shutil.copytree(device_bundle_src, tmp_path / "bundle"))
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    gguf = bundle / manifest["default_model"]
    gguf.write_bytes(gguf.read_bytes()[:1000])
    line = one_error(run("bundle", "verify", bundle), 7)
    assert line.startswith(f"error: bundle file changed: {manifest['default_model']} (1000 bytes")


# --- the device suite and the devices file ---------------------------------------------------------------

SUITES = {
    "binary": b"\x00\xff\xfe" * 20,
    "cut line": b'{"id": "q0", "prompt": "hi", "max_tok',
    "not an object": b"[1, 2]\n",
    "no prompt": b'{"id": "q0", "max_tokens": 2}\n',
    "bad max_tokens": b'{"id": "q0", "prompt": "hi", "max_tokens": "two"}\n',
    "duplicate id": b'{"id": 1, "prompt": "a", "max_tokens": 1}\n{"id": 1, "prompt": "b", "max_tokens": 1}\n',
    "empty": b"\n\n",
}


@pytest.mark.parametrize("name", SUITES)
def test_bad_device_suite_fails_before_connecting(run, device_bundle_src, tmp_path, name):
    suite = tmp_path / "suite.jsonl"
    suite.write_bytes(SUITES[name])
    line = one_error(run("eval", device_bundle_src, "--device", DEAD_DEVICE, "--suite", suite,
                         "--out", tmp_path / "runs"), 2)
    assert str(suite) in line


DEVICES = {
    "binary": b"\x00\xff\xfe" * 20,
    "bad yaml": b"- name: pi\n  spec: [unclosed\n",
    "scalar": b"42\n",
    "list of numbers": b"- 1\n- 2\n",
    "no spec": b"- name: pi\n",
    "bad spec": b"- spec: 'pi@@host'\n",
    "unknown field": b"- spec: pi@host\n  colour: red\n",
    "options not a mapping": b"- spec: pi@host\n  options: [1]\n",
    "unknown option": b"- spec: pi@host\n  options: {speed: 3}\n",
    "timeout not a number": b"- spec: pi@host\n  options: {connect_timeout_s: soon}\n",
    "negative timeout": b"- spec: pi@host\n  options: {connect_timeout_s: -1}\n",
    "identity not a path": b"- spec: pi@host\n  options: {identity_file: 7}\n",
    "name not text": b"- spec: pi@host\n  name: 5\n",
    "same name twice": b"- {spec: pi@a, name: x}\n- {spec: pi@b, name: x}\n",
}


@pytest.mark.parametrize("name", DEVICES)
def test_bad_devices_file(run, device_bundle_src, tmp_path, name):
    devices = tmp_path / "devices.yaml"
    devices.write_bytes(DEVICES[name])
    for command in ("deploy", "eval"):
        line = one_error(run(command, device_bundle_src, "--devices", devices, "--out", tmp_path / "r")
                         if command == "eval" else run(command, device_bundle_src, "--devices", devices), 2)
        assert "devices file" in line or "device" in line, line


# --- config, dataset, model folder -------------------------------------------------------------------------

CONFIGS = {
    "binary": b"GGUF\x03\x00\x00\x00\xff\xfe\x00",
    "cut flow mapping": b"train: {r: 8\n",
    "tab indent": b"train:\n\tr: 8\n",
    "a list": b"- train\n",
    "section not a mapping": b"train: 5\n",
    "wrong type": b"train: {r: eight}\n",
    "unknown key": b"train: {rank: 8}\n",
    "negative": b"train: {learning_rate: -1}\n",
}


@pytest.mark.parametrize("name", CONFIGS)
def test_bad_config_file(run, tmp_path, name):
    cfg = tmp_path / "edgetune.yaml"
    cfg.write_bytes(CONFIGS[name])
    for command in ("build", "train", "sweep"):
        one_error(run(command, "-c", cfg), 2)


def test_unknown_target_in_the_config(run, tmp_path):
    cfg = tmp_path / "edgetune.yaml"
    cfg.write_text("target: mars-rover\n")  # only build reads the target (train and sweep never do)
    assert "unknown target 'mars-rover'" in one_error(run("build", "-c", cfg), 2)


def test_starter_config_cut_at_every_section(run, tmp_path):
    """The starter file cut inside each section's first line: valid YAML or not, never a traceback. A cut
    that still parses must load (it is only a shorter config), so `edgetune init` output stays robust."""
    from edgetune.config import load_config
    from edgetune.errors import ConfigError

    for line_no, line in enumerate(STARTER.splitlines()):
        if not line or line.startswith((" ", "#")):
            continue
        text = "\n".join(STARTER.splitlines()[:line_no]) + "\n" + line[: max(1, len(line) // 2)]
        path = tmp_path / "cut.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError:
            pass


@pytest.fixture(scope="module")
def dataset_blob(colour_jsonl) -> bytes:
    return colour_jsonl.read_bytes()


def data_variants(blob: bytes, gguf: bytes) -> dict[str, tuple[str, bytes]]:
    rows = blob.decode().splitlines()
    good = json.loads(rows[0])
    return {
        "cut mid-line": (".jsonl", blob[: len(blob) // 2 + 7]),
        "a GGUF named .jsonl": (".jsonl", gguf[:4096]),
        "a number row": (".jsonl", ("\n".join(rows[:20] + ["7"] + rows[20:]) + "\n").encode()),
        "a string row": (".jsonl", ("\n".join(rows[:20] + ['"text"'] + rows[20:]) + "\n").encode()),
        "no output column": (".jsonl", "".join(json.dumps({"id": i, "input": "x"}) + "\n" for i in range(40)).encode()),
        "empty answer": (".jsonl", (json.dumps({**good, "output": ""}) + "\n" + blob.decode()).encode()),
        "messages not a list": (".jsonl", (json.dumps({"messages": "hi"}) + "\n" + blob.decode()).encode()),
        "message without role": (".jsonl", (json.dumps({"messages": [{"content": "x"}]}) + "\n").encode() + blob),
        "json scalar": (".json", b'"rows"'),
        "json data not a list": (".json", b'{"data": 5}'),
        "json list of numbers": (".json", b"[1, 2, 3]"),
        "json cut": (".json", json.dumps([json.loads(r) for r in rows]).encode()[:300]),
        "csv binary": (".csv", gguf[:4096]),
        "csv wrong columns": (".csv", b"question,answer\n" + b"a,b\n" * 40),
        "empty": (".jsonl", b""),
        # two rows: too few for any split, but the bad row must be what is reported
        "two rows, one without output": (".jsonl", (rows[0] + "\n" + json.dumps({"input": "x"}) + "\n").encode()),
        "two rows, one empty answer": (".jsonl", (rows[0] + "\n" + json.dumps({**good, "output": " "}) + "\n").encode()),
    }


@pytest.mark.parametrize("name", ["cut mid-line", "a GGUF named .jsonl", "a number row", "a string row",
                                  "no output column", "empty answer", "messages not a list",
                                  "message without role", "json scalar", "json data not a list",
                                  "json list of numbers", "json cut", "csv binary", "csv wrong columns", "empty",
                                  "two rows, one without output", "two rows, one empty answer"])
def test_bad_dataset(run, tmp_path, dataset_blob, gguf_blob, edgetune_home, llama_tools, monkeypatch, name):
    suffix, content = data_variants(dataset_blob, gguf_blob)[name]
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    monkeypatch.setenv("EDGETUNE_HOME", str(edgetune_home))
    for command in ("build", "train"):
        line = one_error(run(command, "--data", path, "--out", "out"), 3)
        # content is judged before size: never "not more than heldout_size" for a file with a bad row
        assert "heldout_size" not in line, line


def model_variants(model_dir: Path) -> dict[str, tuple[str, bytes | None]]:
    weights = min(model_dir.glob("*.safetensors")).name
    blob = (model_dir / weights).read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return {
        "config cut": ("config.json", (model_dir / "config.json").read_bytes()[:40]),
        "config a list": ("config.json", b"[]"),
        "config binary": ("config.json", b"\xff\xfe\x00garbage"),
        "config no model_type": ("config.json", b'{"hidden_size": 64}'),
        "weights gone": (weights, None),
        "weights cut in length": (weights, blob[:5]),
        "weights cut in header": (weights, blob[: 8 + n // 2]),
        "weights header garbled": (weights, blob[:8] + b"\x00" * n + blob[8 + n:]),
        "weights cut in data": (weights, blob[: len(blob) // 2]),
    }


@pytest.mark.parametrize("name", ["config cut", "config a list", "config binary", "config no model_type",
                                  "weights gone", "weights cut in length", "weights cut in header",
                                  "weights header garbled", "weights cut in data"])
def test_bad_model_folder(run, tmp_path, tiny_model_dir, colour_jsonl, edgetune_home, llama_tools, monkeypatch,
                          name):
    rel, content = model_variants(tiny_model_dir)[name]
    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_model_dir.iterdir():  # links: only the damaged file is new
        os.link(f, model / f.name)
    (model / rel).unlink()
    if content is not None:
        (model / rel).write_bytes(content)
    monkeypatch.setenv("EDGETUNE_HOME", str(edgetune_home))
    for command in ("build", "train"):
        line = one_error(run(command, "--model", model, "--data", colour_jsonl, "--out", "out"), 4)
        assert str(model) in line, line


def test_devices_yaml_round_trip_is_accepted(tmp_path):
    """The control case: the same loader accepts a well-formed devices file (the fuzz cases are not all
    rejected for some unrelated reason)."""
    from edgetune.device import load_devices

    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump([{"name": "pi", "spec": "pi@host:22", "options": {"connect_timeout_s": 3}}]))
    (device,) = load_devices(path)
    assert (device.name, device.port, device.connect_timeout_s) == ("pi", 22, 3)


# --- judge rubric and eval suite YAML ---------------------------------------------------------------------

def rubric_variants() -> dict[str, bytes | None]:
    """The shipped reference-match rubric, cut or with one field wrong (None: the file does not exist)."""
    from edgetune.evals.suites import EVALS_DIR

    real = (EVALS_DIR / "judge" / "reference-match.yaml").read_bytes()
    single = real.index(b"single:")
    return {
        "binary": b"\x00\xff\xfe" * 20,
        "cut inside a template": real[: real.index(b"{reference}", single) + len(b"{reference}")],
        "cut before the templates": real[:single],
        "a list": b"- reference-match\n",
        "unknown key": real + b"colour: red\n",
        "version not a number": real.replace(b"version: 1", b"version: one"),
        "unknown placeholder": real.replace(b"{answer}", b"{answer} {score}", 1),
        "missing": None,
    }


@pytest.mark.parametrize("name", list(rubric_variants()))
def test_bad_rubric_fails_before_training(run, tmp_path, colour_jsonl, edgetune_home, llama_tools, monkeypatch,
                                          name):
    """eval.judge_rubric is read at judge time, after training and export: build checks it first."""
    content = rubric_variants()[name]
    rubric = tmp_path / "rubric.yaml"
    if content is not None:
        rubric.write_bytes(content)
    cfg = tmp_path / "edgetune.yaml"
    cfg.write_text(yaml.safe_dump({"eval": {"judge_rubric": str(rubric), "judge_items": 4}}))
    monkeypatch.setenv("EDGETUNE_HOME", str(edgetune_home))
    line = one_error(run("build", "-c", cfg, "--data", colour_jsonl, "--out", "out"), 2)
    assert "rubric" in line, line
    assert not list(Path("out").glob("store/*/*")), "nothing is built before the rubric is read"


def test_suite_yaml_cut_and_garbled_is_a_config_error(tmp_path):
    """Suite files are read by the loader alone (no command takes one yet): every shipped suite cut every 7 bytes,
    and garbled, either loads (a cut can leave a shorter valid suite) or raises ConfigError with a one-line
    message; never another exception. The garbled ones must all be refused."""
    from edgetune.errors import ConfigError
    from edgetune.evals.suites import EVALS_DIR, load_suite

    folder = tmp_path / "suites"
    shutil.copytree(EVALS_DIR / "suites", folder)
    refused = 0
    for real in sorted(folder.glob("*.yaml")):
        text = real.read_bytes()
        garbled = [b"\x00\xff\xfe" * 9, b"- a list\n", text + b"colour: red\n", text.replace(b"name:", b"name: [", 1),
                   text.replace(b"description:", b"description: {x: 1}\nx_description:", 1)]
        for n, variant in enumerate([text[:i] for i in range(0, len(text), 7)] + garbled):
            path = folder / f"variant-{n}.yaml"
            path.write_bytes(variant)
            try:
                load_suite(path)
            except ConfigError as exc:
                refused += 1
                assert exc.message and "\n" not in str(exc), (real.name, n, str(exc))
            else:
                assert variant not in garbled, (real.name, variant[:40])
    assert refused > 50
