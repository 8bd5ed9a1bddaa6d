"""Host-given paths, acted on inside a container rootfs when they lie under one.

The host names container files as ``/run/container/<id>/rootfs/<container path>``. The part
below the rootfs is the container's to shape: a planted ``etc/x -> /`` (or ``..`` chain, or
``/proc/self/root``) link would make a plain ``open``/``stat``/``mkdir`` act on the VM's own
files. Each helper here resolves that part with ``openat2(RESOLVE_IN_ROOT)`` inside the
rootfs (as ``docker cp`` does) and only accepts regular files for data; a path outside
every rootfs is used as given, exactly as vminitd does.

Blocking (filesystem syscalls): call these from a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from trinit.exec import (
    Located,
    locate,
    makedirs_in_root,
    open_in_root,
    open_regular_in_root,
    open_root,
    require_regular,
)

from ._common import open_creating

__all__ = [
    "Located",
    "locate",
    "make_parents",
    "makedirs",
    "open_data",
    "open_dir",
    "open_nofollow",
    "root_fd",
]


@contextmanager
def root_fd(where: Located) -> Iterator[int]:
    """An ``O_PATH`` fd of ``where.root``, closed on exit."""
    assert where.root is not None
    fd = open_root(where.root)
    try:
        yield fd
    finally:
        os.close(fd)


def stat_follow(path: str) -> os.stat_result:
    """``stat(2)`` (links followed, inside the rootfs for a rootfs path)."""
    where = locate(path)
    if where.root is None:
        return os.stat(path)
    with root_fd(where) as root:
        fd = open_in_root(root, where.rel, os.O_PATH)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def makedirs(path: str, mode: int = 0o755) -> None:
    """``mkdir -p path``."""
    where = locate(path)
    if where.root is None:
        os.makedirs(path, mode, exist_ok=True)
        return
    with root_fd(where) as root:
        makedirs_in_root(root, where.rel, mode)


def make_parents(path: str) -> None:
    """``mkdir -p`` of the parent of ``path`` (0755)."""
    parent = os.path.dirname(path.rstrip("/"))
    if parent:
        makedirs(parent, 0o755)


def open_data(path: str, flags: int, mode: int, *, create: bool) -> int:
    """Open ``path`` for its data (``flags`` hold O_WRONLY/O_RDONLY and the like); with
    ``create``, as :func:`open_creating`. Inside a rootfs only a regular file is accepted
    (InvalidArgument otherwise): a planted FIFO or device is not written, read, or even
    opened (:func:`open_regular_in_root`)."""
    where = locate(path)
    if where.root is None:
        return open_creating(path, flags, mode) if create else os.open(path, flags)
    with root_fd(where) as root:

        def opener(rel: str, how: int, perms: int) -> int:
            return open_regular_in_root(root, rel, how, perms, what=f"'{path}'")

        rel = where.rel
        fd = open_creating(rel, flags, mode, opener) if create else opener(rel, flags, 0)
    try:
        require_regular(fd, f"'{path}'")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(path: str, *, nofollow: bool = False) -> int:
    """An ``O_RDONLY | O_DIRECTORY`` fd of ``path`` (a rootfs path resolved inside it;
    ``nofollow`` applies to a path outside every rootfs only)."""
    where = locate(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if where.root is None:
        return os.open(path, flags | (os.O_NOFOLLOW if nofollow else 0))
    with root_fd(where) as root:
        return open_in_root(root, where.rel, flags)


def open_nofollow(path: str, flags: int) -> int:
    """``open(path, flags)`` where ``flags`` carry ``O_NOFOLLOW``: below a rootfs, the links
    before the last component resolve inside it and a link at the end is refused (ELOOP)."""
    where = locate(path)
    if where.root is None:
        return os.open(path, flags)
    with root_fd(where) as root:
        return open_in_root(root, where.rel, flags)
