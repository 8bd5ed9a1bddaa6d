"""The shared libraries an ELF file needs, as this machine's dynamic loader resolves them.

Asks ``ld.so --list`` (what ``ldd`` runs) rather than parsing ELF: the answer then includes
RUNPATH, the loader's default directories and transitive dependencies exactly as they apply
at run time. The initfs keeps every library at the path printed here, so the same lookups
succeed inside the guest. Build-time only.
"""

from __future__ import annotations

import glob
import re
import struct
import subprocess

_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)$")
_DIRECT = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)$")


def loader() -> str:
    """This machine's dynamic loader (``/lib64/ld-linux-x86-64.so.2`` on x86_64)."""
    for pattern in ("/lib64/ld-linux-*.so*", "/lib/ld-linux-*.so*", "/lib/*/ld-linux-*.so*"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise FileNotFoundError("no dynamic loader found")


def needed_libraries(path: str) -> list[str]:
    """Absolute paths (as the loader names them) of every library ``path`` loads, loader
    included; [] for static binaries and non-ELF files."""
    if not _is_dynamic(path):
        return []  # (ld.so --list crashes on some static binaries)
    result = subprocess.run([loader(), "--list", path], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if "not a dynamic executable" in result.stdout + result.stderr:
            return []
        raise RuntimeError(f"ld.so --list {path}: {result.stderr.strip() or result.stdout.strip()}")
    libraries: list[str] = []
    for line in result.stdout.splitlines():
        match = _ARROW.match(line) or _DIRECT.match(line)
        if match:
            libraries.append(match.group(match.lastindex or 1))
        elif "not found" in line:
            raise RuntimeError(f"{path}: {line.strip()}")
    return libraries


_PT_DYNAMIC = 2
_PT_INTERP = 3
_ET_DYN = 3


def _is_dynamic(path: str) -> bool:
    """An ELF64 executable with an interpreter, or a shared object with a dynamic section."""
    with open(path, "rb") as file:
        head = file.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        e_type = struct.unpack_from("<H", head, 16)[0]
        phoff = struct.unpack_from("<Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        file.seek(phoff)
        table = file.read(phentsize * phnum)
    types = {struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)}
    if _PT_INTERP in types:
        return True
    return e_type == _ET_DYN and _PT_DYNAMIC in types and ".so" in path.rsplit("/", 1)[-1]
