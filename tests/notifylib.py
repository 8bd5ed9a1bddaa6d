"""Counting real opens of a file with inotify: an ``O_PATH`` open is not reported, any
other open is (even one of a device node or FIFO that fails or never blocks)."""

from __future__ import annotations

import os
from pathlib import Path

from trinit import _linux as linux

IN_OPEN = 0x00000020  # linux/inotify.h


class OpenWatch:
    """``with OpenWatch(path) as watch: ... watch.opens()`` counts opens since the last call."""

    def __init__(self, path: Path) -> None:
        self._fd = linux.inotify_init1(linux.IN_NONBLOCK | linux.IN_CLOEXEC)
        try:
            linux.inotify_add_watch(self._fd, str(path), IN_OPEN)
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> OpenWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def opens(self) -> int:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return 0
        count, offset = 0, 0
        while offset + 16 <= len(data):  # struct inotify_event: wd, mask, cookie, len, name
            mask = int.from_bytes(data[offset + 4 : offset + 8], "little")
            count += bool(mask & IN_OPEN)
            offset += 16 + int.from_bytes(data[offset + 12 : offset + 16], "little")
        return count
