"""The one door to asyncssh: connect to a device, run remote commands, move files. Nothing else imports asyncssh.

Host keys are verified against known_hosts (default ~/.ssh/known_hosts) on every connection. A device whose key
is not recorded is refused unless the caller passes `accept_new_host_key=True` (OpenSSH's accept-new: the key
is then appended to known_hosts); a device whose key differs from the recorded one is always refused.
~/.ssh/config (HostName, User, Port, IdentityFile, ProxyJump, ...) is honoured; explicit spec fields win.

Remote commands are argument lists joined with shlex.quote: user input never reaches the remote shell unquoted.
Raises HostKeyError, DeviceAuthError, DeviceUnreachable, DeviceLost (a dropped connection, including asyncssh's
silent case where a process ends with neither an exit status nor a signal) and DeviceError.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # cryptography 51 deprecates DSA (a UserWarning subclass) and asyncssh 2.24 names its DSA types at import:
    # ten warning lines on stderr before every device command's own output (seen 2026-12-07 with a fresh venv)
    warnings.filterwarnings("ignore", message="DSA is deprecated", category=UserWarning)
    import asyncssh

from edgetune.device.spec import Device
from edgetune.errors import DeviceAuthError, DeviceError, DeviceLost, DeviceUnreachable, HostKeyError

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 * 1024  # one SFTP request per write: no parallel sub-requests left behind on a cut
_LOST = (asyncssh.ConnectionLost, asyncssh.DisconnectError, asyncssh.ChannelOpenError, BrokenPipeError,
         ConnectionResetError)


def known_hosts_path(device: Device) -> Path:
    return device.known_hosts or Path("~/.ssh/known_hosts").expanduser()


class _HostKeyCheck(asyncssh.SSHClient):
    """Called by asyncssh only for a host key that known_hosts does not trust: tells unknown from changed."""

    def __init__(self, known: asyncssh.SSHKnownHosts, accept_new: bool):
        self.known, self.accept_new = known, accept_new
        self.outcome: str | None = None
        self.accepted: tuple[str, int, asyncssh.SSHKey] | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        recorded = self.known.match(host, addr, port if port != 22 else None)
        if any(recorded[:3]):
            self.outcome = "changed"
            return False
        if self.accept_new:
            self.outcome, self.accepted = "accepted", (host, port, key)
            return True
        self.outcome = "unknown"
        return False


def _record_host_key(path: Path, host: str, port: int, key: asyncssh.SSHKey) -> None:
    pattern = host if port == 22 else f"[{host}]:{port}"
    alg, blob = key.export_public_key("openssh").decode().split()[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    with path.open("a") as fh:
        fh.write(("" if not text or text.endswith("\n") else "\n") + f"{pattern} {alg} {blob}\n")
    log.warning("added the host key of %s (%s) to %s", pattern, alg, path)


def _connect_kwargs(device: Device, known: asyncssh.SSHKnownHosts) -> dict[str, Any]:
    kw: dict[str, Any] = {"known_hosts": known, "connect_timeout": device.connect_timeout_s,
                          "keepalive_interval": device.keepalive_interval_s,
                          "keepalive_count_max": device.keepalive_count_max}
    config = device.ssh_config or Path("~/.ssh/config").expanduser()
    kw["config"] = [str(config)] if config.is_file() else []
    if device.user:
        kw["username"] = device.user
    if device.port:
        kw["port"] = device.port
    if device.identity_file:
        kw["client_keys"] = [str(device.identity_file)]
    return kw


def _changed_hint(device: Device, path: Path) -> str:
    port = f" -p {device.port}" if device.port else ""
    return (f"the device was reinstalled, or someone is intercepting the connection; if you trust the change, "
            f"run `ssh-keygen -f {path} -R {shlex.quote(device.host if not device.port else f'[{device.host}]:{device.port}')}` "
            f"then connect once with --accept-new-host-key (check the fingerprint with `ssh{port} {device.host}`)")


@asynccontextmanager
async def connect(device: Device, *, accept_new_host_key: bool = False) -> AsyncIterator[Session]:
    """An open, host-key-verified SSH connection to `device`, closed on exit."""
    path = known_hosts_path(device)
    try:
        known = asyncssh.import_known_hosts(path.read_text() if path.is_file() else "")
    except (OSError, ValueError) as exc:
        raise HostKeyError(f"{device.name}: cannot read known_hosts {path}: {exc}", "fix or move that file") from exc
    check = _HostKeyCheck(known, accept_new_host_key)
    try:
        conn = await asyncssh.connect(device.host, client_factory=lambda: check, **_connect_kwargs(device, known))
    except asyncssh.HostKeyNotVerifiable as exc:
        if check.outcome == "changed":
            raise HostKeyError(f"{device.name} ({device.spec}): HOST KEY CHANGED: the device's SSH host key differs "
                               f"from the one recorded in {path}; refusing to connect",
                               _changed_hint(device, path)) from exc
        raise HostKeyError(f"{device.name} ({device.spec}): unknown SSH host key (not in {path}); refusing to "
                           "connect", "verify the device's fingerprint, then pass --accept-new-host-key once to "
                           "record it") from exc
    except asyncssh.PermissionDenied as exc:
        raise DeviceAuthError(f"{device.name} ({device.spec}): SSH authentication failed ({exc.reason})",
                              "check the user name and that your public key is in the device's "
                              "~/.ssh/authorized_keys (ssh-copy-id), or set identity_file") from exc
    except asyncssh.KeyExchangeFailed as exc:
        raise HostKeyError(f"{device.name} ({device.spec}): SSH key exchange failed ({exc.reason}); the device "
                           f"offers no host key of the type recorded in {path}", _changed_hint(device, path)) from exc
    except (TimeoutError, OSError, asyncssh.ConnectionLost) as exc:
        why = (f"no answer within {device.connect_timeout_s:g}s" if isinstance(exc, TimeoutError)
               else str(exc) or type(exc).__name__)
        raise DeviceUnreachable(f"{device.name} ({device.spec}): cannot connect: {why}",
                                "check that the device is on, the address and port are right and sshd runs") \
            from exc
    except asyncssh.Error as exc:
        raise DeviceError(f"{device.name} ({device.spec}): SSH connection failed: {exc.reason}",
                          "run `ssh -v` to the device to see why") from exc
    if check.accepted is not None:
        _record_host_key(path, *check.accepted)
    try:
        yield Session(device, conn)
    finally:
        conn.close()
        try:
            await asyncio.wait_for(conn.wait_closed(), 5)
        except (TimeoutError, *_LOST):
            pass


@dataclass(frozen=True)
class Completed:
    exit_status: int
    stdout: str
    stderr: str


class Session:
    """Commands and file transfers over one connection. Every failure names the device."""

    def __init__(self, device: Device, conn: asyncssh.SSHClientConnection):
        self.device, self._conn = device, conn

    def lost(self, doing: str, exc: BaseException | None = None) -> DeviceLost:
        why = f": {exc}" if exc else ""
        return DeviceLost(f"{self.device.name}: connection lost while {doing}{why}; the outcome is unknown",
                          "re-run the same command when the device is reachable: it resumes or collects")

    async def run(self, argv: Sequence[str], *, input: str | None = None, timeout_s: float | None = None,
                  doing: str = "running a remote command") -> Completed:
        """Run `argv` (joined with shlex.quote) on the device and return its exit status and output. Raises
        DeviceLost when the connection drops, whatever asyncssh reports."""
        command = shlex.join(argv)
        try:
            done = await self._conn.run(command, input=input, check=False, timeout=timeout_s)
        except asyncssh.TimeoutError as exc:
            raise DeviceLost(f"{self.device.name}: {doing} did not finish within {timeout_s:g}s",
                             "raise the timeout, or re-run later to collect") from exc
        except _LOST as exc:
            raise self.lost(doing, exc) from exc
        if done.exit_status is None or done.exit_status < 0:
            if done.exit_signal:
                raise DeviceError(f"{self.device.name}: {doing}: killed by signal {done.exit_signal[0]}",
                                  "see the device's logs (out of memory?)")
            raise self.lost(doing)  # the channel closed with no exit status: the link went away
        return Completed(done.exit_status, _text(done.stdout), _text(done.stderr))

    async def upload(self, local: Path, remote: str, *, offset: int, on_bytes: Callable[[int], None],
                     mode: int | None = None) -> None:
        """Write `local` from byte `offset` on into `remote` (created if missing, never truncated when resuming)."""
        try:
            async with self._conn.start_sftp_client() as sftp:
                parent = remote.rsplit("/", 1)[0] if "/" in remote else ""
                if parent:
                    await sftp.makedirs(parent, exist_ok=True)
                async with sftp.open(remote, "r+b" if offset else "wb") as dst:
                    if offset:
                        await dst.truncate(offset)
                    with local.open("rb") as src:
                        src.seek(offset)
                        pos = offset
                        while block := src.read(CHUNK_BYTES):
                            await dst.write(block, pos)
                            pos += len(block)
                            on_bytes(len(block))
                if mode is not None:
                    await sftp.chmod(remote, mode)
        except asyncssh.SFTPError as exc:
            raise DeviceError(f"{self.device.name}: writing {remote} failed: {exc.reason}",
                              "check free space and permissions under the remote folder") from exc
        except _LOST as exc:
            raise self.lost(f"uploading {local.name}", exc) from exc

    @asynccontextmanager
    async def stream(self, argv: Sequence[str], *, doing: str) -> AsyncIterator[Stream]:
        """Start `argv` (joined with shlex.quote) as a long-lived remote command spoken to in lines (see
        Stream). On exit its stdin is closed, which a well-behaved command takes as the end; it is waited on
        for STREAM_CLOSE_S, then its channel is closed."""
        command = shlex.join(argv)
        try:
            proc = await self._conn.create_process(command, encoding="utf-8", errors="replace")
        except _LOST as exc:
            raise self.lost(doing, exc) from exc
        stream = Stream(self, proc, doing)
        try:
            yield stream
        finally:
            await stream.close()

    async def download(self, remote: str, local: Path) -> None:
        try:
            async with self._conn.start_sftp_client() as sftp:
                await sftp.get(remote, str(local))
        except asyncssh.SFTPError as exc:
            raise DeviceError(f"{self.device.name}: cannot fetch {remote}: {exc.reason}",
                              "the job folder on the device is incomplete; re-run with --force") from exc
        except _LOST as exc:
            raise self.lost(f"fetching {remote}", exc) from exc


STREAM_CLOSE_S = 15.0


class Stream:
    """One remote command kept running: `exchange(line)` writes a line to its stdin and returns the next line
    of its stdout (the command answers each line with one line). Raises DeviceLost when the connection drops
    or no answer comes within the timeout, DeviceError when the command ends (naming its exit status and the
    end of its stderr)."""

    def __init__(self, session: Session, proc: Any, doing: str):
        self._session, self._proc, self.doing = session, proc, doing

    async def readline(self, *, timeout_s: float | None) -> str:
        """The next line of the command's stdout, without its newline."""
        name = self._session.device.name
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), timeout_s)
        except TimeoutError as exc:
            raise DeviceLost(f"{name}: {self.doing}: no answer within {timeout_s:g}s",
                             "raise the timeout, or check the device's load") from exc
        except _LOST as exc:
            raise self._session.lost(self.doing, exc) from exc
        if not line.endswith("\n"):
            raise await self._ended()
        return line[:-1]

    async def exchange(self, line: str, *, timeout_s: float | None) -> str:
        if "\n" in line:
            raise ValueError("a Stream line must not contain a newline")
        try:
            self._proc.stdin.write(line + "\n")
            await self._proc.stdin.drain()
        except _LOST as exc:
            raise self._session.lost(self.doing, exc) from exc
        return await self.readline(timeout_s=timeout_s)

    async def _ended(self) -> DeviceError:
        name = self._session.device.name
        try:
            await asyncio.wait_for(self._proc.wait_closed(), STREAM_CLOSE_S)
            stderr = await asyncio.wait_for(self._proc.stderr.read(), STREAM_CLOSE_S)
        except (TimeoutError, *_LOST):
            stderr = ""
        status = self._proc.exit_status
        if status is None or status < 0:
            if self._proc.exit_signal:
                return DeviceError(f"{name}: {self.doing}: killed by signal {self._proc.exit_signal[0]}",
                                   "see the device's logs (out of memory?)")
            return self._session.lost(self.doing)
        tail = " | ".join(_text(stderr).strip().splitlines()[-3:])
        return DeviceError(f"{name}: {self.doing}: the remote command ended (exit status {status})"
                           + (f"; stderr: {tail}" if tail else ""), "see the device's logs")

    async def close(self) -> None:
        """Close stdin, give the command STREAM_CLOSE_S to end, then close the channel. Never raises."""
        try:
            self._proc.stdin.write_eof()
            await asyncio.wait_for(self._proc.wait_closed(), STREAM_CLOSE_S)
        except (TimeoutError, OSError, *_LOST):
            pass
        finally:
            self._proc.close()


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
