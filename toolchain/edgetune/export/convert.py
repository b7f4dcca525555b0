"""Convert a Hugging Face model folder to GGUF with llama.cpp's own converter, then check the result.

Reads `model_dir` (config.json, *.safetensors, tokenizer files). Runs `convert_hf_to_gguf.py` from the
llama.cpp tools set up for the installed llama-cpp-python (with their vendored gguf-py) through
`proc.run_tool`. Writes the GGUF through a temp file in the destination folder and renames it into place
only after it reads back with the tokenizer's chat template and EOS id; a failed or rejected conversion
leaves nothing behind. Raises ExportError.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetune.errors import ExportError
from edgetune.export.gguf_header import read_keys
from edgetune.export.quantize import check_free_space
from edgetune.llamacpp import LlamaCppTools
from edgetune.proc import run_tool

log = logging.getLogger(__name__)

# The converter's --outtype choices (tq1_0/tq2_0 are for ternary models only; 4-bit types come from quantize).
OUTTYPES = ("f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0", "auto")

# Lists of {name, author, version, organization, description, url, doi, uuid, repo_url} entries.
_ENTRY_FIELDS = frozenset({"name", "author", "version", "organization", "description", "url", "doi", "uuid",
                           "repo_url"})


@functools.cache
def metadata_keys() -> dict[str, str]:
    """Key → kind of value (str, str_list, entry_list, int, float) of the keys the converter's --metadata
    override file honours (gguf-py metadata.py at the pinned revision). It silently ignores every other key,
    so we reject those instead of losing them. Note: plain `general.license` is not among them; llama.cpp
    takes it only from the model card's front matter."""
    from gguf import Keys

    g = Keys.General
    kinds = dict.fromkeys((
        g.NAME, g.AUTHOR, g.VERSION, g.ORGANIZATION, g.FINETUNE, g.BASENAME, g.DESCRIPTION, g.QUANTIZED_BY,
        g.SIZE_LABEL, g.LICENSE_NAME, g.LICENSE_LINK, g.URL, g.DOI, g.UUID, g.REPO_URL, g.SOURCE_URL,
        g.SOURCE_DOI, g.SOURCE_UUID, g.SOURCE_REPO_URL, g.SAMPLING_SEQUENCE), "str")
    kinds.update(dict.fromkeys((g.TAGS, g.LANGUAGES), "str_list"))
    # the override file's own names for entry lists: gguf.Keys has only the keys they expand to
    # (general.base_model.{id}.name, ...)
    kinds.update(dict.fromkeys(("general.base_models", "general.datasets"), "entry_list"))
    kinds.update(dict.fromkeys((g.SAMPLING_TOP_K, g.SAMPLING_PENALTY_LAST_N, g.SAMPLING_MIROSTAT), "int"))
    kinds.update(dict.fromkeys((
        g.SAMPLING_TOP_P, g.SAMPLING_MIN_P, g.SAMPLING_XTC_PROBABILITY, g.SAMPLING_XTC_THRESHOLD,
        g.SAMPLING_TEMP, g.SAMPLING_PENALTY_REPEAT, g.SAMPLING_MIROSTAT_TAU, g.SAMPLING_MIROSTAT_ETA),
        "float"))
    return kinds


def convert_to_gguf(
    model_dir: Path,
    out_path: Path,
    tools: LlamaCppTools,
    *,
    outtype: str = "f16",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Convert the model in `model_dir` to a GGUF file at `out_path` (replacing one there); return `out_path`.

    `metadata` maps GGUF keys (see metadata_keys(), e.g. general.name, general.license.name,
    general.source.url) to values written by the converter. Raises ExportError for a folder without
    config.json or safetensors weights, an unknown outtype or metadata key, an architecture this llama.cpp
    cannot convert, a converter failure, or a result that lost the chat template or EOS id.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    arch = _check_model_dir(model_dir)
    if outtype not in OUTTYPES:
        raise ExportError(f"unknown GGUF outtype {outtype!r}", f"use one of: {', '.join(OUTTYPES)}")
    overrides = _check_metadata(metadata or {})
    if out_path.is_dir():
        raise ExportError(f"output {out_path} is a folder", "give the path of the .gguf file to write")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    # f16/bf16 halve fp32 weights; bf16/f16 sources stay the same size; q8_0 roughly quarters fp32
    check_free_space(out_path.parent, weights // {"f32": 1, "q8_0": 4}.get(outtype, 2), what=f"{outtype} GGUF")
    # A fixed prefix, not out_path's name: the converter fills "{...}" in its --outfile name as a template.
    fd, tmp_name = tempfile.mkstemp(prefix=".edgetune-convert-", suffix=".gguf.tmp", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    meta_file: Path | None = None
    try:
        argv: list[str | Path] = [sys.executable, tools.converter, model_dir]
        argv += ["--outfile", tmp, "--outtype", outtype]
        if overrides:
            fd, meta_name = tempfile.mkstemp(prefix=".edgetune-convert-", suffix=".json", dir=out_path.parent)
            meta_file = Path(meta_name)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(overrides, fh)
            argv += ["--metadata", meta_file]
        log.info("converting %s (%s) to %s as %s", model_dir, arch, out_path, outtype)
        done = _run_converter(argv, tools, arch)
        for line in done.stderr.splitlines():
            if line.startswith("WARNING:"):
                log.info("converter: %s", line)
        verify_conversion(tmp, model_dir)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
        if meta_file is not None:
            meta_file.unlink(missing_ok=True)
    log.info("wrote %s (%d bytes)", out_path, out_path.stat().st_size)
    return out_path


def verify_conversion(gguf_path: Path, model_dir: Path) -> None:
    """Check that `gguf_path` kept the tokenizer's chat template(s) and EOS id from `model_dir`.

    Reads the GGUF and model_dir's tokenizer_config.json / chat_template.jinja / tokenizer.json.
    Raises ExportError naming what was lost or changed.
    """
    from gguf import Keys

    templates = _expected_chat_templates(model_dir)
    eos_keys = [Keys.Tokenizer.EOS_ID, Keys.Tokenizer.EOT_ID, Keys.Tokenizer.EOM_ID]
    # the header alone: a full GGUFReader parse of a 49k vocabulary costs ~2 s (benchmarks/export.py)
    meta = read_keys(gguf_path, [*templates, *eos_keys])
    for key, expected in templates.items():
        got = meta.get(key)
        if got != expected:
            what = "is missing" if got is None else "differs from the tokenizer's"
            raise ExportError(
                f"{key} in {gguf_path.name} {what} (source: {model_dir})",
                "the converter did not carry the chat template over; check tokenizer_config.json and "
                "chat_template.jinja in the model folder",
            )
    expected_eos = _tokenizer_eos_id(model_dir)
    if expected_eos is None:
        return
    got_eos = meta.get(Keys.Tokenizer.EOS_ID)
    if got_eos == expected_eos:
        return
    # The converter may move the tokenizer's EOS to EOT/EOM when the tokenizer's post-processor ends with a
    # different special token; llama.cpp stops generation on all three, so that keeps stopping correct.
    for key in (Keys.Tokenizer.EOT_ID, Keys.Tokenizer.EOM_ID):
        if meta.get(key) == expected_eos:
            log.warning("the converter set EOS to %s and moved the tokenizer's EOS %s to %s",
                        got_eos, expected_eos, key)
            return
    raise ExportError(
        f"EOS token id in {gguf_path.name} is {got_eos}, the tokenizer's is {expected_eos}",
        "generation would not stop where the model was trained to; check eos_token in tokenizer_config.json",
    )


def _check_model_dir(model_dir: Path) -> str:
    """Fail early on a folder the converter cannot read; return its architecture name."""
    fix = "pass the folder the merge stage wrote, or any model saved with save_pretrained()"
    if not model_dir.is_dir():
        raise ExportError(f"model folder {model_dir} does not exist", fix)
    config = model_dir / "config.json"
    if not config.is_file():
        raise ExportError(f"{model_dir} has no config.json, so it is not a Hugging Face model folder", fix)
    if not any(model_dir.glob("*.safetensors")):
        raise ExportError(
            f"{model_dir} has no *.safetensors weights",
            "save it with save_pretrained() (safetensors is the default); .bin pickles are not accepted",
        )
    try:
        archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or ["unknown"]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ExportError(f"{config} is not a valid JSON object", fix) from exc
    return str(archs[0])


def _check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Validate metadata against what the converter's override file honours (it drops the rest silently)."""
    from gguf import Keys

    kinds = metadata_keys()
    for key, value in metadata.items():
        if key == Keys.General.LICENSE:
            raise ExportError(
                "llama.cpp's converter ignores general.license in its metadata override",
                "pass the licence as general.license.name, and its URL as general.license.link",
            )
        if key not in kinds:
            raise ExportError(
                f"metadata key {key!r} cannot be set at conversion",
                f"llama.cpp's converter accepts only: {', '.join(sorted(kinds))}",
            )
        if not _value_ok(kinds[key], value):
            raise ExportError(f"metadata {key} has an unsupported value {value!r}", _type_hint(kinds[key]))
    # plain dicts so json.dump accepts any Mapping the caller passed
    return {k: [dict(e) for e in v] if kinds[k] == "entry_list" else v for k, v in metadata.items()}


def _value_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "str_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "entry_list":
        return isinstance(value, list) and all(
            isinstance(e, Mapping) and set(e) <= _ENTRY_FIELDS and all(isinstance(v, str) for v in e.values())
            for e in value
        )
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_hint(kind: str) -> str:
    if kind == "str_list":
        return "give a list of strings"
    if kind == "entry_list":
        return f"give a list of objects with string fields among: {', '.join(sorted(_ENTRY_FIELDS))}"
    if kind == "int":
        return "give an integer"
    if kind == "float":
        return "give a number"
    return "give a string"


def _run_converter(
    argv: list[str | Path], tools: LlamaCppTools, arch: str
) -> subprocess.CompletedProcess[str]:
    """Run the converter; map its "Model X is not supported" exit to an error naming arch and revision."""
    hint = f"llama.cpp's converter (llama-cpp-python {tools.version}, llama.cpp {tools.revision[:12]}) failed"
    try:
        return run_tool(argv, env=tools.env(), error=ExportError, hint=hint)
    except ExportError as exc:
        if "is not supported" in exc.message:
            raise ExportError(
                f"llama.cpp {tools.revision[:12]} (llama-cpp-python {tools.version}) cannot convert "
                f"architecture {arch}",
                "use a supported architecture, or a llama-cpp-python release whose llama.cpp supports it",
            ) from exc
        raise


def _expected_chat_templates(model_dir: Path) -> dict[str, str]:
    """GGUF key → template the converter should write, read with the converter's own precedence:
    tokenizer_config.json's chat_template, else chat_template.jinja (+ additional_chat_templates/), else
    chat_template.json."""
    config = _read_json(model_dir / "tokenizer_config.json")
    template: Any = config.get("chat_template")
    jinja = model_dir / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
        extra = sorted((model_dir / "additional_chat_templates").glob("*.jinja"))
        if extra:
            template = [{"name": "default", "template": template}]
            template += [{"name": p.stem, "template": p.read_text(encoding="utf-8")} for p in extra]
    if template is None:
        template = _read_json(model_dir / "chat_template.json").get("chat_template")
    from gguf import Keys

    if isinstance(template, str):
        return {Keys.Tokenizer.CHAT_TEMPLATE: template}
    if isinstance(template, list):
        # Named templates: "default" becomes tokenizer.chat_template, another X tokenizer.chat_template.X.
        entries = [t for t in template if isinstance(t, Mapping) and {"name", "template"} <= set(t)]
        named = {t["name"]: t["template"] for t in entries}
        keys = Keys.Tokenizer
        return {keys.CHAT_TEMPLATE if name == "default" else keys.CHAT_TEMPLATE_N.format(name=name): text
                for name, text in named.items()}
    return {}


def _tokenizer_eos_id(model_dir: Path) -> int | None:
    """The id of tokenizer_config.json's eos_token in tokenizer.json; None when the tokenizer names none."""
    eos = _read_json(model_dir / "tokenizer_config.json").get("eos_token")
    if isinstance(eos, Mapping):
        eos = eos.get("content")
    if not isinstance(eos, str):
        return None
    tokenizer = _read_json(model_dir / "tokenizer.json")
    for token in tokenizer.get("added_tokens", []):
        if token.get("content") == eos:
            return int(token["id"])
    vocab = tokenizer.get("model", {}).get("vocab")
    if isinstance(vocab, Mapping) and eos in vocab:
        return int(vocab[eos])
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], the id is the position
        for i, entry in enumerate(vocab):
            if entry and entry[0] == eos:
                return i
    log.warning("cannot check the EOS id: %r is not in %s/tokenizer.json", eos, model_dir)
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path} is not valid JSON", "fix or re-save the tokenizer files") from exc
    return data if isinstance(data, dict) else {}
