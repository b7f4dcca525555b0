"""Chat templates for models that ship none (`train.chat_template_fallback`): a built-in name or a .jinja file.

A fallback is used only where the base tokenizer has no template of its own. The train stage stores the text it
trained with in its artifact (`chat_template.jinja`) and the merge stage writes it into the merged tokenizer, so
the merged model, its GGUFs and the board all see the format the adapter learned. Raises TrainError for an
unknown name or an unreadable file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgetune.errors import TrainError

# ChatML: each turn is "<|im_start|>{role}\n{content}<|im_end|>\n"; the generation prompt opens an assistant turn.
CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
# The token a template's assistant turn ends with: where a tokenizer's EOS differs, the model learns to stop at it
END_OF_TURN = {"chatml": "<|im_end|>"}

BUILTIN = {"chatml": CHATML}


def is_builtin(name: str) -> bool:
    return name in BUILTIN


def load(name: str) -> str:
    """The template text of a built-in name or a path to a .jinja file."""
    if name in BUILTIN:
        return BUILTIN[name]
    path = Path(name).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainError(f"train.chat_template_fallback: cannot read {path}: {exc.strerror or exc}",
                         f"give an existing .jinja file or a built-in name ({', '.join(BUILTIN)})") from exc
    if not text.strip():
        raise TrainError(f"train.chat_template_fallback: {path} is empty", "give a Jinja chat template")
    return text


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
