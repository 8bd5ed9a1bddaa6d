#!/usr/bin/env bash
# The aarch64 leg of the VM tests (tests/vm/test_aarch64.py, marker `vm_aarch64`) on a
# Debian machine of another architecture (run as root, after scripts/setup.sh); idempotent.
#
#   qemu-system-arm      qemu-system-aarch64 (`-M virt -cpu max`, TCG)
#   arm64 in dpkg        so `apt-get download PKG:arm64` works (nothing arm64 is installed)
#   the cross root       `trinit image sysroot`: Debian's arm64 python3.11, its libraries,
#                        busybox-static and linux-image-arm64 unpacked with dpkg -x, plus
#                        the aarch64 wheels of protobuf and grpcio (the in-guest driver)
#
# The cross root goes to $TRINIT_CROSS_ROOTS/cross-aarch64 (default /var/cache/trinit).
set -euo pipefail
cd "$(dirname "$0")/.."
roots="${TRINIT_CROSS_ROOTS:-/var/cache/trinit}"
export DEBIAN_FRONTEND=noninteractive
if [ "$(uname -m)" != aarch64 ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64
        apt-get update -qq
    fi
fi
if ! command -v qemu-system-aarch64 >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-system-arm >/dev/null
fi
if [ ! -f "$roots/cross-aarch64/cross-root.json" ]; then
    mkdir -p "$roots"
    .venv/bin/trinit image sysroot --arch aarch64 --wheel grpcio -o "$roots/cross-aarch64"
fi
echo "aarch64-deps: qemu-system-aarch64 and $roots/cross-aarch64 ready"
