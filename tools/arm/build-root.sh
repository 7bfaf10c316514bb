#!/usr/bin/env bash
# Build (once) and cache a Debian bookworm arm64 root (Raspberry Pi OS base, Python 3.11)
# for running the edge runtime under qemu-user emulation. Usage: build-root.sh ROOT [SUITE]
set -euo pipefail
ROOT=${1:?usage: build-root.sh ROOT [SUITE]}
SUITE=${2:-bookworm}
# The Debian mirror this machine's apt uses (enabled .list/.sources files only), unless given.
apt_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -E '^(deb |URIs:)' | grep -oE 'https?://[^ ]+' | grep -v -- '-security' | head -n1 || true
}
MIRROR=${ARM_MIRROR:-$(apt_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
  apt-get install -y -q qemu-user-static debootstrap binfmt-support >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  echo "error: binfmt_misc has no qemu-aarch64 entry; install qemu-user-static and binfmt-support" >&2
  exit 2
fi

if [ -f "$ROOT/.edgesight-root-ok" ]; then
  echo "arm root: reusing $ROOT"
  exit 0
fi
rm -rf "$ROOT"
mkdir -p "$(dirname "$ROOT")"
start=$(date +%s)
debootstrap --arch=arm64 --variant=minbase \
  --include=python3,python3-venv,python3-pip,ca-certificates "$SUITE" "$ROOT" "$MIRROR"
# Pitfalls from the issue: onnxruntime needs an aarch64 /proc/cpuinfo (we never mount the
# host /proc, so a plain file stays); LiteRT's thread count follows the /sys cpu files.
here=$(cd "$(dirname "$0")" && pwd)
install -D -m 644 "$here/cpuinfo-rpi4.txt" "$ROOT/proc/cpuinfo"
mkdir -p "$ROOT/sys/devices/system/cpu"
for f in possible present online; do echo 0-3 > "$ROOT/sys/devices/system/cpu/$f"; done
echo "arm root: $SUITE built in $(( $(date +%s) - start )) s (host side, $MIRROR)"
touch "$ROOT/.edgesight-root-ok"
