"""Deploy and connection behaviour against a real sshd (tests/device/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from edgetune.device import deploy, deploy_fleet, parse_device, transfer
from edgetune.errors import DeviceAuthError, DeviceError, DeviceUnreachable, HostKeyError


def remote_dir(sshd, bundle: Path) -> Path:
    name = json.loads((bundle / "manifest.json").read_text())["name"]
    return sshd.folder / "device" / "bundles" / name


def biggest(bundle: Path) -> str:
    files = json.loads((bundle / "manifest.json").read_text())["files"]
    return max(files, key=lambda rel: files[rel]["size_bytes"])


def test_deploy_verifies_then_sends_nothing(sshd, device_bundle):
    first = asyncio.run(deploy(device_bundle, sshd.device()))
    assert first.verified and first.bytes_sent > 0
    files = json.loads((device_bundle / "manifest.json").read_text())["files"]
    assert len(first.sent_files) == len(files) + 2  # + manifest.json, SHA256SUMS
    dest = remote_dir(sshd, device_bundle)
    for rel in files:
        assert (dest / rel).read_bytes() == (device_bundle / rel).read_bytes()
    assert os.access(dest / "bin" / "llama-server", os.X_OK)  # modes travel
    second = asyncio.run(deploy(device_bundle, sshd.device()))
    assert second.verified and second.bytes_sent == 0 and second.sent_files == []


def test_corrupted_remote_file_is_detected_and_resent(sshd, device_bundle):
    asyncio.run(deploy(device_bundle, sshd.device()))
    rel = biggest(device_bundle)
    target = remote_dir(sshd, device_bundle) / rel
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only the device-side sha256 can see it
    target.write_bytes(bytes(data))
    again = asyncio.run(deploy(device_bundle, sshd.device()))
    assert again.sent_files == [rel] and again.resumed == []
    assert target.read_bytes() == (device_bundle / rel).read_bytes()


def test_partial_remote_file_is_resumed(sshd, device_bundle):
    asyncio.run(deploy(device_bundle, sshd.device()))
    rel = biggest(device_bundle)
    target = remote_dir(sshd, device_bundle) / rel
    size = target.stat().st_size
    os.truncate(target, size // 3)
    again = asyncio.run(deploy(device_bundle, sshd.device()))
    assert again.resumed == [rel] and again.sent_files == [rel]
    assert again.bytes_sent == size - size // 3 < size
    assert target.read_bytes() == (device_bundle / rel).read_bytes()


def test_resume_with_a_bad_prefix_starts_over(sshd, device_bundle):
    asyncio.run(deploy(device_bundle, sshd.device()))
    rel = biggest(device_bundle)
    target = remote_dir(sshd, device_bundle) / rel
    size = target.stat().st_size
    target.write_bytes(b"\0" * (size // 2))  # a prefix that is not the file's
    again = asyncio.run(deploy(device_bundle, sshd.device()))
    assert again.resumed == [rel] and again.bytes_sent == size - size // 2 + size
    assert target.read_bytes() == (device_bundle / rel).read_bytes()


def test_unknown_host_key_refused_then_accepted_with_the_flag(sshd, device_bundle):
    known = sshd.folder / "known_hosts"
    known.write_text("")
    with pytest.raises(HostKeyError, match="unknown SSH host key") as err:
        asyncio.run(deploy(device_bundle, sshd.device()))
    assert "--accept-new-host-key" in str(err.value) and "testdev" in str(err.value)
    assert known.read_text() == ""
    done = asyncio.run(deploy(device_bundle, sshd.device(), accept_new_host_key=True))
    assert done.verified
    assert known.read_text() == sshd.known_hosts_line()
    asyncio.run(deploy(device_bundle, sshd.device()))  # now pinned: no flag needed


def test_changed_host_key_is_always_refused(sshd, device_bundle):
    known = sshd.folder / "known_hosts"
    known.write_text(sshd.known_hosts_line(sshd.keys.other_host))
    for accept in (False, True):
        with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as err:
            asyncio.run(deploy(device_bundle, sshd.device(), accept_new_host_key=accept))
        assert "ssh-keygen" in str(err.value) and "testdev" in str(err.value)
    assert known.read_text() == sshd.known_hosts_line(sshd.keys.other_host)
    assert not (sshd.folder / "device").exists()  # nothing was sent


def test_wrong_client_key_is_a_clear_auth_error(sshd, device_bundle):
    with pytest.raises(DeviceAuthError, match="authentication failed") as err:
        asyncio.run(deploy(device_bundle, sshd.device(identity_file=sshd.keys.wrong_client)))
    assert err.value.exit_code == 11 and "authorized_keys" in str(err.value)


def test_unreachable_port(sshd, device_bundle):
    from tests.device.conftest import free_port

    with pytest.raises(DeviceUnreachable, match="cannot connect") as err:
        asyncio.run(deploy(device_bundle, parse_device(f"nobody@127.0.0.1:{free_port()}", name="gone",
                                                       known_hosts=sshd.folder / "known_hosts",
                                                       ssh_config=sshd.folder / "none", connect_timeout_s=3)))
    assert err.value.exit_code == 12 and "gone" in str(err.value)


def test_no_space_is_refused_before_sending(sshd, device_bundle, monkeypatch):
    monkeypatch.setattr(transfer, "SPACE_MARGIN_BYTES", 1 << 60)  # more than any disk: df says no
    with pytest.raises(DeviceError, match="no space left on the device"):
        asyncio.run(deploy(device_bundle, sshd.device()))
    assert not remote_dir(sshd, device_bundle).exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB disk (tmpfs) for the device's remote_root: needs root."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("a real small disk (tmpfs) needs root")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_is_refused_before_sending_and_enospc_mid_write_is_clear(sshd, device_bundle, small_disk,
                                                                           monkeypatch):
    """A device whose disk is too small: refused up front from its real free space; and when the disk fills
    during the transfer (the up-front check switched off), the device's real ENOSPC gives the same clear error."""
    device = sshd.device(remote_root=str(small_disk / "edgetune"))
    with pytest.raises(DeviceError, match=r"^testdev: no space left on the device: .* MB free under ") as err:
        asyncio.run(deploy(device_bundle, device))
    assert "remote_root" in str(err.value) and err.value.exit_code == 11
    assert not any(small_disk.iterdir())  # nothing sent
    monkeypatch.setattr(transfer, "SPACE_MARGIN_BYTES", -(1 << 40))
    with pytest.raises(DeviceError, match=r"^testdev: no space left on the device while writing ") as err:
        asyncio.run(deploy(device_bundle, device))
    assert "remote_root" in str(err.value)


def test_device_without_python3(sshd, device_bundle, monkeypatch):
    from edgetune.device import remote

    monkeypatch.setattr(remote, "PYTHON", "python3-not-installed")
    with pytest.raises(DeviceError, match="has no python3"):
        asyncio.run(deploy(device_bundle, sshd.device()))


def test_fleet_keeps_the_good_device_when_another_fails(sshd, device_bundle):
    from tests.device.conftest import free_port

    bad = parse_device(f"nobody@127.0.0.1:{free_port()}", name="gone", known_hosts=sshd.folder / "known_hosts",
                       ssh_config=sshd.folder / "none", connect_timeout_s=3)
    fleet = asyncio.run(deploy_fleet(device_bundle, [sshd.device(), bad]))
    assert fleet.results["testdev"].verified
    assert isinstance(fleet.errors["gone"], DeviceUnreachable)
    assert fleet.to_dict()["errors"]["gone"]["exit_code"] == 12
