"""A gzip-compressed ``newc`` cpio archive writer: the initramfs format the kernel unpacks.

Owns the output file for the lifetime of a :class:`CpioWriter` (a context manager; the file is
complete and closed on a clean exit). Entries are written in the order given; the writer
creates parent directories implicitly (once each, mode 0755) so the kernel never sees a file
before its directory. Device nodes can be written without privileges (they are only
headers), which is how ``/dev/console`` gets into the image. Ownership is always root:root
and mtimes are 0 so the archive is reproducible for the same inputs.
"""

from __future__ import annotations

import gzip
import os
import stat
from types import TracebackType

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


class CpioWriter:
    def __init__(self, path: str, *, level: int = 9) -> None:
        self._file = gzip.GzipFile(path, "wb", compresslevel=level, mtime=0)
        self._ino = 1
        self._dirs: set[str] = {""}
        self.count = 0
        self.payload_bytes = 0

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self._entry(_TRAILER, 0, b"", nlink=1)
        self._file.close()

    def directory(self, name: str, mode: int = 0o755) -> None:
        name = _clean(name)
        if name in self._dirs:
            return
        self._parents(name)
        self._dirs.add(name)
        self._entry(name, stat.S_IFDIR | mode, b"", nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = _clean(name)
        self._parents(name)
        self._entry(name, stat.S_IFREG | mode, data)
        self.payload_bytes += len(data)

    def symlink(self, name: str, target: str) -> None:
        name = _clean(name)
        self._parents(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = _clean(name)
        self._parents(name)
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def _parents(self, name: str) -> None:
        parent = os.path.dirname(name)
        if parent not in self._dirs:
            self.directory(parent)

    def _entry(
        self, name: str, mode: int, data: bytes, *, nlink: int = 1, rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0,
        )  # fmt: skip
        header = _MAGIC + b"".join(b"%08X" % value for value in fields)
        self._ino += 1
        self._file.write(header + encoded + _pad(len(header) + len(encoded)))
        self._file.write(data + _pad(len(data)))
        if name != _TRAILER:
            self.count += 1


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _clean(name: str) -> str:
    cleaned = os.path.normpath("/" + name).lstrip("/")
    if not cleaned or cleaned == ".":
        raise ValueError(f"bad archive path {name!r}")
    return cleaned
