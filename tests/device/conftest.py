"""A real device for the SSH tests: OpenSSH's sshd started unprivileged on 127.0.0.1 with its own config, host key
and authorized_keys under a temp folder (`sshd -D -e -f CFG`), its host key pinned in a temp known_hosts, stopped
by PID. The "device" is this machine: its files go under a temp remote_root, never into the real home.

Bundles under test are the tiny real bundle plus the real on-device runner and this machine's real x86
`llama-server` and `llama-bench` (built from the same llama.cpp as the bundles' aarch64 ones) in `bin/`. Tests count how
many times items really ran from llama-server's own log in the job folder (server_runs), and slow a run down with
longer answers (write_suite's max_tokens)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from edgetune.artifacts import sha256_file
from edgetune.runtime_build import runner_source

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def add_netns(name: str, subnet: str) -> tuple[str, str] | None:
    """Network namespace `name` joined to this machine by a veth pair on `subnet` ("10.201.7": this side .1, the
    namespace .2, its loopback up). Returns (this side's interface, the namespace's address), or None where
    `ip netns` is missing or not permitted. A failure after the namespace exists removes what was made and
    raises CalledProcessError. Undo with remove_netns."""
    host_if, dev_if = f"{name}h", f"{name}d"
    if not shutil.which("ip") or sh("ip", "netns", "add", name, check=False).returncode != 0:
        return None
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", dev_if)
        sh("ip", "link", "set", dev_if, "netns", name)
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/24", "dev", dev_if)
        sh("ip", "netns", "exec", name, "ip", "link", "set", dev_if, "up")
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
    except subprocess.CalledProcessError:
        remove_netns(name, host_if)
        raise
    return host_if, f"{subnet}.2"


def remove_netns(name: str | None, host_if: str | None) -> None:
    if host_if:
        sh("ip", "link", "del", host_if, check=False)
    if name:
        sh("ip", "netns", "del", name, check=False)


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgetune-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


def sshd_config(folder: Path, host_key: Path, authorized: Path, *, port: int, listen: str = "127.0.0.1") -> Path:
    cfg = folder / "sshd_config"
    cfg.write_text(f"""Port {port}
ListenAddress {listen}
HostKey {host_key}
PidFile {folder / 'sshd.pid'}
AuthorizedKeysFile {authorized}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
ClientAliveInterval 2
ClientAliveCountMax 3
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    return cfg


def wait_port(host: str, port: int, proc: subprocess.Popen, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {proc.stderr.read().decode()[-800:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {host}:{port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class SSHKeys:
    client: Path
    wrong_client: Path
    host: Path
    other_host: Path


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory) -> SSHKeys:
    if not (Path(SSHD).exists() and shutil.which("ssh-keygen")):
        pytest.skip("OpenSSH server/client not installed: run scripts/setup-test-deps.sh as root")
    d = tmp_path_factory.mktemp("ssh-keys")
    return SSHKeys(keygen(d / "client"), keygen(d / "wrong"), keygen(d / "host"), keygen(d / "host2"))


@dataclass
class SSHServer:
    host: str
    port: int
    folder: Path
    keys: SSHKeys
    proc: subprocess.Popen

    def known_hosts_line(self, host_key: Path | None = None) -> str:
        alg, blob = Path(f"{host_key or self.keys.host}.pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {alg} {blob}\n"

    def device(self, **options):
        from edgetune.device import parse_device

        options = {"identity_file": self.keys.client, "known_hosts": self.folder / "known_hosts",
                   "ssh_config": self.folder / "no-ssh-config", "remote_root": str(self.folder / "device"),
                   "connect_timeout_s": 5, **options}
        return parse_device(f"{getpass.getuser()}@{self.host}:{self.port}", name="testdev", **options)


def start_sshd(folder: Path, keys: SSHKeys, *, host_key: Path | None = None, port: int | None = None,
               listen: str = "127.0.0.1", prefix: list[str] = ()) -> SSHServer:
    folder.mkdir(parents=True, exist_ok=True)
    authorized = folder / "authorized_keys"
    authorized.write_text(Path(f"{keys.client}.pub").read_text())
    port = port or free_port()
    cfg = sshd_config(folder, host_key or keys.host, authorized, port=port, listen=listen)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    proc = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    return SSHServer(listen, port, folder, keys, proc)


@contextmanager
def running_sshd(folder: Path, keys: SSHKeys, **options) -> Iterator[SSHServer]:
    """start_sshd, wait until it listens, pin its host key in folder/known_hosts; stopped by PID on exit."""
    server = start_sshd(folder, keys, **options)
    try:
        wait_port(server.host, server.port, server.proc)
        (server.folder / "known_hosts").write_text(server.known_hosts_line())
        yield server
    finally:
        stop(server.proc)


@pytest.fixture
def sshd(tmp_path, ssh_keys):
    with running_sshd(tmp_path / "sshd", ssh_keys) as server:
        yield server


def make_device_bundle(src: Path, dst: Path, *, server: Path | None = None, bench: Path | None = None) -> Path:
    """Copy a bundle folder, add the real runner (and `server` as bin/llama-server, `bench` as bin/llama-bench),
    rewrite the manifest's hashes."""
    from edgetune.bundle import RUNNER_FILE

    shutil.copytree(src, dst)
    (dst / "runner").mkdir(exist_ok=True)
    shutil.copyfile(runner_source(), dst / RUNNER_FILE)
    (dst / RUNNER_FILE).chmod(0o755)
    if server is not None:
        (dst / "bin").mkdir(exist_ok=True)
        shutil.copy2(server, dst / "bin" / "llama-server")
    if bench is not None:
        (dst / "bin").mkdir(exist_ok=True)
        shutil.copy2(bench, dst / "bin" / "llama-bench")
    rewrite_manifest(dst)
    return dst


def rewrite_manifest(root: Path) -> None:
    from edgetune.bundle import SUMS_FILE
    from edgetune.constants import MANIFEST_FILE

    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["files"] = {p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
                         for p in sorted(root.rglob("*")) if p.is_file() and p.name not in (MANIFEST_FILE, SUMS_FILE)}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    (root / SUMS_FILE).write_text("".join(f"{v['sha256']}  {k}\n" for k, v in sorted(manifest["files"].items())))


@pytest.fixture(scope="session")
def device_bundle(tiny_bundle, llama_tools, tmp_path_factory) -> Path:
    """tiny_bundle + runner + the real x86 llama-server and llama-bench (read-only by convention: copy it before
    changing it)."""
    return make_device_bundle(tiny_bundle.file("bundle"), tmp_path_factory.mktemp("device-bundle") / "bundle",
                              server=llama_tools.tool("llama-server"), bench=llama_tools.tool("llama-bench"))


# The tiny GGUF was trained at 512 positions, so llama-server caps its slot there and ends an answer at ~509 tokens
# ("limit"); greedy decoding of its tied weights repeats a token and never meets end-of-generation early. Measured
# here (2 shared cores, other tests running): 0.22-0.32 s an item on one thread (on two threads 1-7 s: keep jobs
# that must be timed at threads=1). Tests that must find a job still running seconds later ask for this many.
SLOW_TOKENS = 500


def write_suite(path: Path, n_items: int, *, max_tokens: int = 2) -> Path:
    rows = [{"id": f"q{i}", "prompt": f"Item {i}:", "max_tokens": max_tokens} for i in range(n_items)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def server_runs(job_dir: str | Path) -> int:
    """How many completions llama-server started in a job on this machine's "device": each request logs one
    `launch_slot_: ... processing task` line in <job>/server.log (appended to by every run of the job)."""
    log = Path(job_dir) / "server.log"
    return sum("launch_slot_" in line and "processing task" in line
               for line in log.read_text(errors="replace").splitlines()) if log.exists() else 0
