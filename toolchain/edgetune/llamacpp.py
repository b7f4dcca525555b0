"""llama.cpp's own Python tools (converter, vendored gguf-py) at the exact revision the installed
llama-cpp-python was built from.

The wheel carries only shared libraries, so the converter comes from the same release's sdist, fetched with pip
at set-up time and unpacked into `$EDGETUNE_HOME/llama.cpp/<version>/`. Nothing of it is committed here. The
converter needs its vendored gguf-py (newer than PyPI's gguf), so it always runs with that on PYTHONPATH.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgetune.errors import ToolError
from edgetune.proc import run_tool

log = logging.getLogger(__name__)

PACKAGE = "llama-cpp-python"
# What we take from the sdist's vendor/llama.cpp: the converters, their modules and gguf-py.
_KEEP = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
_READY = "edgetune-tools.json"


@dataclass(frozen=True)
class LlamaCppTools:
    root: Path
    version: str
    revision: str

    @property
    def converter(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    @property
    def lora_converter(self) -> Path:
        return self.root / "convert_lora_to_gguf.py"

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def tool(self, name: str) -> Path:
        """A native llama.cpp tool (llama-quantize, llama-imatrix, ...) built by scripts/build-llama-tools.sh."""
        path = self.bin_dir / name
        if not path.is_file():
            raise ToolError(f"llama.cpp tool {name} is not built for llama-cpp-python {self.version}",
                            "run scripts/build-llama-tools.sh (scripts/setup.sh does it)")
        return path

    def env(self) -> dict[str, str]:
        """Environment for running the converter: its own gguf-py first, no network for tokenizers."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.gguf_py), env.get("PYTHONPATH")]))
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["NO_LOCAL_GGUF"] = ""  # let the converter import the vendored gguf-py we put on PYTHONPATH
        return env


def installed_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise ToolError(f"{PACKAGE} is not installed", "run scripts/setup.sh") from exc


def tools_dir(home: Path, version: str | None = None) -> Path:
    return Path(home) / "llama.cpp" / (version or installed_version())


def load_tools(home: Path) -> LlamaCppTools:
    """The set-up tools for the installed llama-cpp-python, or a ToolError saying how to set them up."""
    version = installed_version()
    root = tools_dir(home, version)
    ready = root / _READY
    if not ready.is_file():
        raise ToolError(
            f"llama.cpp converter for {PACKAGE} {version} is not set up in {root}",
            "run `edgetune setup` (scripts/setup.sh does it)",
        )
    info = json.loads(ready.read_text())
    return LlamaCppTools(root=root, version=version, revision=info["revision"])


def setup_tools(home: Path, sdist: Path | None = None) -> LlamaCppTools:
    """Fetch the sdist of the installed llama-cpp-python (or use `sdist`) and unpack the converter."""
    version = installed_version()
    root = tools_dir(home, version)
    if (root / _READY).is_file():
        return load_tools(home)
    with tempfile.TemporaryDirectory(prefix="edgetune-sdist-") as tmp:
        if sdist is None:
            run_tool(
                [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                 f"{PACKAGE}=={version}", "-d", tmp],
                hint="the PyPI registry must be reachable once, at set-up time",
            )
            found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            if not found:
                raise ToolError(f"pip downloaded no sdist for {PACKAGE}=={version}")
            sdist = found[0]
        staging = root.with_name(f".{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            revision = _extract(Path(sdist), staging)
            (staging / _READY).write_text(json.dumps({"version": version, "revision": revision}) + "\n")
            shutil.rmtree(root, ignore_errors=True)
            root.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("llama.cpp tools %s set up in %s", version, root)
    return load_tools(home)


def _extract(sdist: Path, dest: Path) -> str:
    """Unpack the kept files of vendor/llama.cpp safely; return the vendored llama.cpp commit."""
    revision = "unknown"
    with tarfile.open(sdist, "r:gz") as tar:
        members = tar.getmembers()
        top = members[0].name.split("/")[0]
        vendor = f"{top}/vendor/llama.cpp/"
        head = f"{top}/.git/modules/vendor/llama.cpp/HEAD"
        keep = []
        for m in members:
            if m.name == head and m.isfile():
                revision = tar.extractfile(m).read().decode().strip()
            if not m.name.startswith(vendor):
                continue
            rel = m.name[len(vendor):]
            if any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in _KEEP):
                m = m.replace(name=rel)
                keep.append(m)
        dest.mkdir(parents=True)
        # the "data" filter refuses links leaving the folder, absolute paths and device files
        tar.extractall(dest, members=keep, filter="data")
    if not (dest / "convert_hf_to_gguf.py").is_file():
        raise ToolError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
    return revision
