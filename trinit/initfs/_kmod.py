"""Kernel modules for the initfs: resolve names to files and dependency order (build time).

Reads ``<modules_dir>/modules.dep`` (what depmod writes) and ``modules.builtin``. A wanted
name becomes the list of module files it needs, dependencies first, each once; names are
matched the way modprobe does (``-`` and ``_`` are the same). Built-in modules need no file
and are dropped; a name the kernel has neither built in nor as a file is an error, so a
typo never produces an initfs that silently lacks vsock. xz-compressed modules are
decompressed here (finit_module on an uncompressed file works on every kernel).

The loading itself happens at boot, in ``trinit._pid1.load_modules``, in the order written.
"""

from __future__ import annotations

import lzma
import os
from dataclasses import dataclass

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
        with open(self.path, "rb") as file:
            data = file.read()
        return lzma.decompress(data) if self.path.endswith(".xz") else data


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
        with open(os.path.join(modules_dir, "modules.dep"), encoding="utf-8") as file:
            for line in file:
                target, _, rest = line.partition(":")
                if target:
                    self._deps[_module_name(target)] = (target, rest.split())
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
        if relative.endswith(".ko.zst") or relative.endswith(".ko.gz"):
            raise ValueError(f"{relative}: only .ko and .ko.xz modules are supported")
        base = relative[: -len(".xz")] if relative.endswith(".xz") else relative
        return KernelModule(
            name=name,
            path=os.path.join(self.modules_dir, relative),
            archive_path=f"/lib/modules/{self.release}/{base}",
        )
