"""Ollama Modelfiles for bundled GGUFs, so a board with Ollama can `ollama create NAME -f models/X.Modelfile`.

Reads the GGUF's tokenizer metadata (token list, EOS and EOT ids) with the gguf package. Writes nothing itself:
`modelfile_text` returns the text the bundle stage places beside each GGUF. The chat template is not copied:
Ollama reads `tokenizer.chat_template` from the GGUF metadata. Raises ExportError on an unreadable GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgetune.export.inspect import field_value, read_gguf

SUFFIX = ".Modelfile"


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


def modelfile_text(gguf_path: Path, *, num_ctx: int) -> str:
    """`FROM ./<file>.gguf`, the context size and one `PARAMETER stop` per end-of-turn token."""
    gguf_path = Path(gguf_path)
    lines = [
        f"# Ollama Modelfile for {gguf_path.name}, written by edgetune.",
        f"#   ollama create {gguf_path.stem.lower()} -f {gguf_path.stem}{SUFFIX}",
        "# No TEMPLATE here on purpose: Ollama reads the chat template from the GGUF's own metadata",
        "# (tokenizer.chat_template), the one the model was fine-tuned with.",
        f"FROM ./{gguf_path.name}",
        f"PARAMETER num_ctx {num_ctx}",
    ]
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stop_tokens(gguf_path)]
    return "\n".join(lines) + "\n"
