"""The initfs builder: a bootable initramfs with trinit as PID 1 (``trinit initfs build``).

* ``_build``: :func:`build_initfs` assembles the image from :class:`InitfsOptions`;
* ``_pysel``: which Python modules the guest needs;
* ``_elf``: which shared libraries an executable needs;
* ``_kmod``: kernel modules and their load order;
* ``_cpio``: the archive format;
* ``_launcher``: the ``/sbin/init`` launcher.

``trinit image`` (``_imagecli``) builds the vminit image for any architecture:

* ``_image``: the tree (``/sbin/vminitd``, the interpreter under ``/usr/lib/trinit``);
* ``_ext4``, ``_oci``: its packers (``_image.pack_cpio`` for an initramfs);
* ``_loader``: the busybox initrd that boots it on a kernel with modular drivers;
* ``_sysroot``: the cross root (Debian packages, wheels) for a foreign architecture;
* ``_elfdeps``: an ELF reader and library resolver that needs no foreign ``ld.so``.

Build-time only: nothing here runs in the guest (the boot-time module loader is in
``trinit._pid1``).
"""

from ._build import BuildReport, InitfsOptions, build_initfs
from ._cli import main
from ._image import ImageOptions
from ._imagecli import ImageReport, build_image, default_busybox, modules_dir_for
from ._imagecli import main as image_main
from ._kmod import LATE_MODULES, VSOCK_MODULES
from ._loader import BOOT_MODULES, build_loader
from ._sysroot import make_cross_root

__all__ = [
    "BOOT_MODULES",
    "LATE_MODULES",
    "VSOCK_MODULES",
    "BuildReport",
    "ImageOptions",
    "ImageReport",
    "InitfsOptions",
    "build_image",
    "build_initfs",
    "build_loader",
    "default_busybox",
    "image_main",
    "main",
    "make_cross_root",
    "modules_dir_for",
]
