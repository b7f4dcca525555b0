#!/usr/bin/env bash
# Prepare the emulated Raspberry Pi 5 that tests/pi/ runs bundles in (root only; idempotent; CI calls it):
#   1. apt-get install qemu-user-static binfmt-support debootstrap (only those missing)
#   2. mount binfmt_misc and enable qemu-aarch64 (aarch64 ELF files then run through QEMU, also in a chroot)
#   3. debootstrap a minimal arm64 Debian 12 with python3 and openssh-server (nothing else) once, kept as a
#      tarball: $EDGETUNE_HOME/pi-rootfs/debian-bookworm-arm64-minbase-python3-sshd.tar.gz
#      A later run finds it and ends in seconds (a tarball of an older recipe is removed and rebuilt). The tests
#      unpack it into a temp folder and chroot into it with QEMU_CPU=cortex-a76, so an instruction a Pi 5 lacks
#      (SVE, i8mm) raises SIGILL as on the board; tests/pi also starts the rootfs's own arm64 sshd there and
#      deploys to it over SSH. The package's generated host keys are removed: each test makes its own.
# Functional checks only: speeds under emulation mean nothing.
#
#   usage: sudo scripts/setup-pi-emulation.sh        (prints the tarball path on stdout)
#   MIRROR   Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   Exit 77 with the reason on stderr when this machine cannot emulate (not root, binfmt_misc cannot be
#   mounted, packages cannot be installed); tests/pi skips on 77 and fails on anything else.
#   EDGETUNE_REQUIRE_TIERS=1 (CI: .ci/run) makes each of those exit 1 with one error line instead.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${EDGETUNE_HOME:-$HOME/.cache/edgetune}
RECIPE=minbase-python3-sshd  # change it whenever the package set changes: an old tarball is then rebuilt
INCLUDE=python3,openssh-server
TARBALL=$CACHE/pi-rootfs/debian-$SUITE-arm64-$RECIPE.tar.gz
BINFMT=/proc/sys/fs/binfmt_misc

unsupported() {
  if [ "${EDGETUNE_REQUIRE_TIERS:-}" = 1 ]; then
    echo "error: pi emulation unavailable (EDGETUNE_REQUIRE_TIERS=1): $*" >&2
    exit 1
  fi
  echo "pi emulation unavailable: $*" >&2
  exit 77
}

[ "$(id -u)" -eq 0 ] || unsupported "needs root (apt-get, binfmt_misc, chroot); run with sudo"

missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; } || unsupported "could not apt-get install ${missing[*]}"
fi

if [ ! -e "$BINFMT/register" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null || unsupported "binfmt_misc cannot be mounted on $BINFMT"
fi
if ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null || unsupported "could not enable qemu-aarch64 in $BINFMT"
fi
# 'F' (fix binary): the kernel opens QEMU now, so it also runs aarch64 programs inside a chroot without a copy
grep -q '^flags:.*F' "$BINFMT/qemu-aarch64" || unsupported "qemu-aarch64 is registered without the F flag"

mkdir -p "$(dirname "$TARBALL")"
# one build at a time (two test sessions may start together); the second waits, then finds the tarball
exec 9>"$(dirname "$TARBALL")/.build.lock"
flock 9
if [ -f "$TARBALL" ]; then echo "$TARBALL"; exit 0; fi
echo "==> debootstrap arm64 $SUITE minbase + ${INCLUDE//,/ + } (~8 minutes: the second stage runs under QEMU)" >&2
START=$(date +%s)
ROOT=$(mktemp -d "${TMPDIR:-/tmp}/edgetune-pi-rootfs.XXXXXX")
trap 'rm -rf "$ROOT" "$TARBALL.tmp"' EXIT
debootstrap --arch=arm64 --variant=minbase --include="$INCLUDE" --foreign "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 \
  || { tail -20 "$ROOT.log" >&2; rm -f "$ROOT.log"; echo "error: debootstrap (first stage) failed" >&2; exit 1; }
# the second stage mounts /proc and /sys in the rootfs: do it in a private mount namespace so nothing leaks
unshare --mount --propagation private chroot "$ROOT" /debootstrap/debootstrap --second-stage >"$ROOT.log" 2>&1 \
  || { tail -20 "$ROOT.log" >&2; rm -f "$ROOT.log"; echo "error: debootstrap (second stage) failed" >&2; exit 1; }
rm -f "$ROOT.log"
chroot "$ROOT" /usr/bin/python3 -c 'import json, urllib.request, fcntl' \
  || { echo "error: python3 does not run in the arm64 rootfs" >&2; exit 1; }
version=$(chroot "$ROOT" /usr/sbin/sshd -V 2>&1 || true)
grep -q OpenSSH <<<"$version" || { echo "error: sshd does not run in the arm64 rootfs: $version" >&2; exit 1; }
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/debootstrap "$ROOT"/etc/ssh/ssh_host_*
tar -C "$ROOT" -czf "$TARBALL.tmp" .
mv "$TARBALL.tmp" "$TARBALL"
for old in "$(dirname "$TARBALL")"/debian-$SUITE-arm64-*.tar.gz; do  # tarballs of older recipes
  [ "$old" = "$TARBALL" ] || rm -f "$old"
done
echo "arm64 rootfs ready in $(( $(date +%s) - START ))s: $TARBALL ($(du -h "$TARBALL" | cut -f1))" >&2
echo "$TARBALL"
