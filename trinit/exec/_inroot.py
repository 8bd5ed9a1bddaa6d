"""Paths inside a container rootfs, resolved the way the container would resolve them.

A rootfs holds the image's files and whatever the container's processes wrote there: any
entry may be a symlink (absolute, ``..``, or ``/proc/self/root``-style), a FIFO, a device node
or a huge file, planted to make PID 1 act on the VM's own files, block, or run out of memory.
Everything here therefore resolves the part of a path below a rootfs with
``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` relative to an fd of that rootfs (a
planted ``/`` link lands on the rootfs, as ``docker cp`` does) and checks what it found with
``fstat`` on the fd, never by a second lookup of the path. A file wanted for its data is
found ``O_PATH`` and opened (through ``/proc/self/fd``, the same inode) only once it is
known to be a regular file: the open of a planted device node would be an open of the VM's
device. Opens are ``O_NONBLOCK | O_NOCTTY`` (a FIFO cannot block the open, a tty cannot
become ours).

:func:`locate` decides which paths are rootfs paths: ``/run/container/<id>/rootfs/...``
(where the host mounts every container rootfs, docs/protocol.md §5.1) and any root registered with
:func:`add_root` (the ``root.path`` of a running container). Other paths are the host's own
and are used as given.

Blocking (filesystem syscalls): call these from a worker thread.
"""

from __future__ import annotations

import os
import stat as stat_mod
import threading
from dataclasses import dataclass

from trinit import _linux as linux
from trinit.errors import InvalidArgument

IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
SAFE_OPEN = os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
BUNDLE_PARENT = ("run", "container")
PASSWD_LIMIT = 4 << 20

_roots_lock = threading.Lock()
_roots: dict[str, int] = {}  # registered root -> how many containers use it


def add_root(root: str) -> None:
    """Treat ``root`` (a container's ``root.path``) as a rootfs until :func:`remove_root`."""
    key = os.path.normpath(root)
    with _roots_lock:
        _roots[key] = _roots.get(key, 0) + 1


def remove_root(root: str) -> None:
    key = os.path.normpath(root)
    with _roots_lock:
        count = _roots.get(key, 0) - 1
        if count > 0:
            _roots[key] = count
        else:
            _roots.pop(key, None)


@dataclass(frozen=True)
class Located:
    """A host-given path: ``root`` is the rootfs it lies under (None: not in any rootfs) and
    ``rel`` the rest, to be resolved inside ``root`` ("" is the rootfs itself)."""

    path: str
    root: str | None
    rel: str


def locate(path: str) -> Located:
    """Split an absolute ``path`` into (rootfs, remainder) if it lies under a rootfs.

    The prefix is normalised lexically (``/run/../run/container/c/rootfs/x`` is still a
    rootfs path: the directories above a rootfs are trinit's, not the container's); the
    remainder is kept as given, for the kernel to resolve inside the rootfs.
    """
    if not path.startswith("/"):
        return Located(path, None, "")
    with _roots_lock:
        roots = [tuple(p for p in r.split("/") if p) for r in _roots]
    stack: list[str] = []
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part in ("", "."):
            continue
        if part == "..":
            if stack:
                stack.pop()
            continue
        stack.append(part)
        here = tuple(stack)
        is_bundle_rootfs = len(here) == 4 and here[:2] == BUNDLE_PARENT and here[3] == "rootfs"
        if is_bundle_rootfs or here in roots:
            rel = "/".join(parts[index + 1 :])
            return Located(path, "/" + "/".join(here), rel)
    return Located(path, None, "")


def open_root(root: str) -> int:
    """An ``O_PATH`` directory fd of ``root`` (a path trinit or the host chose)."""
    return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def open_in_root(root_fd: int, rel: str, flags: int, mode: int = 0) -> int:
    """``openat2`` of ``rel`` inside ``root_fd``: every symlink, absolute or ``..``,
    resolves inside the root; magic links (``/proc/<pid>/root``...) are refused (ELOOP)."""
    rel = rel.lstrip("/") or "."
    # openat2 refuses O_PATH with any flag but O_DIRECTORY/O_NOFOLLOW/O_CLOEXEC (EINVAL)
    extra = os.O_CLOEXEC if flags & os.O_PATH else SAFE_OPEN
    return linux.openat2(root_fd, rel, flags | extra, mode, IN_ROOT)


def split_parent(rel: str) -> tuple[str, str]:
    """(parent, name) of a remainder; the parent is "." at the top. ``name`` may be "" for
    the rootfs itself."""
    rel = rel.strip("/")
    parent, _, name = rel.rpartition("/")
    return parent or ".", name


def makedirs_in_root(root_fd: int, rel: str, mode: int = 0o755) -> None:
    """``mkdir -p`` of ``rel`` inside the root: each missing directory is made with
    ``mkdirat`` in its parent's fd (mkdir never follows a link at the new name)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    for index in range(len(parts)):
        prefix = "/".join(parts[: index + 1])
        try:
            os.close(open_in_root(root_fd, prefix, os.O_PATH | os.O_DIRECTORY))
            continue
        except FileNotFoundError:
            pass
        parent_fd = open_in_root(root_fd, "/".join(parts[:index]), os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(parts[index], mode, dir_fd=parent_fd)
        except FileExistsError:
            pass  # made meanwhile, or a dangling link: the check below decides
        finally:
            os.close(parent_fd)
        os.close(open_in_root(root_fd, prefix, os.O_PATH | os.O_DIRECTORY))


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, for messages: "a FIFO", "a character device"..."""
    if stat_mod.S_ISDIR(mode):
        return "a directory"
    if stat_mod.S_ISFIFO(mode):
        return "a FIFO"
    if stat_mod.S_ISCHR(mode):
        return "a character device"
    if stat_mod.S_ISBLK(mode):
        return "a block device"
    if stat_mod.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def require_regular(fd: int, what: str) -> os.stat_result:
    """``fstat(fd)``; raises :class:`InvalidArgument` naming ``what`` unless it is a
    regular file."""
    st = os.fstat(fd)
    if not stat_mod.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{what} is {kind_of(st.st_mode)}, not a regular file")
    return st


_NOT_REOPENED = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_DIRECTORY


def reopen(path_fd: int, flags: int) -> int:
    """The inode of ``path_fd`` (an ``O_PATH`` fd, checked with ``fstat``) opened for its
    data with ``flags`` (``O_NONBLOCK | O_NOCTTY`` added): no second lookup of a path."""
    return os.open(f"/proc/self/fd/{path_fd}", (flags & ~_NOT_REOPENED) | SAFE_OPEN)


def open_regular_at(dir_fd: int, name: str, flags: int) -> int | None:
    """``name`` (one component) in ``dir_fd`` opened with ``flags`` if it is a regular
    file; None if it is anything else (a link, a directory, a FIFO, a device), which is
    then not opened at all. Lookup failures (ENOENT...) raise OSError."""
    path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat_mod.S_ISREG(os.fstat(path_fd).st_mode):
            return None
        return reopen(path_fd, flags)
    finally:
        os.close(path_fd)


def open_regular_in_root(
    root_fd: int, rel: str, flags: int, mode: int = 0, what: str | None = None
) -> int:
    """:func:`open_in_root` for a file's data: refuses anything but a regular file
    (:class:`InvalidArgument` naming ``what``, by default ``rel``) *before* opening it.

    An open acts by itself on some files: a device node an image planted is the VM's
    device (a watchdog arms, a serial line raises DTR), and a FIFO's open is seen at its
    other end. So an existing file is looked up ``O_PATH`` (which opens nothing), checked
    with ``fstat``, and then that same inode is opened through ``/proc/self/fd``. With
    ``O_CREAT | O_EXCL`` the open makes a new regular file or fails, so it is done at once.
    ``O_CREAT`` alone (through a dangling link) is done at once too, and checked after.
    """
    what = what or f"/{rel.lstrip('/')}"
    if flags & os.O_CREAT:
        fd = open_in_root(root_fd, rel, flags, mode)
        if not flags & os.O_EXCL:
            try:
                require_regular(fd, what)
            except BaseException:
                os.close(fd)
                raise
        return fd
    path_fd = open_in_root(root_fd, rel, os.O_PATH | (flags & os.O_NOFOLLOW))
    try:
        require_regular(path_fd, what)
        return reopen(path_fd, flags)
    finally:
        os.close(path_fd)


def read_bounded(root: str, rel: str, limit: int) -> bytes | None:
    """The contents of regular file ``rel`` inside ``root``, or None if it (or ``root``)
    does not exist.

    Raises :class:`InvalidArgument` naming the file if it is not a regular file (a FIFO, a
    device, a directory) or holds more than ``limit`` bytes; other failures raise OSError.
    Opens nothing but a regular file (as :func:`open_regular_in_root`) and never reads
    more than ``limit + 1`` bytes.
    """
    what = f"/{rel.lstrip('/')} in {root}"
    try:
        root_fd = open_root(root)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            path_fd = open_in_root(root_fd, rel, os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            return None
    finally:
        os.close(root_fd)
    try:
        st = require_regular(path_fd, what)
        # that inode, opened for its data only now that it is known to be a regular file
        fd = reopen(path_fd, os.O_RDONLY)
    finally:
        os.close(path_fd)
    try:
        if st.st_size > limit:
            raise InvalidArgument(f"{what} is larger than {limit} bytes")
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(limit + 1 - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:  # grew after fstat
            raise InvalidArgument(f"{what} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
