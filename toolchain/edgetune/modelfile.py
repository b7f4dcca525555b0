"""Ollama Modelfiles for bundled GGUFs, so a machine with Ollama can `ollama create NAME -f models/X.Modelfile`.

Reads the GGUF's tokenizer metadata (chat template, token list, BOS/EOS/EOT ids) with the gguf package. Writes
nothing itself: `modelfile` returns the text (and what became of the chat template) that the bundle stage places
beside each GGUF. The TEMPLATE is the GGUF's Jinja chat template translated to Ollama's Go template and proven
equal on test conversations (`ollama_template`); Ollama's own guess from the Jinja text is what breaks fine-tunes
with templates it doesn't know. A template that cannot be translated is left out with the reason in the file, a
WARNING and the returned `template_refused` (the bundle manifest records it). Raises ExportError on an unreadable
GGUF.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from edgetune.export.inspect import field_value, read_gguf

log = logging.getLogger(__name__)

SUFFIX = ".Modelfile"


@dataclass(frozen=True)
class Modelfile:
    text: str
    template_refused: str | None  # why the chat template has no TEMPLATE translation; None when it has one


def stop_tokens(gguf_path: Path) -> list[str]:
    """The text of the GGUF's EOS/EOT/EOM tokens, in that order, without repeats: the tokens that end a turn,
    which llama.cpp stops on and Ollama needs as stop strings."""
    from gguf import Keys

    reader = read_gguf(gguf_path)
    tokens = field_value(reader, Keys.Tokenizer.LIST) or []
    stops: list[str] = []
    for key in (Keys.Tokenizer.EOS_ID, Keys.Tokenizer.EOT_ID, Keys.Tokenizer.EOM_ID):
        token_id = field_value(reader, key)
        if isinstance(token_id, int) and 0 <= token_id < len(tokens) and tokens[token_id] not in stops:
            stops.append(tokens[token_id])
    return stops


def template_of(gguf_path: Path) -> tuple[str | None, str | None]:
    """(Go TEMPLATE, None) for the GGUF's chat template, or (None, the one-line reason it has none)."""
    from gguf import Keys

    from edgetune.ollama_template import Untranslatable, translate

    reader = read_gguf(gguf_path)
    jinja = field_value(reader, Keys.Tokenizer.CHAT_TEMPLATE)
    if not jinja:
        return None, "the GGUF has no tokenizer.chat_template"
    tokens = field_value(reader, Keys.Tokenizer.LIST) or []

    def token(key: str) -> str:
        token_id = field_value(reader, key)
        return tokens[token_id] if isinstance(token_id, int) and 0 <= token_id < len(tokens) else ""

    try:
        done = translate(str(jinja), bos_token=token(Keys.Tokenizer.BOS_ID), eos_token=token(Keys.Tokenizer.EOS_ID),
                         add_bos=bool(field_value(reader, Keys.Tokenizer.ADD_BOS)))
    except Untranslatable as exc:
        return None, str(exc)
    if '"""' in done.go_template:
        return None, 'the template contains """, which ends a Modelfile TEMPLATE block'
    return done.go_template, None


def modelfile(gguf_path: Path, *, num_ctx: int, adapter: Path | None = None,
              from_ref: str | None = None) -> Modelfile:
    """`FROM ./<file>.gguf` (or `from_ref`), the context size, one `PARAMETER stop` per end-of-turn token and the
    translated TEMPLATE; with `adapter`, an `ADAPTER` line for that LoRA GGUF (relative to the Modelfile)."""
    gguf_path = Path(gguf_path)
    stem = (adapter.stem if adapter is not None else gguf_path.stem)
    go_template, refused = template_of(gguf_path)
    lines = [
        f"# Ollama Modelfile for {adapter.name if adapter is not None else gguf_path.name}, written by edgetune.",
        f"#   ollama create {stem.lower()} -f {stem}{SUFFIX}",
    ]
    if adapter is not None:
        lines.append("# FROM must be the base model's GGUF the adapter was trained on (sha256 in manifest.json).")
    lines += [f"FROM {from_ref or './' + gguf_path.name}"]
    if adapter is not None:
        lines.append(f"ADAPTER ./{adapter.name}")
    lines.append(f"PARAMETER num_ctx {num_ctx}")
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stop_tokens(gguf_path)]
    if go_template is not None:
        lines.append("# The GGUF's chat template in Ollama's syntax, checked to render the same prompts.")
        lines.append(f'TEMPLATE """{go_template}"""')
    else:
        log.warning("Modelfile for %s: no TEMPLATE, %s; Ollama will guess one from the GGUF", gguf_path.name,
                    refused)
        lines.append(f"# No TEMPLATE: {refused}. Ollama guesses one from the GGUF's chat template: check its prompts.")
    return Modelfile("\n".join(lines) + "\n", refused)


def modelfile_text(gguf_path: Path, *, num_ctx: int) -> str:
    """The Modelfile's text (see `modelfile`)."""
    return modelfile(gguf_path, num_ctx=num_ctx).text
