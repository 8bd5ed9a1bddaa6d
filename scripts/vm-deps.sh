#!/usr/bin/env bash
# Install what the VM tests (tests/vm/, marker `vm`) need on a Debian machine; idempotent.
#
#   qemu-system-x86     QEMU (the tests use TCG: `-accel tcg`)
#   linux-image-amd64   Debian's stock kernel: /boot/vmlinuz-<release> and
#                       /lib/modules/<release> (the vsock modules go into the initfs)
#   busybox-static      the container rootfs and socat's companion in the guest
#   socat               the vsock relay the stdio benchmark compares against
#
# Only packages are installed; nothing here changes this machine's boot configuration
# (the kernel package may run initramfs-tools, which only writes /boot/initrd.img-*).
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-*' >/dev/null || need+=(linux-image-amd64)
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v socat >/dev/null 2>&1 || need+=(socat)
if [ ${#need[@]} -eq 0 ]; then
    echo "vm-deps: everything is installed"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
echo "vm-deps: installed ${need[*]}"
ls /boot/vmlinuz-* /lib/modules
