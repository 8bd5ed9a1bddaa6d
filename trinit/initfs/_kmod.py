"""Kernel modules for the initfs: resolve names to files and dependency order (build time).

Reads ``<modules_dir>/modules.dep`` (what depmod writes) and ``modules.builtin``. A wanted
name becomes the list of module files it needs, dependencies first, each once; names are
matched the way modprobe does (``-`` and ``_`` are the same). Built-in modules need no file
and are dropped; a name the kernel has neither built in nor as a file is an error, so a
typo never produces an initfs that silently lacks vsock. Compressed modules (``.ko.xz``,
``.ko.gz``, ``.ko.zst``: Debian ships ``.ko.xz`` since bookworm's later kernels) are
decompressed here and stored as ``.ko``: finit_module takes a compressed file only on kernels
built with MODULE_DECOMPRESS, an uncompressed one on every kernel. xz and gzip use the
standard library; zstd has none there, so it needs the ``zstd`` binary.

The loading itself happens at boot, in ``trinit._pid1.load_modules``, in the order written.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess
from dataclasses import dataclass

COMPRESSED_SUFFIXES = (".xz", ".gz", ".zst")

VSOCK_MODULES = (
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
)
"""Loaded before the API listens: without them there is no AF_VSOCK."""

TEST_EARLY_MODULES = ("vsock_loopback",)
"""Never in a production image (it lets guest processes reach guest vsock listeners through
CID 1); when a test build asks for one with ``--module``, it loads with the early ones."""

LATE_MODULES = ("virtio_pci", "binfmt_misc")
"""Optional modules of a default image: virtio_pci lets virtio_vsock find the VMM's device on
kernels where it is a module (Debian's), binfmt_misc backs SetupEmulator. Loaded once the API
listens, except those in :data:`EARLY_OPTIONAL_MODULES`."""

EARLY_OPTIONAL_MODULES = ("binfmt_misc",)
"""Loaded before the API listens when the image has them: binfmt_misc is mounted in the same
boot step, so SetupEmulator works as the host's very first call (a few KiB, no devices)."""


@dataclass(frozen=True)
class KernelModule:
    name: str
    path: str  # absolute path of the .ko/.ko.xz on this machine
    archive_path: str  # where it goes in the initfs (always an uncompressed .ko)

    def read(self) -> bytes:
        """The module's ELF image, decompressed (ValueError if it is not one)."""
        with open(self.path, "rb") as file:
            data = file.read()
        if self.path.endswith(".xz"):
            data = lzma.decompress(data)
        elif self.path.endswith(".gz"):
            data = gzip.decompress(data)
        elif self.path.endswith(".zst"):
            data = _unzstd(self.path)
        if not data.startswith(b"\x7fELF"):
            raise ValueError(f"{self.path}: not a kernel module (no ELF header)")
        return data


def _unzstd(path: str) -> bytes:
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ValueError(
            f"{path} is zstd-compressed and there is no zstd binary to decompress it "
            "(apt-get install zstd)"
        )
    result = subprocess.run([zstd, "-d", "-q", "-c", path], capture_output=True, check=False)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip() or f"status {result.returncode}"
        raise ValueError(f"{path}: zstd -d failed: {reason}")
    return result.stdout


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _module_name(relative: str) -> str:
    base = os.path.basename(relative)
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            return _norm(base[: -len(suffix)])
    return _norm(base)


class ModuleIndex:
    """``modules.dep`` and ``modules.builtin`` of one kernel release."""

    def __init__(self, modules_dir: str) -> None:
        self.modules_dir = modules_dir
        self.release = os.path.basename(os.path.normpath(modules_dir))
        self._deps: dict[str, tuple[str, list[str]]] = {}
        try:
            with open(os.path.join(modules_dir, "modules.dep"), encoding="utf-8") as file:
                for line in file:
                    target, _, rest = line.partition(":")
                    if target:
                        self._deps[_module_name(target)] = (target, rest.split())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{modules_dir}/modules.dep not found: not a kernel's modules directory "
                "(the releases here are in /lib/modules)"
            ) from None
        self._builtin: set[str] = set()
        try:
            with open(os.path.join(modules_dir, "modules.builtin"), encoding="utf-8") as file:
                self._builtin = {_module_name(line.strip()) for line in file if line.strip()}
        except FileNotFoundError:
            pass

    def resolve(self, names: list[str] | tuple[str, ...]) -> list[KernelModule]:
        """The files for ``names`` and their dependencies, dependencies first, each once."""
        ordered: list[KernelModule] = []
        seen: set[str] = set()

        def visit(relative: str) -> None:
            name = _module_name(relative)
            if name in seen:
                return
            seen.add(name)
            for dependency in self._deps.get(name, (relative, []))[1]:
                visit(dependency)
            ordered.append(self._module(name, relative))

        for wanted in names:
            key = _norm(wanted)
            if key in self._deps:
                visit(self._deps[key][0])
            elif key not in self._builtin:
                raise FileNotFoundError(f"kernel module {wanted!r} not found in {self.modules_dir}")
        return ordered

    def _module(self, name: str, relative: str) -> KernelModule:
        base = relative
        for suffix in COMPRESSED_SUFFIXES:
            if base.endswith(".ko" + suffix):
                base = base[: -len(suffix)]
        return KernelModule(
            name=name,
            path=os.path.join(self.modules_dir, relative),
            archive_path=f"/lib/modules/{self.release}/{base}",
        )
