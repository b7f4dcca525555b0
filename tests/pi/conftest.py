"""The emulated Raspberry Pi 5: an arm64 Debian 12 rootfs (scripts/setup-pi-emulation.sh; a cached tarball, so
seconds after the first time) unpacked into a temp folder, entered with chroot through binfmt_misc + qemu-user
with QEMU_CPU=cortex-a76, so an instruction a Pi 5 lacks raises SIGILL as on the board. The bundle under test
carries llama.cpp cross-built by scripts/cross-build-llama.sh for the rpi5 profile's -mcpu.

Functional checks only: under emulation SmolLM2-135M makes ~1 token/s and any speed is meaningless, so these
tests use the tiny GGUFs and assert nothing about timings. Skips, with the reason, where the machine cannot
emulate (not root, binfmt_misc cannot be mounted, the Debian packages cannot be installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import chat_suite_rows

REPO = Path(__file__).resolve().parents[2]
UNSUPPORTED = 77  # scripts/setup-pi-emulation.sh: this machine cannot emulate
QUESTIONS = ["What colour is grass?", "Name a prime number.", "Say hello."]
MAX_TOKENS = 6
PI_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
# Enter the rootfs in a private mount namespace: /proc and /dev are mounted for this command only and vanish
# with it, so nothing leaks onto the host even when a test is killed; no core files from the SIGILL probes.
ENTER = 'ulimit -c 0; r=$1; shift; mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" && exec chroot "$r" "$@"'


def pi_run(root: Path, *argv, qemu_cpu: str = "cortex-a76", timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run `argv` inside the rootfs, every aarch64 program in it emulated as `qemu_cpu`."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, "sh", str(root),
                           *map(str, argv)], env={**PI_ENV, "QEMU_CPU": qemu_cpu}, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def _script(name: str, *args: str, home: Path, timeout_s: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGETUNE_HOME": str(home)}
    return subprocess.run([str(REPO / "scripts" / name), *args], capture_output=True, text=True, env=env,
                          timeout=timeout_s, check=False)


@pytest.fixture(scope="session")
def pi_rootfs_tarball(edgetune_home) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the pi tier needs root (binfmt_misc, chroot, mount namespaces)")
    for tool in ("unshare", "chroot", "tar"):
        if not shutil.which(tool):
            pytest.skip(f"the pi tier needs {tool}")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True,
                           text=True, check=False)
    if probe.returncode != 0:  # e.g. an unprivileged container: root without CAP_SYS_ADMIN
        pytest.skip(f"cannot make a mount namespace (unshare --mount): {probe.stderr.strip()}")
    done = _script("setup-pi-emulation.sh", home=edgetune_home, timeout_s=1800)
    if done.returncode == UNSUPPORTED:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, f"scripts/setup-pi-emulation.sh failed:\n{done.stderr[-2000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def pi_root(tmp_path_factory, pi_rootfs_tarball) -> Path:
    root = tmp_path_factory.mktemp("pi5-root")
    subprocess.run(["tar", "-xzf", str(pi_rootfs_tarball), "-C", str(root)], check=True)
    return root


@pytest.fixture(scope="session")
def pi_target():
    from edgetune.targets import get_target

    return get_target("rpi5")


@pytest.fixture(scope="session")
def pi_runtime(pi_rootfs_tarball, pi_target, edgetune_home):
    """The cross-built llama.cpp for the Pi 5's -mcpu (built here once if missing: 5-12 min on 2 cores)."""
    from edgetune.runtime_build import find_runtime

    done = _script("cross-build-llama.sh", pi_target.cpu.mcpu, home=edgetune_home, timeout_s=3600)
    assert done.returncode == 0, f"scripts/cross-build-llama.sh failed:\n{done.stderr[-2000:]}"
    return find_runtime(edgetune_home, pi_target.arch, pi_target.cpu.mcpu)


@pytest.fixture(scope="session")
def pi_suite_rows(tokenizer_dir) -> list[dict]:
    rows = chat_suite_rows(tokenizer_dir, QUESTIONS, MAX_TOKENS)
    rows.append({"id": "text", "prompt": "Once upon a time", "max_tokens": 3})
    return rows


@pytest.fixture(scope="session")
def pi_bundle(pi_root, pi_runtime, tmp_path_factory, varied_gguf, llama_tools, pi_target, pi_suite_rows,
              edgetune_home) -> Path:
    """A real runtime bundle (Q4_0 + Q8_0 of the varied tiny Llama, cross-built llama.cpp, runner, suite), copied
    into the rootfs at /opt/bundle. Returns its host-side folder."""
    from edgetune import bundle
    from edgetune.artifacts import Store, sha256_file, stage_key
    from edgetune.constants import Quant
    from edgetune.export import stage as export

    store = Store(tmp_path_factory.mktemp("pi-store"))
    params, inputs = {"quant": "F16", "name": "varied"}, {"source": sha256_file(varied_gguf)}
    with store.build(export.KIND, stage_key(export.KIND, params, inputs), params, inputs) as b:
        shutil.copy2(varied_gguf, b.path / export.FILE)
        b.outputs["gguf"] = export.FILE
    ggufs = export.quantize(b.artifact, [Quant.Q4_0, Quant.Q8_0], llama_tools, store, threads=1)
    art = bundle.run(pi_target, ggufs, {"base": {"source": str(varied_gguf)}},
                     {"llama-cpp-python": llama_tools.version, "llama.cpp": llama_tools.revision}, store,
                     model_name="varied", runtime=True, suite_rows=pi_suite_rows, home=edgetune_home)
    src = art.path / art.outputs["bundle"]
    shutil.copytree(src, pi_root / "opt" / "bundle")
    return src


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
