"""Add edgetune's own keys (provenance) to a GGUF file.

llama.cpp's converter honours only a fixed list of `general.*` override keys, so keys under `edgetune.` are
added afterwards by rewriting the file with the gguf package: every existing key and tensor is copied
unchanged, the new string keys are appended. llama.cpp's quantizer copies all keys of its source, so adding
them to the F16 file carries them into every quantized file. Writes through a temp file; raises ExportError.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from edgetune.errors import ExportError
from edgetune.export.inspect import read_gguf

log = logging.getLogger(__name__)

PREFIX = "edgetune."


def add_string_keys(path: Path, keys: Mapping[str, str]) -> None:
    """Rewrite `path` in place with the extra `edgetune.*` string keys (replacing ones already there)."""
    from gguf import Keys

    # general.* keys llama.cpp's converter cannot take from its override file but that we know (the base's
    # licence)
    extra_keys = {Keys.General.LICENSE}
    bad = [k for k in keys if not k.startswith(PREFIX) and k not in extra_keys]
    if bad:
        raise ExportError(f"refusing to write GGUF keys outside {PREFIX}*: {bad}", "prefix them with edgetune.")
    rewrite_string_keys(path, keys)
    log.info("added %d edgetune keys to %s", len(keys), path.name)


def rewrite_string_keys(path: Path, keys: Mapping[str, str]) -> None:
    """Rewrite `path` in place (temp file, then rename) with `keys` as string values, replacing those keys
    where the file has them; every other key and every tensor unchanged. No check on the names."""
    from gguf import GGUFValueType, GGUFWriter, Keys

    reader = read_gguf(path)
    arch = reader.fields[Keys.General.ARCHITECTURE].contents()
    fd, tmp_name = tempfile.mkstemp(prefix=".edgetune-meta-", suffix=".gguf.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
        alignment = reader.fields.get(Keys.General.ALIGNMENT)
        if alignment is not None:
            writer.data_alignment = alignment.contents()
        for name, field in reader.fields.items():
            # the writer adds these itself (arch in the constructor, GGUF.* are file-structure fields)
            if name.startswith("GGUF.") or name == Keys.General.ARCHITECTURE or name in keys:
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
        for name, value in keys.items():
            writer.add_key_value(name, value, GGUFValueType.STRING)
        for tensor in reader.tensors:
            writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                                   tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            writer.write_tensor_data(tensor.data)
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
