"""What runs on the device: small Python 3 standard-library programs passed as `python3 -c PROGRAM ARGS...`,
their inputs as JSON on stdin, their answer as one JSON line on stdout. Every argument goes through
Session.run, which quotes it; nothing here is ever pasted into a shell string.

INVENTORY: free space and, for each expected file, its size and whether its sha256 matches (hashed only when
the size is right), so one round trip both plans an upload and verifies it on the device.
JOB: start / wait on a detached job in a job folder. `start` refuses to start a second copy while one lives
(an flock held by the job's wrapper for its whole life, plus the runner's own `.lock`), returns `done` when
`results.jsonl` is already there, and otherwise forks a wrapper in its own session that runs the argv with
output to runner.out/runner.err and writes runner.rc when it ends. The job outlives the SSH connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from edgetune.device.ssh import Session
from edgetune.errors import DeviceError

PYTHON = "python3"
NO_PYTHON = 127  # the shell's "command not found"

INVENTORY = r"""
import hashlib, json, os, sys
root = os.path.expanduser(sys.argv[1])
want = json.load(sys.stdin)
probe = root
while not os.path.isdir(probe):
    probe = os.path.dirname(probe) or "."
st = os.statvfs(probe)
out = {"python": sys.version.split()[0], "free_bytes": st.f_bavail * st.f_frsize, "files": {}}
for rel, meta in want.items():
    path = os.path.join(root, rel)
    try:
        size = os.path.getsize(path)
    except OSError:
        out["files"][rel] = {"size": -1, "ok": False}
        continue
    ok = False
    if size == meta["size_bytes"]:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        ok = h.hexdigest() == meta["sha256"]
    out["files"][rel] = {"size": size, "ok": ok}
print(json.dumps(out))
"""

JOB = r"""
import errno, fcntl, json, os, subprocess, sys, time
action, job_dir, timeout_s = sys.argv[1], os.path.expanduser(sys.argv[2]), float(sys.argv[3])
argv = sys.argv[4:]
CONTROL, RUNNER_LOCK, RESULTS, RC = ".control.lock", ".lock", "results.jsonl", "runner.rc"
def p(name):
    return os.path.join(job_dir, name)
def held(name, keep=False):
    fd = os.open(p(name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True, None
        raise
    if keep:
        return False, fd
    os.close(fd)
    return False, None
def tail(name, n=4000):
    try:
        with open(p(name), "rb") as fh:
            fh.seek(max(0, os.path.getsize(p(name)) - n))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
def say(**kw):
    print(json.dumps(kw), flush=True)
os.makedirs(job_dir, exist_ok=True)
if action == "start":
    if os.path.exists(p(RESULTS)):
        say(state="done"); sys.exit(0)
    busy, fd = held(CONTROL, keep=True)
    if busy or held(RUNNER_LOCK)[0]:
        if fd is not None:
            os.close(fd)
        say(state="running"); sys.exit(0)
    if os.path.exists(p(RC)):
        os.unlink(p(RC))
    pid = os.fork()
    if pid == 0:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(null, n)
        rc = 1
        try:
            with open(p("runner.out"), "ab") as out, open(p("runner.err"), "ab") as err:
                rc = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        finally:
            with open(p(RC + ".tmp"), "w") as fh:
                json.dump({"exit_code": rc, "finished_at": time.time()}, fh)
                fh.flush(); os.fsync(fh.fileno())
            os.replace(p(RC + ".tmp"), p(RC))
            os._exit(0)
    os.close(fd)
    say(state="started", pid=pid); sys.exit(0)
deadline = time.monotonic() + timeout_s
while held(CONTROL)[0] or held(RUNNER_LOCK)[0]:
    if time.monotonic() >= deadline:
        say(state="running"); sys.exit(0)
    time.sleep(0.2)
rc = None
if os.path.exists(p(RC)):
    with open(p(RC)) as fh:
        rc = json.load(fh)["exit_code"]
lines = [l for l in tail("runner.out").splitlines() if l.startswith("{")]
say(state="finished", exit_code=rc, results=os.path.exists(p(RESULTS)), outcome=lines[-1] if lines else None,
    stderr=tail("runner.err", 2000))
"""


def _parse(device: str, doing: str, stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise DeviceError(f"{device}: {doing}: unreadable answer from the device: {stdout[-300:]!r}",
                          "is the device's python3 a standard CPython 3?") from exc


async def python(session: Session, program: str, args: Sequence[str], *, stdin: Any = None,
                 timeout_s: float | None, doing: str) -> dict[str, Any]:
    """Run a stdlib program on the device's python3; return its JSON answer. Raises DeviceError (no python3,
    a failing program) and DeviceLost."""
    done = await session.run([PYTHON, "-c", program, *args], input=None if stdin is None else json.dumps(stdin),
                             timeout_s=timeout_s, doing=doing)
    name = session.device.name
    if done.exit_status == NO_PYTHON:
        raise DeviceError(f"{name}: the device has no python3 ({done.stderr.strip()[:200]})",
                          "install Python 3 on the device (e.g. `sudo apt install python3-minimal`)")
    if done.exit_status != 0:
        err = done.stderr.strip().splitlines()
        last = err[-1] if err else f"exit status {done.exit_status}"
        if "No space left" in done.stderr or "ENOSPC" in done.stderr:
            raise DeviceError(f"{name}: no space left on the device while {doing}: {last}",
                              "free space on the device or set remote_root to a bigger disk")
        raise DeviceError(f"{name}: {doing} failed on the device: {last}", "see the device's logs")
    return _parse(name, doing, done.stdout)


async def inventory(session: Session, root: str, files: Mapping[str, Mapping[str, Any]], *,
                    timeout_s: float | None) -> dict[str, Any]:
    return await python(session, INVENTORY, [root], stdin=dict(files), timeout_s=timeout_s,
                        doing="checking the files on the device")


async def job(session: Session, action: str, job_dir: str, argv: Sequence[str] = (), *, wait_s: float = 0,
              timeout_s: float | None = None) -> dict[str, Any]:
    return await python(session, JOB, [action, job_dir, f"{wait_s:g}", *argv], timeout_s=timeout_s,
                        doing=f"{action} of job {job_dir}")
