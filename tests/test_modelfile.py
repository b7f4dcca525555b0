"""Ollama Modelfiles of real bundles: the TEMPLATE renders every test conversation exactly as the GGUF's own Jinja
chat template does, stops and context are the GGUF's and the target's, x86 bundles get them too, the ADAPTER
variant names the LoRA GGUF, and an untranslatable template is refused with its reason in the file and manifest.

Jinja renders through transformers; the Go side through edgetune.gotemplate (Ollama itself cannot run here). The
bundled GGUFs are also loaded by llama.cpp twice: by llama-cpp-python (the installed build) and by the native
llama-server that scripts/build-llama-tools.sh builds separately from the same llama-cpp-python sdist (cached under
EDGETUNE_HOME), whose own Jinja engine renders the GGUF's template (/apply-template) to the same text as the
Modelfile's TEMPLATE."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgetune import bundle
from edgetune.artifacts import Store
from edgetune.constants import MANIFEST_FILE, Quant
from edgetune.export.inspect import field_value, read_gguf
from edgetune.modelfile import SUFFIX, modelfile
from edgetune.ollama_template import CONVERSATIONS, go_render, jinja_render
from edgetune.outputs import GGUFFile
from edgetune.targets import get_target

# beyond the translator's own set: a long multi-turn chat, a system prompt with Jinja-looking text
EXTRA = (
    (("system", "{% raw %}not jinja{% endraw %}"), ("user", "a"), ("assistant", "b"), ("user", "c"),
     ("assistant", "d"), ("user", "e")),
    (("user", "only\n\nnewlines\n"), ("assistant", "")),
)


def template_of(text: str) -> str:
    found = re.search(r'^TEMPLATE """(.*?)"""$', text, re.DOTALL | re.MULTILINE)
    assert found, text
    return found.group(1)


def gguf_template(path: Path) -> tuple[str, str]:
    from gguf import Keys

    reader = read_gguf(path)
    tokens = field_value(reader, Keys.Tokenizer.LIST)
    return field_value(reader, Keys.Tokenizer.CHAT_TEMPLATE), tokens[field_value(reader, Keys.Tokenizer.BOS_ID)]


def assert_renders_like_the_gguf(modelfile_text: str, gguf: Path) -> None:
    go = template_of(modelfile_text)
    jinja, bos = gguf_template(gguf)
    for conv in (*CONVERSATIONS, *EXTRA):
        last_assistant = conv[-1][0] == "assistant"
        want = jinja_render(jinja, conv, bos_token=bos, generation_prompt=not last_assistant,
                            continue_final=last_assistant)
        assert go_render(go, conv) == want, conv


@pytest.fixture(scope="module")
def x86_bundle(tiny_bundle, tmp_path_factory):
    """The tiny GGUFs bundled for the x86 host target (no cross-built runtime)."""
    store = Store(tiny_bundle.path.parents[1])
    ggufs = {Quant(q): GGUFFile.of(store.lookup("gguf", key)) for q, key in tiny_bundle.record["inputs"].items()}
    art = bundle.run(get_target("x86_64-host"), ggufs, {}, tiny_bundle.record["params"]["llama_cpp"],
                     Store(tmp_path_factory.mktemp("x86") / "store"), model_name="tiny",
                     file_stems={Quant.Q4_0: "Tiny-2M-colours-Q4_0"})
    return art.bundle_dir


@pytest.mark.parametrize("which", ["rpi5", "x86"])
def test_every_bundle_has_modelfiles_whose_template_renders_like_the_gguf(which, tiny_bundle, x86_bundle):
    root = tiny_bundle.bundle_dir if which == "rpi5" else x86_bundle
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    assert len(manifest["models"]) == 2
    for model in manifest["models"]:
        gguf = root / model["file"]
        assert model["modelfile"] == model["file"].removesuffix(".gguf") + SUFFIX
        assert model["modelfile_template"] == "translated"
        text = (root / model["modelfile"]).read_text()
        assert f"FROM ./{gguf.name}\n" in text
        assert f"PARAMETER num_ctx {get_target('rpi5' if which == 'rpi5' else 'x86_64-host').context_length}\n" \
            in text
        assert 'PARAMETER stop "<|im_end|>"' in text  # SmolLM2's EOS, read from the GGUF
        assert_renders_like_the_gguf(text, gguf)
    if which == "x86":  # names given by the caller (llama.cpp's convention in a build), the default otherwise
        assert [m["file"] for m in manifest["models"]] == ["models/Tiny-2M-colours-Q4_0.gguf", "models/tiny-Q8_0.gguf"]
    bundle.verify_bundle(root)


def test_bundled_ggufs_load_in_llama_cpp_with_that_template(tiny_bundle):
    from llama_cpp import Llama

    root = tiny_bundle.bundle_dir
    for model in json.loads((root / MANIFEST_FILE).read_text())["models"]:
        llm = Llama(str(root / model["file"]), n_ctx=64, verbose=False)
        jinja, _ = gguf_template(root / model["file"])
        assert llm.metadata["tokenizer.chat_template"] == jinja
        llm.close()


@contextmanager
def native_server(server: Path, gguf: Path, log: Path) -> Iterator[str]:
    """llama.cpp's own llama-server on `gguf`, on a free loopback port; yields its base URL, stops it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("w") as out:
        proc = subprocess.Popen([str(server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c", "256",
                                 "-t", "1", "--jinja"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"llama-server exited {proc.returncode}:\n{log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"llama-server did not become healthy:\n{log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_native_llama_cpp_build_renders_the_modelfile_prompts(tiny_bundle, llama_tools, tmp_path):
    """llama.cpp built apart from llama-cpp-python (same sdist, cmake, cached) loads every bundled GGUF, reports
    its chat template, and renders each conversation that asks for a reply exactly as the Modelfile's TEMPLATE."""
    root = tiny_bundle.bundle_dir
    server = llama_tools.tool("llama-server")
    asking = [c for c in (*CONVERSATIONS, *EXTRA) if c[-1][0] == "user"]
    assert len(asking) >= 4
    for model in json.loads((root / MANIFEST_FILE).read_text())["models"]:
        gguf = root / model["file"]
        go = template_of((root / model["modelfile"]).read_text())
        with native_server(server, gguf, tmp_path / f"{model['quant']}.log") as url:
            with urllib.request.urlopen(url + "/props", timeout=30) as resp:
                props = json.loads(resp.read())
            assert props["chat_template"] == gguf_template(gguf)[0]
            for conv in asking:
                messages = [{"role": r, "content": c} for r, c in conv]
                assert post_json(url + "/apply-template", {"messages": messages})["prompt"] == go_render(go, conv), \
                    (model["quant"], conv)


def test_embedded_default_gguf_template_renders_like_native_llama_cpp(smollm2_gguf, llama_tools, tmp_path):
    """The default build's GGUFs carry the embedded SmolLM2's chat template (ChatML with a default system turn):
    its Modelfile TEMPLATE renders every conversation as transformers' Jinja does, and those asking for a reply as
    the native llama-server does."""
    made = modelfile(smollm2_gguf, num_ctx=2048)
    assert made.template_refused is None and 'PARAMETER stop "<|im_end|>"' in made.text
    assert_renders_like_the_gguf(made.text, smollm2_gguf)
    go = template_of(made.text)
    with native_server(llama_tools.tool("llama-server"), smollm2_gguf, tmp_path / "server.log") as url:
        for conv in (c for c in (*CONVERSATIONS, *EXTRA) if c[-1][0] == "user"):
            messages = [{"role": r, "content": c} for r, c in conv]
            assert post_json(url + "/apply-template", {"messages": messages})["prompt"] == go_render(go, conv), conv


def test_adapter_variant_names_the_lora_gguf_and_the_base(tiny_gguf, tmp_path):
    lora = tmp_path / "adapters" / "Tiny-2M-colours-F16-LoRA.gguf"
    made = modelfile(tiny_gguf, num_ctx=512, adapter=lora, from_ref="./Tiny-2M-Q4_0.gguf")
    lines = made.text.splitlines()
    assert "FROM ./Tiny-2M-Q4_0.gguf" in lines and "ADAPTER ./Tiny-2M-colours-F16-LoRA.gguf" in lines
    assert lines.index("FROM ./Tiny-2M-Q4_0.gguf") < lines.index("ADAPTER ./Tiny-2M-colours-F16-LoRA.gguf")
    assert made.template_refused is None
    assert_renders_like_the_gguf(made.text, tiny_gguf)


def test_untranslatable_template_is_refused_with_the_reason(tiny_gguf, tmp_path, caplog):
    """A GGUF whose template trims contents: no TEMPLATE, the reason in the file and in the result."""
    from gguf import Keys

    gguf = tmp_path / "trims.gguf"
    gguf.write_bytes(tiny_gguf.read_bytes())
    jinja, _ = gguf_template(tiny_gguf)
    trimmed = jinja.replace("message['content']", "message['content'] | trim")
    assert trimmed != jinja
    _rewrite_template(gguf, trimmed)
    assert field_value(read_gguf(gguf), Keys.Tokenizer.CHAT_TEMPLATE) == trimmed
    made = modelfile(gguf, num_ctx=512)
    assert made.template_refused is not None and "differently" in made.template_refused
    assert "TEMPLATE" not in made.text.replace("No TEMPLATE", "")
    assert f"# No TEMPLATE: {made.template_refused}." in made.text
    assert "no TEMPLATE" in caplog.text


def _rewrite_template(path: Path, template: str) -> None:
    from gguf import Keys

    from edgetune.export.metadata import rewrite_string_keys

    rewrite_string_keys(path, {Keys.Tokenizer.CHAT_TEMPLATE: template})
