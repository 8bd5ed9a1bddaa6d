"""The initfs builder: a bootable initramfs with trinit as PID 1 (``trinit initfs build``).

* ``_build``: :func:`build_initfs` assembles the image from :class:`InitfsOptions`;
* ``_pysel``: which Python modules the guest needs;
* ``_elf``: which shared libraries an executable needs;
* ``_kmod``: kernel modules and their load order;
* ``_cpio``: the archive format;
* ``_launcher``: the ``/sbin/init`` launcher.

Build-time only: nothing here runs in the guest (the boot-time module loader is in
``trinit._pid1``).
"""

from ._build import BuildReport, InitfsOptions, build_initfs
from ._cli import main
from ._kmod import LATE_MODULES, VSOCK_MODULES

__all__ = [
    "LATE_MODULES",
    "VSOCK_MODULES",
    "BuildReport",
    "InitfsOptions",
    "build_initfs",
    "main",
]
