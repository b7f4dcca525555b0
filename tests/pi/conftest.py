"""The emulated Raspberry Pi 5: an arm64 Debian 12 rootfs (scripts/setup-pi-emulation.sh; a cached tarball, so
seconds after the first time) unpacked into a temp folder, entered with chroot through binfmt_misc + qemu-user
with QEMU_CPU=cortex-a76, so an instruction a Pi 5 lacks raises SIGILL as on the board. The bundle under test
carries llama.cpp cross-built by scripts/cross-build-llama.sh for the rpi5 profile's -mcpu.

The rootfs's own arm64 OpenSSH server (pi_sshd) runs the same way, in its own network namespace behind a veth
pair (or on 127.0.0.1 where namespaces are not permitted), so `edgetune deploy` and `edgetune eval` reach the
emulated board over a real SSH link, and every command a session starts runs as a Cortex-A76 too.

/proc/cpuinfo: this host's qemu-user (7.2) shows the host's own x86 cpuinfo to the guest (qemu 8.1+ emulates
it). Each chroot therefore gets, bind-mounted over /proc/cpuinfo, the text the arm64 kernel would print, made
by a probe that runs under the emulation and reads the emulated CPU's MIDR_EL1 and HWCAPs (`cpuinfo.c`): the
runner then identifies the core from the CPU part exactly as on a board.

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
TEST_ETC = "/etc/edgetune-test"  # inside the rootfs: the emulated cpuinfo, sshd's config and keys
CPUINFO = f"{TEST_ETC}/cpuinfo"
# Enter the rootfs in a private mount namespace: /proc, /dev (and any tmpfs) are mounted for this command only
# and vanish with it, so nothing leaks onto the host even when a test is killed; no core files from the SIGILL
# probes. The emulated CPU's cpuinfo, once made (pi_probes), covers the host's.
ENTER = ('ulimit -c 0; r=$1; shift; mount -t proc proc "$r/proc" && '
         f'{{ [ ! -f "$r{CPUINFO}" ] || mount --bind "$r{CPUINFO}" "$r/proc/cpuinfo"; }} && '
         'mount --rbind /dev "$r/dev" && {tmpfs}exec chroot "$r" "$@"')


def enter_argv(root: Path, argv, *, netns: str | None = None, tmpfs: dict[str, str] | None = None) -> list[str]:
    """The command line that runs `argv` inside the rootfs (in network namespace `netns`, with a tmpfs of the
    given size on each rootfs path of `tmpfs`: a small disk for this command's processes only)."""
    mounts = "".join(f'mount -t tmpfs -o size={size} tmpfs "$r{path}" && ' for path, size in (tmpfs or {}).items())
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return [*prefix, "unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER.replace("{tmpfs}", mounts),
            "sh", str(root), *map(str, argv)]


def pi_run(root: Path, *argv, qemu_cpu: str = "cortex-a76", timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run `argv` inside the rootfs, every aarch64 program in it emulated as `qemu_cpu` (its /proc/cpuinfo, once
    pi_probes made it, still describes the Cortex-A76)."""
    return subprocess.run(enter_argv(root, argv), env={**PI_ENV, "QEMU_CPU": qemu_cpu}, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


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
def pi_runtime(pi_rootfs_tarball, cross_runtime):
    """The cross-built llama.cpp for the Pi 5's -mcpu (tests/conftest.py), once the machine can emulate a Pi."""
    return cross_runtime


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
    from edgetune.outputs import GGUFFile

    store = Store(tmp_path_factory.mktemp("pi-store"))
    params, inputs = {"quant": "F16", "name": "varied"}, {"source": sha256_file(varied_gguf)}
    with store.build(export.KIND, stage_key(export.KIND, params, inputs), params, inputs) as b:
        shutil.copy2(varied_gguf, b.path / export.FILE)
        GGUFFile.write(b, quant="F16", size_bytes=varied_gguf.stat().st_size, sha256=sha256_file(varied_gguf))
    ggufs = export.quantize(GGUFFile.of(b.artifact), [Quant.Q4_0, Quant.Q8_0], llama_tools, store, threads=1)
    art = bundle.run(pi_target, ggufs, {"base": {"source": str(varied_gguf)}},
                     {"llama-cpp-python": llama_tools.version, "llama.cpp": llama_tools.revision}, store,
                     model_name="varied", runtime=True, suite_rows=pi_suite_rows, home=edgetune_home)
    src = art.path / art.outputs["bundle"]
    shutil.copytree(src, pi_root / "opt" / "bundle")
    return src


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# One instruction per feature, in a static aarch64 program: (-march, instruction, does a Pi 5 have it)
PROBES = {
    "dotprod": ("armv8.2-a+dotprod", "sdot v0.4s, v1.16b, v2.16b", True),
    "sve": ("armv8.2-a+sve", "cntb x0", False),
    "i8mm": ("armv8.6-a+i8mm", "smmla v0.4s, v1.16b, v2.16b", False),
}


@pytest.fixture(scope="session")
def pi_probes(pi_root, pi_runtime) -> dict[str, str]:
    """Static aarch64 programs (gcc-aarch64-linux-gnu came with the cross-build) in /opt/probes: one per PROBES
    feature, and `cpuinfo` (cpuinfo.c). Also writes the emulated CPU's cpuinfo, as cpuinfo prints it under
    QEMU_CPU=cortex-a76, to CPUINFO: every later chroot sees it as /proc/cpuinfo."""
    out = pi_root / "opt" / "probes"
    out.mkdir(parents=True, exist_ok=True)
    sources = {name: f'int main(void) {{ __asm__ volatile("{insn}" ::: "x0", "v0"); return 0; }}\n'
               for name, (_, insn, _) in PROBES.items()}
    sources["cpuinfo"] = (Path(__file__).parent / "cpuinfo.c").read_text()
    paths = {}
    for name, text in sources.items():
        (out / f"{name}.c").write_text(text)
        march = PROBES[name][0] if name in PROBES else "armv8-a"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O1", f"-march={march}", "-o", str(out / name),
                        str(out / f"{name}.c")], check=True, capture_output=True)
        paths[name] = f"/opt/probes/{name}"
    made = pi_run(pi_root, paths["cpuinfo"])
    assert made.returncode == 0 and "CPU part" in made.stdout, made.stderr
    (pi_root / CPUINFO.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (pi_root / CPUINFO.lstrip("/")).write_text(made.stdout)
    return paths


@pytest.fixture(scope="session")
def pi_jobs(pi_bundle, pi_root, pi_probes) -> dict[str, tuple[Path, Path]]:
    """The runner, inside the emulated Pi (chroot, no SSH), over each bundled model (server and suite: the
    bundle's defaults): {quant: (host path of the job folder, the bundle's GGUF)}."""
    manifest = json.loads((pi_bundle / "manifest.json").read_text())
    jobs = {}
    for model in manifest["models"]:
        job = f"/opt/jobs/{model['quant']}"
        proc = pi_run(pi_root, "python3", "/opt/bundle/runner/edgetune_runner.py", "--job-dir", job,
                      "--model", f"/opt/bundle/{model['file']}", "--threads", 1, "--ctx-size", 512, timeout_s=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.splitlines()[-1])["status"] == "done"
        jobs[model["quant"]] = (pi_root / job.lstrip("/"), pi_bundle / model["file"])
    return jobs


@pytest.fixture(scope="session")
def pi_sshd(pi_root, pi_probes, tmp_path_factory):
    """The rootfs's own arm64 sshd, emulated as a Cortex-A76, at its own address (see pi_sshd.py)."""
    from tests.pi import pi_sshd as sshd

    if not shutil.which("ssh-keygen"):
        pytest.skip("the pi SSH tier needs ssh-keygen (openssh-client): run scripts/setup-test-deps.sh as root")
    assert (pi_root / "usr" / "sbin" / "sshd").is_file(), "the rootfs has no sshd: rerun setup-pi-emulation.sh"
    server = sshd.start(pi_root, tmp_path_factory.mktemp("pi-sshd"))
    try:
        yield server
    finally:
        sshd.shutdown(server)


@pytest.fixture
def home(pi_sshd, tmp_path, monkeypatch) -> Path:
    """HOME with ~/.ssh/id_ed25519 (authorized on the board) and known_hosts pinning the board's host key."""
    home = pi_sshd.user_home(tmp_path / "user")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "edgetune-home"))
    monkeypatch.chdir(tmp_path)
    return home
