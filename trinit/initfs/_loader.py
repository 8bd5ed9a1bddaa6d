"""The loader initrd: boots the vminit image on a kernel that has its drivers as modules.

Apple's kernel has virtio-blk, ext4, virtiofs and vsock built in and mounts the root itself
(``init=/sbin/vminitd ro rootfstype=ext4 root=/dev/vda``). Debian's kernel has them as
modules, and modules live on a filesystem the kernel cannot mount without them. The loader
is a small initramfs that closes that gap without changing the command line: it loads
exactly the modules named (by default the virtio transports, virtio_blk, ext4 and what it
needs, virtiofs, the vsock transport and binfmt_misc for SetupEmulator), mounts ``root=``
with ``rootfstype=`` and ``rootflags=`` (read-only for ``ro``, the kernel's default), moves
devtmpfs onto the new root's /dev and ``switch_root``s to ``init=`` with the arguments
after ``--``. Variables
the kernel put in init's environment pass through.

Why busybox and a shell script: the loader must work before any root filesystem is
mounted, so it cannot use the image's interpreter; Debian's static busybox (the target
architecture's ``busybox-static``) is one 2 MiB file with insmod, mount, switch_root and a
shell, and the script (:data:`SCRIPT`) reads top to bottom like the boot contract it
implements. A Python loader would have to carry the interpreter and its libraries a second
time (~10 MiB). A boot failure prints ``trinit-loader: fatal: <reason>; powering off`` and
powers the VM off (like trinit's own failures), rather than panicking.

``root=`` must be a device path (``/dev/vda``) or, for virtiofs, the tag; LABEL= and
UUID= forms are not supported (Apple's host never uses them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from trinit._arch import Arch

from . import _elfdeps, _kmod
from ._cpio import CpioWriter

BOOT_MODULES = (
    "virtio_pci", "virtio_mmio", "virtio_blk",
    "crc32c_generic",  # ext4's metadata checksums (a soft dependency modules.dep omits)
    "ext4", "virtiofs", *_kmod.VSOCK_MODULES, "binfmt_misc",
)  # fmt: skip
"""What the vminit contract needs from the kernel, as Debian's kernel splits it."""

SCRIPT = r"""#!/bin/busybox sh
# trinit loader (written by `trinit image loader`, see trinit/initfs/_loader.py):
# load the modules, mount root= read-only, switch_root to init=.
export PATH=/bin
fatal() {
    echo "trinit-loader: fatal: $*; powering off" >&2
    sync
    poweroff -f
    exit 1
}
mount -t proc proc /proc || fatal "mount /proc"
mount -t devtmpfs -o mode=0755 devtmpfs /dev || fatal "mount devtmpfs on /dev"
while read -r module; do
    insmod "$module" || fatal "insmod $module"
done < /etc/loader/modules
root=
fstype=
flags=ro
rootflags=
init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        --) break ;;
        root=*) root="${arg#root=}" ;;
        rootfstype=*) fstype="${arg#rootfstype=}" ;;
        rootflags=*) rootflags="${arg#rootflags=}" ;;
        init=*) init="${arg#init=}" ;;
        ro) flags=ro ;;
        rw) flags=rw ;;
    esac
done
[ -n "$root" ] || fatal "no root= on the kernel command line"
case "$root" in
    /dev/*)
        # virtio_blk registers the disk while insmod runs; devtmpfs may add the node a
        # moment later (bounded wait: 10 s)
        tries=0
        while [ ! -b "$root" ]; do
            tries=$((tries + 1))
            [ "$tries" -le 1000 ] || fatal "root device $root did not appear"
            usleep 10000
        done ;;
esac
mount ${fstype:+-t "$fstype"} -o "$flags${rootflags:+,$rootflags}" "$root" /newroot \
    || fatal "mount $root (${fstype:-auto}, $flags) on /newroot"
[ -x "/newroot$init" ] || fatal "init $init not found on $root"
mount --move /dev /newroot/dev || fatal "move /dev to the new root"
umount /proc
echo "trinit-loader: root $root ($fstype, $flags) mounted; starting $init" >&2
exec switch_root /newroot "$init" "$@"
"""


@dataclass
class LoaderReport:
    output: str
    compressed_bytes: int
    modules: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.output}: {self.compressed_bytes / 2**20:.1f} MiB; modules: "
                f"{' '.join(self.modules) or '(none)'}")  # fmt: skip


def build_loader(
    output: str,
    arch: Arch,
    busybox: str,
    modules_dir: str,
    modules: Sequence[str] = BOOT_MODULES,
) -> LoaderReport:
    """Write the loader initrd (gzip cpio) to ``output``.

    ``busybox`` must be a static busybox for ``arch``. Raises ValueError for a wrong
    busybox, FileNotFoundError for a module the kernel has neither built in nor as a file.
    """
    info = _elfdeps.read(busybox)
    if info is None or info.machine != arch.elf_machine:
        raise ValueError(f"{busybox}: not an {arch.name} ELF executable")
    if info.dynamic:
        raise ValueError(f"{busybox}: dynamically linked (the loader needs busybox-static)")
    index = _kmod.ModuleIndex(modules_dir)
    resolved = index.resolve(list(modules))
    partial = output + ".partial"
    try:
        with CpioWriter(partial) as cpio:
            for directory in ("proc", "sys", "dev", "newroot", "bin", "etc/loader"):
                cpio.directory(directory)
            cpio.char_device("dev/console", 5, 1)
            cpio.char_device("dev/null", 1, 3, 0o666)
            with open(busybox, "rb") as file:
                cpio.file("bin/busybox", file.read(), 0o755)
            for applet in ("sh", "mount", "umount", "insmod", "switch_root", "cat",
                           "poweroff", "sync", "usleep"):  # fmt: skip
                cpio.symlink(f"bin/{applet}", "busybox")
            cpio.file("init", SCRIPT.encode(), 0o755)
            for module in resolved:
                cpio.file(module.archive_path, module.read(), 0o644)
            listing = "".join(f"{m.archive_path}\n" for m in resolved)
            cpio.file("etc/loader/modules", listing.encode())
        os.replace(partial, output)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return LoaderReport(output, os.path.getsize(output), [m.name for m in resolved])
