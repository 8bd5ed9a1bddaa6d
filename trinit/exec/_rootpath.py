"""Paths inside a container root, for the exec helper: resolved with ``openat2``
``RESOLVE_IN_ROOT`` relative to an fd of the root, so a link the image planted resolves
inside it. Standard library and ``trinit._linux`` only (the helper imports it before
pivot_root, and every import costs start-up time)."""

from __future__ import annotations

import os

from trinit import _linux as sc


def open_in_root(root_fd: int, relpath: str, flags: int = 0) -> int:
    """An ``O_PATH`` fd (plus ``flags``) of ``relpath`` resolved inside ``root_fd``."""
    return sc.openat2(root_fd, relpath or ".", os.O_PATH | flags, 0, sc.RESOLVE_IN_ROOT)


def mkdir_all(root_fd: int, relpath: str) -> int:
    """Create ``relpath`` (and parents, 0755) inside the root; return an O_PATH fd to it.

    Each missing directory is made with ``mkdirat`` in its parent's fd, which never follows
    a link at the new name."""
    parts = [part for part in relpath.split("/") if part and part != "."]
    try:  # mostly there already (the rootfs's dev, a mount's parent): one lookup
        return open_in_root(root_fd, "/".join(parts), os.O_DIRECTORY)
    except FileNotFoundError:
        pass
    for index in range(len(parts)):
        prefix = "/".join(parts[: index + 1])
        try:
            os.close(open_in_root(root_fd, prefix, os.O_DIRECTORY))
            continue
        except FileNotFoundError:
            pass
        parent_fd = open_in_root(root_fd, "/".join(parts[:index]), os.O_DIRECTORY)
        try:
            os.mkdir(parts[index], 0o755, dir_fd=parent_fd)
        except FileExistsError:
            pass
        finally:
            os.close(parent_fd)
    return open_in_root(root_fd, "/".join(parts), os.O_DIRECTORY)
