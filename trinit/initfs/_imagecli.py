"""``trinit image``: build the vminit image (ext4, OCI or cpio), its loader initrd, and the
cross root an image for another architecture is built from.

    trinit image sysroot --arch aarch64 -o cross-aarch64        # Debian arm64 + wheels
    trinit image build --arch aarch64 --cross-root cross-aarch64 --format ext4 -o vminit.ext4
    trinit image loader --arch aarch64 --cross-root cross-aarch64 -o loader.cpio.gz

``trinit initfs build`` (the x86_64 cpio initfs with its own module loading) is unchanged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from trinit import _arch

from . import _ext4, _image, _loader, _oci, _sysroot
from ._build import parse_pairs

FORMATS = ("ext4", "oci", "cpio", "dir")
"""``dir``: the tree itself, for ``rootfstype=virtiofs`` (virtiofsd shares a directory)."""


@dataclass
class ImageReport:
    output: str
    format: str
    arch: str
    bytes: int
    tree_bytes: int
    parts: dict[str, int] = field(default_factory=dict)
    kernel_modules: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"{self.output}: {self.format} for {self.arch}, {self.bytes / 2**20:.1f} MiB "
                 f"({self.tree_bytes / 2**20:.1f} MiB of files)"]  # fmt: skip
        for part, size in sorted(self.parts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {part:<22} {size / 2**20:7.2f} MiB")
        if self.kernel_modules:
            lines.append("  kernel modules: " + " ".join(self.kernel_modules))
        if self.left_out:
            lines.append("  left out (compiled, no build for the target): "
                         + " ".join(self.left_out))  # fmt: skip
        return "\n".join(lines)


def build_image(options: _image.ImageOptions, image_format: str, output: str) -> ImageReport:
    """Stage the image in a temporary directory (removed afterwards, also on failure) and
    pack it as ``image_format`` at ``output``."""
    if image_format not in FORMATS:
        raise ValueError(f"unknown format {image_format!r} (known: {', '.join(FORMATS)})")
    if image_format == "dir":
        if os.path.exists(output):
            raise FileExistsError(f"{output} exists (the dir format writes a new directory)")
        try:
            tree = _image.stage(output, options)
            _ext4.make_devices(tree)
        except BaseException:
            shutil.rmtree(output, ignore_errors=True)
            raise
        return ImageReport(output, image_format, tree.arch.name, _du(output), tree.size,
                           tree.parts, tree.kernel_modules, tree.left_out)  # fmt: skip
    parent = os.path.dirname(os.path.abspath(output))
    staging = tempfile.mkdtemp(prefix=".trinit-image-", dir=parent)
    try:
        tree = _image.stage(os.path.join(staging, "root"), options)
        if image_format == "ext4":
            _ext4.pack_ext4(tree, output)
            size = os.path.getsize(output)
        elif image_format == "oci":
            _oci.pack_oci(tree, output)
            size = _du(output)
        else:
            _image.pack_cpio(tree, output)
            size = os.path.getsize(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImageReport(output, image_format, tree.arch.name, size, tree.size, tree.parts,
                       tree.kernel_modules, tree.left_out)  # fmt: skip


def _du(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def modules_dir_for(arch: _arch.Arch, cross_root: str | None, release: str | None) -> str:
    """/lib/modules/<release> of this machine, or of the cross root for a foreign arch."""
    if cross_root is not None and os.uname().machine != arch.name:
        release = release or _sysroot.kernel_release(cross_root)
        return os.path.join(cross_root, "root/lib/modules", release)
    if release is None:
        raise ValueError("--kernel-release or --modules-dir is needed")
    return os.path.join("/lib/modules", release)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="trinit image", description="build trinit's vminit image and its loader"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    arches = sorted({*_arch.ARCHES, *_arch.ALIASES})
    host = os.uname().machine

    build = sub.add_parser("build", help="the vminit image: /sbin/vminitd and what it runs")
    build.add_argument("--arch", default=host, choices=arches)
    build.add_argument("--format", default="ext4", choices=FORMATS)
    build.add_argument("-o", "--output", required=True)
    build.add_argument("--cross-root", help="from `trinit image sysroot` (foreign --arch)")
    build.add_argument("--kernel-release", help="with --module: the kernel's release")
    build.add_argument("--modules-dir", help="with --module: e.g. /lib/modules/R")
    build.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME",
        help="a kernel module the image loads itself (default: none)",
    )
    build.add_argument("--python-module", action="append", default=[], metavar="NAME")
    build.add_argument("--file", action="append", default=[], metavar="SRC:DEST")
    build.add_argument(
        "--binary",
        action="append",
        default=[],
        metavar="SRC[:DEST]",
        help="an executable and its libraries (SRC in the cross root first)",
    )
    build.add_argument("--agent-arg", action="append", default=[], metavar="ARG")
    build.add_argument("--preinit", metavar="FILE")
    build.add_argument("--optimize", type=int, default=0, choices=(0, 1, 2))
    build.add_argument("--no-strip", action="store_true")

    loader = sub.add_parser("loader", help="initrd that loads modules and mounts root=")
    loader.add_argument("--arch", default=host, choices=arches)
    loader.add_argument("-o", "--output", default="loader.cpio.gz")
    loader.add_argument("--cross-root")
    loader.add_argument("--kernel-release")
    loader.add_argument("--modules-dir")
    loader.add_argument("--busybox", help="a static busybox (default: the arch's Debian one)")
    loader.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME",
        help="another module to load (e.g. vsock_loopback for tests)",
    )

    sysroot = sub.add_parser("sysroot", help="fetch a cross root (Debian packages, wheels)")
    sysroot.add_argument("--arch", required=True, choices=arches)
    sysroot.add_argument("-o", "--output", required=True)
    sysroot.add_argument("--wheel", action="append", default=[], metavar="DIST[==VERSION]")
    sysroot.add_argument("--package", action="append", default=[], metavar="DEBIAN-PACKAGE")

    ns = parser.parse_args(argv)
    arch = _arch.get(ns.arch)
    try:
        if ns.command == "build":
            modules_dir = ns.modules_dir
            if ns.module and modules_dir is None:
                modules_dir = modules_dir_for(arch, ns.cross_root, ns.kernel_release)
            options = _image.ImageOptions(
                arch=arch.name, cross_root=ns.cross_root, modules_dir=modules_dir,
                kernel_modules=ns.module, python_modules=ns.python_module,
                files=parse_pairs(ns.file, default_same=False),
                binaries=parse_pairs(ns.binary, default_same=True),
                agent_args=ns.agent_arg, preinit=ns.preinit, optimize=ns.optimize,
                strip=not ns.no_strip,
            )  # fmt: skip
            print(build_image(options, ns.format, ns.output).describe())
        elif ns.command == "loader":
            modules_dir = ns.modules_dir or modules_dir_for(arch, ns.cross_root, ns.kernel_release)
            busybox = ns.busybox or default_busybox(arch, ns.cross_root)
            modules = [*_loader.BOOT_MODULES, *ns.module]
            report = _loader.build_loader(ns.output, arch, busybox, modules_dir, modules)
            print(report.describe())
        else:
            record = _sysroot.make_cross_root(arch, ns.output, wheels=ns.wheel,
                                              packages=ns.package)  # fmt: skip
            print(f"{ns.output}: {record}")
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"trinit image: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def default_busybox(arch: _arch.Arch, cross_root: str | None) -> str:
    """This machine's /bin/busybox for its own arch, else the cross root's."""
    if cross_root is not None and os.uname().machine != arch.name:
        return os.path.join(cross_root, "root/bin/busybox")
    return shutil.which("busybox") or "/bin/busybox"
