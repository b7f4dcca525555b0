"""Read a few metadata keys from a GGUF header without parsing the whole file.

gguf's GGUFReader builds numpy views of every field and tensor, about 2 s for a 49k-token vocabulary: longer than
quantizing SmolLM2. The stages only need a handful of keys (file type, chat template, EOS id), so this streams the
key/value section and stops once it has them. Little-endian GGUF v2/v3 only; anything else raises ExportError
and callers fall back to GGUFReader-based tools. Format: llama.cpp's docs/gguf.md.

`check_layout` walks the whole header (every key/value and tensor info) and checks that each tensor's data lies
inside the file: what `inspect.read_gguf` runs before GGUFReader, so a cut or garbled file fails in one line, in
milliseconds, and never reaches a parser that answers with struct or numpy errors.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from edgetune.errors import ExportError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


_HINT = "the file is truncated or corrupt: export it again, or copy it again if a transfer was cut"
_MAX_DIMS = 4  # GGML_MAX_DIMS


def _read(fh: BinaryIO, n: int, what: str = "header") -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ExportError(f"{getattr(fh, 'name', 'GGUF')} is truncated in its {what}", _HINT)
    return data


def _string(fh: BinaryIO, what: str = "header") -> str:
    (n,) = struct.unpack("<Q", _read(fh, 8, what))
    if n > os.fstat(fh.fileno()).st_size:  # a garbled length: read() would try to allocate it
        raise ExportError(f"{getattr(fh, 'name', 'GGUF')} is truncated in its {what}", _HINT)
    return _read(fh, n, what).decode("utf-8", errors="replace")


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


def _start(fh: BinaryIO, path: Path) -> tuple[int, int]:
    """(tensor count, key/value count) after checking the magic and version."""
    magic, version = struct.unpack("<4sI", _read(fh, 8))
    if magic != b"GGUF" or version not in (2, 3):
        raise ExportError(f"{path} is not a little-endian GGUF v2/v3 file", "export the file again")
    n_tensors, n_kv = struct.unpack("<QQ", _read(fh, 16))
    return n_tensors, n_kv


def read_keys(path: Path, keys: Iterable[str]) -> dict[str, Any]:
    """The values of `keys` present in the header of `path` (absent keys are left out)."""
    wanted, found = set(keys), {}
    with open(path, "rb") as fh:
        _, n_kv = _start(fh, path)
        for _ in range(n_kv):
            key = _string(fh)
            (vtype,) = struct.unpack("<I", _read(fh, 4))
            value = _value(fh, vtype, keep=key in wanted)
            if key in wanted:
                found[key] = value
                if len(found) == len(wanted):
                    break
    return found



class _Cursor:
    """A read position over the mapped file; every read is bounds-checked, so a cut names what it cut."""

    def __init__(self, buf: Any, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str, what: str) -> tuple[Any, ...]:
        n = struct.calcsize(fmt)
        if self.pos + n > len(self.buf):
            raise ExportError(f"{self.path} is truncated in its {what}", _HINT)
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return values

    def skip(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise ExportError(f"{self.path} is truncated in its {what}", _HINT)
        self.pos += n

    def string(self, what: str) -> str:
        (n,) = self.take("<Q", what)
        start = self.pos
        self.skip(n, what)
        return bytes(self.buf[start:self.pos]).decode("utf-8", errors="replace")

    def value(self, vtype: int, key: str) -> Any:
        what = f"metadata ({key})"
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype], what)[0]
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            etype, count = self.take("<IQ", what)
            if etype in _SCALARS:
                self.skip(struct.calcsize(_SCALARS[etype]) * count, what)
            else:
                for _ in range(count):  # strings (a vocabulary) or nested arrays: each item in turn
                    self.value(etype, key)
            return None
        raise ExportError(f"{self.path}: metadata {key} has unknown value type {vtype}", _HINT)


def check_layout(path: Path) -> int:
    """Walk the whole header of `path` and check that every tensor's data ends inside the file; returns the
    number of tensors. Raises ExportError naming the part that is cut or garbled."""
    import mmap

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType  # numpy-heavy: only when a file is checked

    path = Path(path)
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:  # mmap refuses an empty file
            raise ExportError(f"{path} is not a readable GGUF file: it is empty", _HINT)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _walk(_Cursor(buf, path), GGML_QUANT_SIZES, GGMLQuantizationType)


def _walk(cur: _Cursor, sizes: Any, types: Any) -> int:
    path, size_bytes = cur.path, len(cur.buf)
    head = bytes(cur.buf[:4])
    if not b"GGUF".startswith(head):
        raise ExportError(f"{path} is not a readable GGUF file: it starts with {head!r}, not b'GGUF'",
                          "give a .gguf file made by llama.cpp or edgetune")
    _, version = cur.take("<4sI", "header")
    if version not in (2, 3):
        raise ExportError(f"{path} is not a readable GGUF file: version {version} (edgetune reads 2 and 3)",
                          "export the file again with this llama.cpp")
    n_tensors, n_kv = cur.take("<QQ", "header")
    alignment = 32  # GGUF's default; general.alignment overrides it
    for i in range(n_kv):  # an absurd count runs out of bytes at once
        key = cur.string(f"metadata (key {i} of {n_kv})")
        (vtype,) = cur.take("<I", f"metadata ({key})")
        value = cur.value(vtype, key)
        if key == "general.alignment" and isinstance(value, int) and value > 0:
            alignment = value
    ends = []
    for i in range(n_tensors):
        what = f"tensor info {i} of {n_tensors}"
        name = cur.string(what)
        (n_dims,) = cur.take("<I", what)
        if n_dims > _MAX_DIMS:
            raise ExportError(f"{path}: tensor {name!r} has {n_dims} dimensions (at most {_MAX_DIMS})", _HINT)
        dims = cur.take(f"<{n_dims}Q", what)
        ttype, offset = cur.take("<IQ", what)
        try:
            block, type_size = sizes[types(ttype)]
        except (ValueError, KeyError):
            raise ExportError(f"{path}: tensor {name!r} has unknown type {ttype}", _HINT) from None
        n = 1
        for d in dims:
            n *= d
        ends.append(offset + n // block * type_size)
    data_start = -(-cur.pos // alignment) * alignment
    data_end = data_start + max(ends, default=0)
    if data_end > size_bytes:
        raise ExportError(f"{path} is truncated: its tensors need {data_end} bytes, the file has {size_bytes}", _HINT)
    return n_tensors
