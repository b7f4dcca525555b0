"""Deploy a bundle folder to a device: resumable, verified on the device, idempotent.

Reads BUNDLE/manifest.json (every file's sha256 and size; verified locally first with verify_bundle) and writes
`<remote_root>/bundles/<bundle name>/` on the device. One inventory round trip hashes, on the device, every file
whose size is right; only files that are missing or wrong are sent. A shorter remote file is resumed from its
size as re-read just before sending (after a cut, writes of the old connection may still land); a longer one or
one whose resumed content fails its hash is sent again from byte 0. A second inventory proves every file
against the manifest on the device. Free space is checked before sending. Raises DeviceError (no space, no
python3, a file that stays wrong), DeviceLost, and the connection errors of device/ssh.py.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune.artifacts import sha256_file
from edgetune.bundle import SUMS_FILE, verify_bundle
from edgetune.constants import MANIFEST_FILE
from edgetune.device import remote
from edgetune.device.spec import Device
from edgetune.device.ssh import Session, connect
from edgetune.errors import DeviceError
from edgetune.progress import NullProgress, Progress

log = logging.getLogger(__name__)

SPACE_MARGIN_BYTES = 16 * 1024 * 1024
INVENTORY_TIMEOUT_S = 600.0


@dataclass
class DeployResult:
    device: str
    remote_dir: str
    files: int
    sent_files: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    resumed: list[str] = field(default_factory=list)
    verified: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "remote_dir": self.remote_dir, "files": self.files,
                "sent_files": self.sent_files, "bytes_sent": self.bytes_sent, "resumed": self.resumed,
                "verified": self.verified}


def expected_files(bundle_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(manifest, {relative path: {sha256, size_bytes}}) for every file the device must hold, manifest.json and
    SHA256SUMS included (hashed here: the manifest cannot list itself)."""
    manifest = verify_bundle(bundle_dir)
    files = {rel: {"sha256": meta["sha256"], "size_bytes": int(meta["size_bytes"])}
             for rel, meta in manifest["files"].items()}
    for rel in (MANIFEST_FILE, SUMS_FILE):
        path = bundle_dir / rel
        files[rel] = {"sha256": sha256_file(path), "size_bytes": path.stat().st_size}
    return manifest, files


def remote_bundle_dir(device: Device, manifest: dict[str, Any]) -> str:
    return f"{device.remote_root.rstrip('/')}/bundles/{manifest['name']}"


async def deploy_session(session: Session, bundle_dir: Path, *, progress: Progress | None = None) -> DeployResult:
    """Deploy over an open session (run_eval reuses its connection)."""
    bundle_dir = Path(bundle_dir)
    progress = progress or NullProgress()
    manifest, files = expected_files(bundle_dir)
    root = remote_bundle_dir(session.device, manifest)
    name = session.device.name
    inv = await remote.inventory(session, root, files, timeout_s=INVENTORY_TIMEOUT_S)
    todo = {rel: inv["files"][rel] for rel in sorted(files) if not inv["files"][rel]["ok"]}
    result = DeployResult(name, root, len(files))
    need = sum(files[rel]["size_bytes"] - max(0, min(info["size"], files[rel]["size_bytes"]))
               for rel, info in todo.items())
    if need + SPACE_MARGIN_BYTES > inv["free_bytes"]:
        raise DeviceError(f"{name}: no space left on the device: {need / 1e6:.1f} MB to send, "
                          f"{inv['free_bytes'] / 1e6:.1f} MB free under {root}",
                          "free space on the device, or set the device option remote_root to a bigger disk")
    if not todo:
        log.info("%s: all %d files already on the device and verified", name, len(files))
        result.verified = True
        return result
    with progress.task(f"{name}: upload", total=need) as task:
        for rel, info in todo.items():
            await _send(session, bundle_dir, root, rel, files[rel], info, result, task)
    check = await remote.inventory(session, root, files, timeout_s=INVENTORY_TIMEOUT_S)
    bad = sorted(rel for rel, info in check["files"].items() if not info["ok"])
    if bad:
        raise DeviceError(f"{name}: {len(bad)} file(s) do not match the manifest on the device after upload: "
                          f"{', '.join(bad[:3])}", "re-run deploy; if it persists the device's storage is failing")
    result.verified = True
    return result


async def _send(session: Session, bundle_dir: Path, root: str, rel: str, meta: dict[str, Any],
                info: dict[str, Any], result: DeployResult, task: Any) -> None:
    local, remote_path = bundle_dir / rel, f"{root}/{rel}"
    mode = stat.S_IMODE(local.stat().st_mode)
    size = meta["size_bytes"]

    def count(n: int) -> None:
        result.bytes_sent += n
        task.advance(n)

    offset = info["size"] if 0 < info["size"] < size else 0
    if offset:  # re-read: the remote file may have grown since the inventory (late writes of a cut connection)
        offset = (await remote.inventory(session, root, {rel: meta}, timeout_s=INVENTORY_TIMEOUT_S))["files"][rel]
        offset = offset["size"] if 0 < offset["size"] < size else 0
    if offset:
        log.info("%s: resuming %s at byte %d of %d", session.device.name, rel, offset, size)
        result.resumed.append(rel)
    await _upload_checked(session, local, remote_path, offset, count, mode, rel)
    if offset:
        again = await remote.inventory(session, root, {rel: meta}, timeout_s=INVENTORY_TIMEOUT_S)
        if not again["files"][rel]["ok"]:  # the kept prefix was not what we sent: start over
            log.warning("%s: resumed %s failed its sha256 on the device; sending it whole", session.device.name, rel)
            await _upload_checked(session, local, remote_path, 0, count, mode, rel)
    result.sent_files.append(rel)


async def _upload_checked(session: Session, local: Path, remote_path: str, offset: int, count: Any, mode: int,
                          rel: str) -> None:
    try:
        await session.upload(local, remote_path, offset=offset, on_bytes=count, mode=mode)
    except DeviceError as exc:
        if type(exc) is not DeviceError:  # DeviceLost and friends pass through
            raise
        root = remote_path[: -len(rel) - 1]
        inv = await remote.inventory(session, root, {}, timeout_s=INVENTORY_TIMEOUT_S)
        if inv["free_bytes"] < local.stat().st_size - offset:
            raise DeviceError(f"{session.device.name}: no space left on the device while writing {rel} "
                              f"({inv['free_bytes'] / 1e6:.1f} MB free)",
                              "free space on the device, or set remote_root to a bigger disk") from exc
        raise


async def deploy(bundle_dir: Path, device: Device, *, accept_new_host_key: bool = False,
                 progress: Progress | None = None) -> DeployResult:
    """Copy the bundle folder to `device` and prove every file against the manifest there. Idempotent."""
    from edgetune.bundle_manifest import read_manifest

    read_manifest(Path(bundle_dir))  # a damaged manifest fails here, before any connection
    async with connect(device, accept_new_host_key=accept_new_host_key) as session:
        return await deploy_session(session, bundle_dir, progress=progress)
