"""Faults on a real link: sshd runs in its own network namespace behind a veth pair, rate-limited with `tc tbf`
(netem is missing from this kernel) so a transfer is slow enough to cut; `ip link set ... down` cuts it.
Needs root and `ip netns`; skips with the reason elsewhere."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from edgetune.device import deploy, run_eval
from edgetune.errors import DeviceLost

from tests.device.conftest import (
    SLOW_TOKENS,
    add_netns,
    remove_netns,
    rewrite_manifest,
    running_sshd,
    server_runs,
    sh,
    write_suite,
)

pytestmark = pytest.mark.netns

RATE = "1mbit"  # ~120 kB/s towards the device: a 640 kB file takes ~5 s


@pytest.fixture
def netns_sshd(tmp_path, ssh_keys):
    if os.geteuid() != 0:
        pytest.skip("netns fault tests need root (network namespaces, veth, tc)")
    if not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("netns fault tests need iproute2 (ip, tc): run scripts/setup-test-deps.sh")
    ns = f"et-{os.getpid() % 100000}"
    made = add_netns(ns, f"10.{200 + os.getpid() % 50}.7")
    if made is None:
        pytest.skip("`ip netns add` is not permitted here")
    host_if, address = made
    try:
        sh("tc", "qdisc", "add", "dev", host_if, "root", "tbf", "rate", RATE, "burst", "16kb", "latency", "200ms")
        with running_sshd(tmp_path / "sshd", ssh_keys, port=2222, listen=address,
                          prefix=["ip", "netns", "exec", ns]) as server:
            server.link = host_if
            yield server
    finally:
        remove_netns(ns, host_if)


def preinstall(server, bundle: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """Place the bundle on the "device" directly (same filesystem), so only what a test is about crosses the slow
    link; deploy still hashes every file on the device before it trusts it."""
    name = json.loads((bundle / "manifest.json").read_text())["name"]
    dest = server.folder / "device" / "bundles" / name
    shutil.copytree(bundle, dest, ignore=lambda _d, names: [n for n in names if n in skip])
    return dest


def link(server, state: str) -> None:
    sh("ip", "link", "set", server.link, state)


def fast_fail(server, **options):
    return server.device(keepalive_interval_s=1, keepalive_count_max=2, connect_timeout_s=5, **options)


async def wait_for(predicate, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the device"
        await asyncio.sleep(0.05)


def test_cut_mid_transfer_then_resume(netns_sshd, device_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(device_bundle, bundle)
    (bundle / "big.bin").write_bytes(os.urandom(640 * 1024))
    rewrite_manifest(bundle)
    remote = preinstall(netns_sshd, bundle, skip=("big.bin",)) / "big.bin"

    async def cut_during_upload():
        task = asyncio.create_task(deploy(bundle, fast_fail(netns_sshd)))
        await wait_for(lambda: remote.exists() and remote.stat().st_size > 64 * 1024)
        link(netns_sshd, "down")
        try:
            with pytest.raises(DeviceLost, match="connection lost"):
                await task
        finally:
            link(netns_sshd, "up")

    asyncio.run(cut_during_upload())
    partial = remote.stat().st_size
    assert 0 < partial < 640 * 1024
    done = asyncio.run(deploy(bundle, fast_fail(netns_sshd)))
    assert done.verified and done.resumed == ["big.bin"] == done.sent_files
    assert done.bytes_sent < 640 * 1024  # resumed, not re-sent
    assert remote.read_bytes() == (bundle / "big.bin").read_bytes()


def test_cut_mid_run_is_lost_then_collected_once(netns_sshd, device_bundle, tmp_path):
    n = 32  # >= 8 s of answers on one thread: still running when the lost link is noticed (~2-3 s after the cut)
    suite = write_suite(tmp_path / "suite.jsonl", n, max_tokens=SLOW_TOKENS)
    out = tmp_path / "out"
    jobs = netns_sshd.folder / "device" / "jobs"
    preinstall(netns_sshd, device_bundle)

    async def cut_during_run():
        task = asyncio.create_task(run_eval(device_bundle, fast_fail(netns_sshd), suite, out_dir=out,
                                            timeout_s=120, threads=1))
        await wait_for(lambda: any(jobs.glob("*/progress.jsonl")), timeout_s=60)
        link(netns_sshd, "down")
        try:
            with pytest.raises(DeviceLost):  # lost, never success
                await task
        finally:
            progress = next(jobs.glob("*/progress.jsonl"))
            print(f"items done when the loss was noticed: {len(progress.read_text().splitlines())} of {n}")
            assert not (progress.parent / "results.jsonl").exists(), "the job finished before the cut"
            link(netns_sshd, "up")

    asyncio.run(cut_during_run())
    again = asyncio.run(run_eval(device_bundle, fast_fail(netns_sshd), suite, out_dir=out, timeout_s=120,
                                 threads=1))
    assert again.status in ("joined", "collected")  # still running, or finished while we were away
    rows = [json.loads(line) for line in again.results_path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(n)]  # none lost, none duplicated
    assert server_runs(again.remote_job_dir) == n  # nothing ran twice
