"""Reading GGUF files: open one safely and summarise what a deployment needs to know about it.

Reads a GGUF file with the `gguf` package's GGUFReader (memory-mapped, so large files cost little). Writes
nothing. A missing, truncated or corrupt file raises ExportError with a one-line message; GGUFReader's own
errors (numpy reshape and index errors deep in its parser) never reach the user raw.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetune.errors import ExportError

if TYPE_CHECKING:
    from gguf import GGUFReader

log = logging.getLogger(__name__)

# What GGUFReader raises on a short or garbled file (measured by cutting a real GGUF at many offsets):
# ValueError (bad magic, mmap of an empty file, reshape past the end), IndexError (header cut short).
# KeyError/OverflowError: unknown type ids, absurd counts in a garbled header. OSError: unreadable file.
_READ_ERRORS = (ValueError, IndexError, KeyError, OverflowError, OSError)

_EDGETUNE_PREFIX = "edgetune."
_REEXPORT_HINT = "the file is truncated or corrupt: export it again, or copy it again if a transfer was cut"


def read_gguf(path: Path) -> GGUFReader:
    """Open `path` with GGUFReader and check that every tensor's data lies inside the file.

    Raises ExportError when the file is missing, is not GGUF, or is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"GGUF file {path} does not exist", "check the path, or run the export stage first")
    from gguf import GGUFReader  # numpy-heavy: imported only when a file is read

    from edgetune.export.gguf_header import check_layout

    check_layout(path)  # a cut or garbled header fails here, in one line, before GGUFReader's own errors
    try:
        reader = GGUFReader(path)
    except _READ_ERRORS as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"{path} is not a readable GGUF file: {reason}", _REEXPORT_HINT) from exc
    # GGUFReader notices a cut only incidentally (a numpy reshape of a short map fails), so state the
    # invariant ourselves: every tensor's data must end inside the file.
    size_bytes = path.stat().st_size
    data_end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if data_end > size_bytes:
        raise ExportError(
            f"{path} is truncated: its tensors need {data_end} bytes, the file has {size_bytes}",
            _REEXPORT_HINT,
        )
    return reader


def field_value(reader: GGUFReader, key: str) -> Any:
    """The value of metadata `key` as a Python object (str, int, float, list), or None if absent."""
    field = reader.get_field(key)
    return None if field is None else field.contents()


def file_type_name(value: int | None) -> str | None:
    """llama.cpp's name for a `general.file_type` number ("Q4_0", "F16"); the number as text if unknown."""
    if value is None:
        return None
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(value).name
    except ValueError:
        return str(value)
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def inspect_gguf(path: Path) -> dict[str, Any]:
    """Summarise a GGUF file as a JSON-ready dict.

    Keys: path, size_bytes, architecture, name, file_type, n_tensors, tensor_types (count per ggml type),
    context_length, chat_template, bos_token_id, eos_token_id, `general` (every other `general.*` key: basename,
    finetune, size_label, base_model.N.*, datasets.N.*, tags, quantized_by, source.url, license... as llama.cpp's
    naming convention sets them) and every `edgetune.*` key under its own name. Absent metadata is None. Raises ExportError for a missing, truncated or corrupt file.
    """
    from gguf import Keys

    path = Path(path)
    reader = read_gguf(path)
    arch = field_value(reader, Keys.General.ARCHITECTURE)
    tensor_types = Counter(t.tensor_type.name for t in reader.tensors)
    summary: dict[str, Any] = {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "architecture": arch,
        "name": field_value(reader, Keys.General.NAME),
        "file_type": file_type_name(field_value(reader, Keys.General.FILE_TYPE)),
        "n_tensors": len(reader.tensors),
        "tensor_types": dict(sorted(tensor_types.items())),
        "context_length": field_value(reader, Keys.LLM.CONTEXT_LENGTH.format(arch=arch)) if arch else None,
        "chat_template": field_value(reader, Keys.Tokenizer.CHAT_TEMPLATE),
        "bos_token_id": field_value(reader, Keys.Tokenizer.BOS_ID),
        "eos_token_id": field_value(reader, Keys.Tokenizer.EOS_ID),
    }
    shown = {Keys.General.ARCHITECTURE, Keys.General.NAME, Keys.General.FILE_TYPE}
    summary["general"] = {key.removeprefix("general."): field_value(reader, key) for key in reader.fields
                          if key.startswith("general.") and key not in shown}
    for key in reader.fields:
        if key.startswith(_EDGETUNE_PREFIX):
            summary[key] = field_value(reader, key)
    log.debug("inspected %s: %s, %d tensors", path, summary["file_type"], summary["n_tensors"])
    return summary
