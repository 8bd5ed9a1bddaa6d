"""Mkdir, WriteFile, Stat and FilesystemOperation: single-path file system calls.

Each public coroutine runs its syscalls in one worker thread that is never abandoned, so a
cancelled caller never leaves a half-done operation running unseen. No fd outlives the call
that opened it. Paths are the guest's (vminitd's mount namespace), taken as given: the host
is trusted with paths, as in vminitd; but the part of a path below a container rootfs is
resolved inside that rootfs (:mod:`._paths`), so links the container planted never lead
these calls to the VM's own files, and data goes only to regular files there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as stat_mod
import struct
from collections.abc import Callable
from dataclasses import dataclass

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument, NotFound
from trinit.exec import kind_of, makedirs_in_root, open_in_root, reopen, split_parent

from ._common import has_nul, os_reason, run_blocking, strerror
from ._paths import locate, make_parents, open_data, open_nofollow, root_fd, stat_follow

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
FITRIM = 0xC0185879
_FSTRIM_RANGE = struct.Struct("=QQQ")  # struct fstrim_range {u64 start, len, minlen}
_U64_MAX = 2**64 - 1


# ---------------------------------------------------------------- Mkdir


def _mkdir(path: str, parents: bool, perms: int) -> None:
    mode = perms & 0o7777 if perms else 0o777
    if locate(path).root is not None:
        _mkdir_in_root(path, parents, perms, mode)
        return
    if parents:
        parent = os.path.dirname(path.rstrip("/"))
        if parent:
            os.makedirs(parent, exist_ok=True)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            return  # mkdir -p leaves an existing directory as it is
    else:
        os.mkdir(path, mode)
    if perms:
        os.chmod(path, mode)  # exactly `perms`, not `perms & ~umask`


def _mkdir_in_root(path: str, parents: bool, perms: int, mode: int) -> None:
    """``_mkdir`` for a path in a rootfs: the parent is resolved inside the rootfs and the
    directory made with ``mkdirat`` there; ``perms`` are set through an fd of the new
    directory, never by a second lookup of its path."""
    where = locate(path)
    parent, name = split_parent(where.rel)
    with root_fd(where) as root:
        if parents:
            makedirs_in_root(root, parent, 0o755)
        parent_fd = open_in_root(root, parent, os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(name or ".", mode, dir_fd=parent_fd)
        except FileExistsError:
            if not parents:
                raise
            try:
                os.close(open_in_root(root, where.rel, os.O_PATH | os.O_DIRECTORY))
            except NotADirectoryError:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path) from None
            return  # mkdir -p leaves an existing directory as it is
        finally:
            os.close(parent_fd)
        if perms:
            fd = open_in_root(root, where.rel, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fchmod(fd, mode)  # exactly `perms`, not `perms & ~umask`
            finally:
                os.close(fd)


async def mkdir(request: pb.MkdirRequest) -> pb.MkdirResponse:
    """Create ``request.path`` (with its parents if ``request.all``) with mode ``perms``.

    ``perms`` is applied exactly to the directory this call creates (0 means 0o777 & ~umask);
    vminitd ignores it (docs/compat.md). An existing directory is left unchanged with
    ``all``. Raises ``Internal("mkdir: <reason>")``.
    """
    path = request.path
    if has_nul(path):
        raise Internal(f"mkdir: {path!r}: NUL byte in path")
    try:
        await run_blocking(lambda: _mkdir(path, request.all, request.perms))
    except OSError as exc:
        raise Internal(f"mkdir: {os_reason(exc)}") from None
    return pb.MkdirResponse()


# ---------------------------------------------------------------- WriteFile


def _open_for_write(path: str, create: bool, append: bool, mode: int) -> int:
    base = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK  # no open(2) hang on a reader-less FIFO
    base |= os.O_APPEND if append else os.O_TRUNC
    return open_data(path, base, mode, create=create)


def _write_file(
    path: str, data: bytes, mode: int, create: bool, append: bool, parents: bool
) -> None:
    if parents:
        try:
            make_parents(path)
        except OSError as exc:
            raise Internal(f"writeFile: {os_reason(exc)}") from None
    try:
        fd = _open_for_write(path, create, append, mode)
    except OSError as exc:
        raise Internal(f"writeFile: failed to open file: {os_reason(exc)}") from None
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError as exc:
        raise Internal(f"writeFile: {os_reason(exc)}") from None
    finally:
        os.close(fd)


async def write_file(request: pb.WriteFileRequest) -> pb.WriteFileResponse:
    """Write ``request.data`` to ``request.path`` (docs/protocol.md §4.6).

    Unlike vminitd, a non-append write truncates the file first (docs/compat.md). A file
    this call creates gets exactly ``mode`` (0 means 0o644). Raises
    ``Internal("writeFile: failed to open file: <reason>")`` or ``Internal("writeFile:
    <reason>")``. Cancellation waits for the write in progress to finish.
    """
    path, flags = request.path, request.flags
    if has_nul(path):
        raise Internal(f"writeFile: failed to open file: {path!r}: NUL byte in path")
    mode = request.mode & 0o7777 if request.mode else 0o644
    data = request.data
    await run_blocking(
        lambda: _write_file(
            path, data, mode, flags.create_if_missing, flags.append, flags.create_parent_dirs
        )
    )
    return pb.WriteFileResponse()


# ---------------------------------------------------------------- Stat


def stat_message(st: os.stat_result) -> pb.Stat:
    """A ``Stat`` message with every field of ``st``, times to the nanosecond."""
    message = pb.Stat(
        dev=st.st_dev,
        ino=st.st_ino,
        mode=st.st_mode,
        nlink=st.st_nlink,
        uid=st.st_uid,
        gid=st.st_gid,
        rdev=st.st_rdev,
        size=st.st_size,
        blksize=st.st_blksize,
        blocks=st.st_blocks,
    )
    message.atime.FromNanoseconds(st.st_atime_ns)
    message.mtime.FromNanoseconds(st.st_mtime_ns)
    message.ctime.FromNanoseconds(st.st_ctime_ns)
    return message


async def stat(request: pb.StatRequest) -> pb.StatResponse:
    """stat(2) ``request.path``, following symlinks (docs/protocol.md §4.8).

    A missing path raises ``NotFound("stat: path not found '<path>'")`` (the host's copy path
    resolution relies on it); any other errno is an OK response with ``error`` set and
    ``stat`` unset, as in vminitd. Read-only, so cancellation has no effect to undo.
    """
    path = request.path
    if has_nul(path):
        raise InvalidArgument(f"stat: {path!r}: NUL byte in path")
    try:
        st = await run_blocking(lambda: stat_follow(path))
    except FileNotFoundError:
        raise NotFound(f"stat: path not found '{path}'") from None
    except OSError as exc:
        return pb.StatResponse(error=strerror(exc.errno or errno.EIO))
    return pb.StatResponse(stat=stat_message(st))


# ---------------------------------------------------------------- FilesystemOperation


@dataclass(frozen=True)
class FsIoctl:
    """The ioctl FilesystemOperation makes; tests substitute a fake (never freeze a real fs)."""

    ioctl: Callable[[int, int, bytearray], None]


def _real_ioctl(fd: int, request: int, buf: bytearray) -> None:
    fcntl.ioctl(fd, request, buf, True)


DEFAULT_IOCTL = FsIoctl(_real_ioctl)


def _open_fs_object(path: str) -> int:
    """``path`` (its last component not a link: ELOOP) opened read-only if it is a directory
    or a regular file; Internal naming its kind otherwise, unopened."""
    path_fd = open_nofollow(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = os.fstat(path_fd).st_mode
        if stat_mod.S_ISLNK(mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        if not (stat_mod.S_ISDIR(mode) or stat_mod.S_ISREG(mode)):
            kind = kind_of(mode)
            raise Internal(f"failed to open path: '{path}' is {kind}, not a directory or file")
        return reopen(path_fd, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(path_fd)


def _fs_operation(path: str, operation: str, ioctl: FsIoctl) -> int | None:
    try:
        stat_follow(path)
    except OSError as exc:
        raise NotFound(f"failed to stat path: {os_reason(exc)}") from None
    try:
        # Below a rootfs the path resolves inside it: a planted link must not aim a freeze
        # at the VM's own fs. Looked up O_PATH, and opened only as a directory or a regular
        # file: the open of a device node would be the VM device's, and so the ioctl.
        fd = _open_fs_object(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Internal(f"path cannot be a symlink: '{path}'") from None
        raise Internal(f"failed to open path: {os_reason(exc)}") from None
    try:
        if operation == "freeze":
            ioctl.ioctl(fd, FIFREEZE, bytearray(_FSTRIM_RANGE.size))
            return None
        if operation == "thaw":
            ioctl.ioctl(fd, FITHAW, bytearray(_FSTRIM_RANGE.size))
            return None
        buf = bytearray(_FSTRIM_RANGE.pack(0, _U64_MAX, 0))
        ioctl.ioctl(fd, FITRIM, buf)
        trimmed: int = _FSTRIM_RANGE.unpack(bytes(buf))[1]
        return trimmed
    except OSError as exc:
        raise Internal(f"filesystemOperation: {operation} '{path}': {os_reason(exc)}") from None
    finally:
        os.close(fd)


async def filesystem_operation(
    request: pb.FilesystemOperationRequest, *, ioctl: FsIoctl = DEFAULT_IOCTL
) -> pb.FilesystemOperationResponse:
    """Freeze, thaw or trim the file system holding ``request.path`` (docs/protocol.md §4.9).

    Errors: a relative path → ``InvalidArgument("path must be absolute")``; a missing
    operation or trim schedule → ``InvalidArgument("filesystemOperation: ...")`` (vminitd
    says INTERNAL; docs/compat.md); stat failure → ``NotFound("failed to stat path: ...")``;
    a symlink → ``Internal("path cannot be a symlink: ...")``; open failure →
    ``Internal("failed to open path: ...")``; the ioctl → ``Internal("filesystemOperation:
    ...")``. A trim fills ``trim.trimmed_bytes`` (vminitd leaves it 0). Cancellation waits
    for the ioctl to finish: a freeze is never left running unseen.
    """
    path = request.path
    if has_nul(path):
        raise InvalidArgument(f"filesystemOperation: {path!r}: NUL byte in path")
    if not path.startswith("/"):
        raise InvalidArgument("path must be absolute")
    operation = request.WhichOneof("operation")
    if operation is None:
        raise InvalidArgument("filesystemOperation: no operation given")
    if operation == "trim" and request.trim.WhichOneof("schedule") != "one_shot":
        raise InvalidArgument("filesystemOperation: trim needs a schedule (one_shot)")
    trimmed = await run_blocking(lambda: _fs_operation(path, operation, ioctl))
    if trimmed is None:
        return pb.FilesystemOperationResponse()
    return pb.FilesystemOperationResponse(trim=pb.FiTrimResult(trimmed_bytes=trimmed))
