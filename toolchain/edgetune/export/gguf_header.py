"""Read a few metadata keys from a GGUF header without parsing the whole file.

gguf's GGUFReader builds numpy views of every field and tensor, about 2 s for a 49k-token vocabulary: longer than
quantizing SmolLM2. The stages only need a handful of keys (file type, chat template, EOS id), so this streams the
key/value section and stops once it has them. Little-endian GGUF v2/v3 only; anything else raises ExportError
and callers fall back to GGUFReader-based tools. Format: llama.cpp's docs/gguf.md.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from edgetune.errors import ExportError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ExportError(f"{getattr(fh, 'name', 'GGUF')} is truncated in its header", "export the file again")
    return data


def _string(fh: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(fh, 8))
    return _read(fh, n).decode("utf-8", errors="replace")


def _value(fh: BinaryIO, vtype: int, keep: bool) -> Any:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, _read(fh, struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _string(fh)
    if vtype == _ARRAY:
        etype, n = struct.unpack("<IQ", _read(fh, 12))
        if etype in _SCALARS and not keep:  # skip fixed-size arrays in one seek
            fh.seek(struct.calcsize(_SCALARS[etype]) * n, 1)
            return None
        items = [_value(fh, etype, keep) for _ in range(n)]
        return items if keep else None
    raise ExportError(f"unknown GGUF value type {vtype}", "the file is corrupt or from a newer GGUF version")


def read_keys(path: Path, keys: Iterable[str]) -> dict[str, Any]:
    """The values of `keys` present in the header of `path` (absent keys are left out)."""
    wanted, found = set(keys), {}
    with open(path, "rb") as fh:
        magic, version = struct.unpack("<4sI", _read(fh, 8))
        if magic != b"GGUF" or version not in (2, 3):
            raise ExportError(f"{path} is not a little-endian GGUF v2/v3 file", "export the file again")
        _, n_kv = struct.unpack("<QQ", _read(fh, 16))
        for _ in range(n_kv):
            key = _string(fh)
            (vtype,) = struct.unpack("<I", _read(fh, 4))
            value = _value(fh, vtype, keep=key in wanted)
            if key in wanted:
                found[key] = value
                if len(found) == len(wanted):
                    break
    return found
