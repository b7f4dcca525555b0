"""The emulated Pi 5's own arm64 OpenSSH server (the rootfs's /usr/sbin/sshd, run through qemu-user as a
Cortex-A76), reachable like a board on the LAN: in its own network namespace behind a veth pair, at its own
address on port 22; where `ip netns` is not permitted, on 127.0.0.1 at a free port instead.

Config, host key and authorized_keys are its own (under TEST_ETC inside the rootfs); the host key is made here,
so a known_hosts line can pin it. `SetEnv QEMU_CPU=cortex-a76` reaches every session: sshd builds a session's
environment from scratch, and without it the runner and llama-server it starts would run as qemu's default
CPU (`max`, with SVE and i8mm). A 4 MB tmpfs on /mnt (in sshd's mount namespace only) is the board's nearly
full second disk. Stopped by PID; then any process still running with its root in this rootfs (a detached job
of an interrupted test) is killed by PID, and the namespace and veth pair are deleted."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.device.conftest import add_netns, free_port, keygen, sh, stop

from .conftest import PI_ENV, TEST_ETC, enter_argv

SMALL_DISK = "/mnt"  # a tmpfs of SMALL_DISK_SIZE inside the emulated board
SMALL_DISK_SIZE = "4m"
START_TIMEOUT_S = 60.0


@dataclass
class PiSSHD:
    host: str
    port: int
    root: Path
    host_key: Path
    client_key: Path
    other_host_key: Path
    proc: subprocess.Popen
    netns: str | None
    log: Path
    links: list[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return f"root@{self.host}:{self.port}"

    def known_hosts_line(self, host_key: Path | None = None) -> str:
        alg, blob = Path(f"{host_key or self.host_key}.pub").read_text().split()[:2]
        pattern = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{pattern} {alg} {blob}\n"

    def user_home(self, home: Path, *, known: bool = True) -> Path:
        """A home folder as a user's would be: ~/.ssh/id_ed25519 (authorized on the board) and, if `known`,
        ~/.ssh/known_hosts pinning the board's host key. No ~/.ssh/config: a plain `--device` must do."""
        ssh = home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        for suffix in ("", ".pub"):
            shutil.copy2(f"{self.client_key}{suffix}", ssh / f"id_ed25519{suffix}")
        (ssh / "known_hosts").write_text(self.known_hosts_line() if known else "")
        return home

    def device_path(self, path: str) -> Path:
        """Where a path on the board (absolute, or relative to root's home) lies on this machine."""
        return self.root / (path.lstrip("/") if path.startswith("/") else f"root/{path}")


def _network() -> tuple[str | None, str, list[str]]:
    """(netns name or None, the board's address, veth names to delete afterwards)."""
    ns = f"etpi-{os.getpid() % 100000}"
    made = add_netns(ns, f"10.{150 + os.getpid() % 50}.5")
    if made is None:
        return None, "127.0.0.1", []
    host_if, address = made
    return ns, address, [host_if]


def start(root: Path, keys_dir: Path) -> PiSSHD:
    keys_dir.mkdir(parents=True, exist_ok=True)
    host_key, other, client = (keygen(keys_dir / n) for n in ("pi-host", "pi-host-other", "pi-client"))
    etc = root / TEST_ETC.lstrip("/")
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copy2(host_key, etc / "ssh_host_ed25519_key")
    (etc / "authorized_keys").write_text(Path(f"{client}.pub").read_text())
    (root / "run" / "sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
    (root / "root").chmod(0o700)
    netns, host, links = _network()
    port = 22 if netns else free_port()
    (etc / "sshd_config").write_text(f"""Port {port}
ListenAddress {host}
HostKey {TEST_ETC}/ssh_host_ed25519_key
PidFile /run/edgetune-test-sshd.pid
AuthorizedKeysFile {TEST_ETC}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
SetEnv QEMU_CPU=cortex-a76
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    log = keys_dir / "sshd.log"
    argv = enter_argv(root, ["/usr/sbin/sshd", "-D", "-e", "-f", f"{TEST_ETC}/sshd_config"], netns=netns,
                      tmpfs={SMALL_DISK: SMALL_DISK_SIZE})
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, env={**PI_ENV, "QEMU_CPU": "cortex-a76"}, stdout=subprocess.DEVNULL,
                                stderr=err)
    server = PiSSHD(host, port, root, host_key, client, other, proc, netns, log, links)
    try:
        _wait_banner(server)
    except BaseException:
        shutdown(server)
        raise
    return server


def _wait_banner(server: PiSSHD) -> None:
    """Wait until the emulated sshd answers with its SSH banner (a listening socket alone is not enough)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the emulated sshd exited with {server.proc.returncode}: "
                               f"{server.log.read_text()[-800:]}")
        try:
            with socket.create_connection((server.host, server.port), timeout=2) as s:
                s.settimeout(10)
                if s.recv(64).startswith(b"SSH-2.0-OpenSSH"):
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the emulated sshd did not answer on {server.host}:{server.port}")


def shutdown(server: PiSSHD) -> None:
    stop(server.proc)
    for pid in _rooted_in(server.root):  # sessions and detached jobs still running inside this rootfs
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for link in server.links:
        sh("ip", "link", "del", link, check=False)
    if server.netns:
        sh("ip", "netns", "del", server.netns, check=False)


def _rooted_in(root: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == str(root):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
