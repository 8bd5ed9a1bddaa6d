"""A small ELF reader and shared-library resolver that works for any architecture.

``_elf`` asks this machine's ``ld.so --list``, which can only answer for binaries this
machine can run. An aarch64 image built on x86_64 needs the same answer for foreign
binaries, so here the ELF file itself is read: the ELF header (class, byte order,
``e_machine``), PT_INTERP (the dynamic loader) and the dynamic section's DT_NEEDED,
DT_RUNPATH/DT_RPATH and DT_SONAME. :class:`Resolver` then looks every needed name up the
way glibc's loader does (the object's RUNPATH/RPATH with ``$ORIGIN``, then the
configured and the default directories: Debian's multiarch ``/lib/<tuple>`` and
``/usr/lib/<tuple>``, then ``/lib`` and ``/usr/lib``) inside a *root*: ``/`` for this
machine, or a tree unpacked from Debian's packages for another architecture. Symbolic links
are followed inside that root, never out to the build machine.

Only ELF64 little-endian is handled (x86_64 and aarch64); every object must carry the
target's ``e_machine``, so an x86_64 library can never slip into an aarch64 image.
Build-time only.
"""

from __future__ import annotations

import glob
import os
import struct
from dataclasses import dataclass

from trinit._arch import Arch

_PT_LOAD = 1
_PT_DYNAMIC = 2
_PT_INTERP = 3
_DT_NULL = 0
_DT_NEEDED = 1
_DT_STRTAB = 5
_DT_SONAME = 14
_DT_RPATH = 15
_DT_RUNPATH = 29


@dataclass(frozen=True)
class ElfInfo:
    machine: int
    interpreter: str | None  # PT_INTERP: the dynamic loader; None for static files and .so
    needed: tuple[str, ...]  # DT_NEEDED, in order
    search_path: tuple[str, ...]  # DT_RUNPATH (or DT_RPATH when there is no RUNPATH)
    soname: str | None

    @property
    def dynamic(self) -> bool:
        return self.interpreter is not None or bool(self.needed)


def read(path: str) -> ElfInfo | None:
    """The dynamic-linking facts of ``path``; None when it is not an ELF file.

    Raises ValueError for ELF files this reader does not handle (32-bit, big-endian)."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:4] != b"\x7fELF":
        return None
    if data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: only 64-bit little-endian ELF is supported")
    machine = struct.unpack_from("<H", data, 18)[0]
    phoff = struct.unpack_from("<Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads: list[tuple[int, int, int]] = []  # (vaddr, filesz, offset)
    interpreter = None
    dynamic: tuple[int, int] | None = None
    for index in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + index * phentsize
        )
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
        elif p_type == _PT_INTERP:
            interpreter = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode()
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return ElfInfo(machine, interpreter, (), (), None)
    entries: list[tuple[int, int]] = []
    offset, size = dynamic
    for at in range(offset, offset + size, 16):
        tag, value = struct.unpack_from("<qQ", data, at)
        if tag == _DT_NULL:
            break
        entries.append((tag, value))
    strtab = next((v for t, v in entries if t == _DT_STRTAB), None)
    if strtab is None:
        raise ValueError(f"{path}: dynamic section without DT_STRTAB")
    base = _file_offset(loads, strtab, path)

    def string(offset: int) -> str:
        end = data.index(b"\0", base + offset)
        return data[base + offset : end].decode()

    needed = tuple(string(v) for t, v in entries if t == _DT_NEEDED)
    runpath = [string(v) for t, v in entries if t == _DT_RUNPATH]
    rpath = [string(v) for t, v in entries if t == _DT_RPATH]
    search = tuple(p for entry in (runpath or rpath) for p in entry.split(":") if p)
    soname = next((string(v) for t, v in entries if t == _DT_SONAME), None)
    return ElfInfo(machine, interpreter, needed, search, soname)


def _file_offset(loads: list[tuple[int, int, int]], address: int, path: str) -> int:
    for vaddr, filesz, offset in loads:
        if vaddr <= address < vaddr + filesz:
            return address - vaddr + offset
    raise ValueError(f"{path}: address {address:#x} is in no loaded segment")


class Resolver:
    """Resolves the libraries ELF objects need, inside ``root`` for architecture ``arch``."""

    def __init__(self, root: str, arch: Arch) -> None:
        self.root = os.path.abspath(root)
        self.arch = arch
        configured = _ld_so_conf(self.root)
        defaults = [f"/lib/{arch.multiarch}", f"/usr/lib/{arch.multiarch}", "/lib", "/usr/lib"]
        self.directories = list(dict.fromkeys([*configured, *defaults]))

    def host_path(self, path: str) -> str:
        """The build-machine file behind absolute ``path`` of the root (links followed
        inside the root)."""
        if self.root == "/":
            return os.path.realpath(path)
        return _resolve_in_root(self.root, path)

    def check(self, source: str, info: ElfInfo | None) -> None:
        """Raise ValueError unless ``info`` (read from ``source``) is for this architecture."""
        if info is not None and info.machine != self.arch.elf_machine:
            raise ValueError(
                f"{source}: ELF machine {info.machine}, not {self.arch.name} "
                f"({self.arch.elf_machine})"
            )

    def closure(self, source: str) -> list[str]:
        """Absolute paths in the root (loader first) of every library ``source`` loads,
        directly or not; [] for static and non-ELF files.

        ``source`` is a build-machine path. Libraries found through ``$ORIGIN`` outside the
        root (those a wheel bundles next to its extension) are left out: they travel with
        their package. Raises FileNotFoundError naming a library that cannot be found."""
        info = read(source)
        self.check(source, info)
        if info is None or not info.dynamic:
            return []
        found: list[str] = []
        if info.interpreter is not None:
            found.append(info.interpreter)
            self.host_path(info.interpreter)  # raises when the loader is missing
        seen: set[str] = set()
        queue: list[tuple[str, ElfInfo]] = [(source, info)]
        while queue:
            path, current = queue.pop(0)
            for name in current.needed:
                if name in seen:
                    continue
                seen.add(name)
                if name == os.path.basename(self.arch.loader):
                    # libc names the loader; it is the one PT_INTERP maps (ld.so does the same)
                    if self.arch.loader not in found:
                        found.append(self.arch.loader)
                    continue
                located = self._locate(name, path, current)
                if located is None:
                    raise FileNotFoundError(f"{source}: needed library {name} not found in "
                                            f"{self.root} ({self.arch.name})")  # fmt: skip
                image_path, host = located
                child = read(host)
                self.check(host, child)
                if image_path is not None and image_path not in found:
                    found.append(image_path)
                if child is not None:
                    queue.append((host, child))
        return found

    def _locate(self, name: str, origin: str, info: ElfInfo) -> tuple[str | None, str] | None:
        """(path in the root or None when found beside ``origin``, build-machine path)."""
        if "/" in name:
            return name, self.host_path(name)
        for directory in info.search_path:
            if "$ORIGIN" in directory or "${ORIGIN}" in directory:
                here = os.path.dirname(os.path.abspath(origin))
                local = directory.replace("${ORIGIN}", here).replace("$ORIGIN", here)
                candidate = os.path.normpath(os.path.join(local, name))
                if os.path.isfile(candidate):
                    inside = self._inside_root(candidate)
                    return inside, candidate
                continue
            hit = self._in_root(os.path.join(directory, name))
            if hit is not None:
                return hit
        for directory in self.directories:
            hit = self._in_root(os.path.join(directory, name))
            if hit is not None:
                return hit
        return None

    def _in_root(self, path: str) -> tuple[str, str] | None:
        try:
            host = self.host_path(path)
        except FileNotFoundError:
            return None
        if not os.path.isfile(host):
            return None
        info = read(host)
        if info is None or info.machine != self.arch.elf_machine:
            return None  # the loader skips incompatible objects too
        return path, host

    def _inside_root(self, host: str) -> str | None:
        if self.root == "/":
            return host
        rel = os.path.relpath(host, self.root)
        return None if rel.startswith("..") else "/" + rel


def _resolve_in_root(root: str, path: str, depth: int = 0) -> str:
    """Follow ``path`` component by component inside ``root`` (absolute links restart at
    ``root``, ``..`` stops there); FileNotFoundError when a component is missing."""
    if depth > 40:
        raise FileNotFoundError(f"{path}: too many levels of symbolic links in {root}")
    current = "/"
    parts = [p for p in path.split("/") if p and p != "."]
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        host = os.path.join(root, candidate.lstrip("/"))
        if os.path.islink(host):
            target = os.readlink(host)
            base = "/" if target.startswith("/") else current
            rest = "/".join(parts)
            joined = os.path.join(base, target, rest) if rest else os.path.join(base, target)
            return _resolve_in_root(root, joined, depth + 1)
        if not os.path.lexists(host):
            raise FileNotFoundError(f"{path} not found in {root}")
        current = candidate
    return os.path.join(root, current.lstrip("/"))


def _ld_so_conf(root: str) -> list[str]:
    """Directories listed in the root's /etc/ld.so.conf.d/*.conf (includes not followed
    further: Debian's ld.so.conf only includes that directory)."""
    directories: list[str] = []
    for conf in sorted(glob.glob(os.path.join(root, "etc/ld.so.conf.d/*.conf"))):
        try:
            with open(conf, encoding="utf-8") as file:
                for line in file:
                    line = line.split("#", 1)[0].strip()
                    if line.startswith("/"):
                        directories.append(line)
        except OSError:
            continue
    return directories
