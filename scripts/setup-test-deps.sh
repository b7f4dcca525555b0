#!/usr/bin/env bash
# System packages the test suite needs beyond pip: Debian's chromium, which tests/report drives headless
# through playwright (executable_path=/usr/bin/chromium; `playwright install` is never run, so no browser is
# downloaded); OpenSSH server and client for tests/device (an unprivileged sshd per test); iproute2 (ip, tc)
# for the `netns` fault tests. Idempotent; run as root (CI calls it before the tests). First, the Python test
# dependencies: edgetune's [test] extra (pytest, playwright, mlflow-skinny, scipy, mypy, ...) into the .venv that
# scripts/setup.sh made.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || { echo "error: no .venv here; run scripts/setup.sh first" >&2; exit 1; }
echo "==> installing the test dependencies (edgetune[test]) into .venv" >&2
.venv/bin/python -m pip --disable-pip-version-check -q install -e ".[test]"

if [ "$(id -u)" -ne 0 ]; then
  if [ "${EDGETUNE_REQUIRE_TIERS:-}" = 1 ]; then  # CI (.ci/run): every tier must run, so this is fatal there
    echo "error: not root, so the chromium, sshd, netns and pi tiers cannot be set up (EDGETUNE_REQUIRE_TIERS=1)" >&2
    exit 1
  fi
  # not fatal elsewhere: the tiers that need these packages skip with the reason, the rest of the suite runs
  echo "warning: not root, so no Debian packages installed; the chromium, sshd, netns and pi tiers will skip" >&2
  exit 0
fi

PACKAGES=(chromium openssh-server openssh-client iproute2)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "==> already installed: ${PACKAGES[*]}" >&2
fi

chromium --version >&2 2>/dev/null

# the emulated Raspberry Pi 5 tier (tests/pi): qemu-user + an arm64 Debian rootfs (python3 and its own sshd),
# cached; exit 77 means this machine cannot emulate (no binfmt_misc): the tier then skips with that reason (under
# EDGETUNE_REQUIRE_TIERS=1 the script exits 1 instead, which ends this one)
scripts/setup-pi-emulation.sh || { rc=$?; [ "$rc" -eq 77 ] || exit "$rc"; echo "==> no Pi emulation here (exit 77)" >&2; }
