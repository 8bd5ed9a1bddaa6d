"""Copy: move a file or a directory tree between the host and the guest over a data stream.

gRPC carries only control messages; the bytes travel over a separate connection that the
guest dials to the host (``dial(vsock_port)``, the transport's dial, vsock or unix).

* COPY_IN, file: mkdir -p the parent if asked, dial, open the target with O_TRUNC, write
  every byte until EOF, close, send COMPLETE.
* COPY_IN, archive: mkdir -p the target, dial, extract a (gzip) pax tar into it, send
  COMPLETE.
* COPY_OUT: stat (missing → NOT_FOUND before any message), send METADATA, dial, stream the
  raw file or a gzip pax tar of the directory (``./`` first, then relative children), close
  the connection (EOF ends the data), send COMPLETE.

Invariants:

* A path below a container rootfs is resolved inside that rootfs (:mod:`._paths`): links
  the container planted lead to its own files, never the VM's; only regular files are
  read or written there.

* Extraction never writes outside the target and never follows a symlink: every path is
  walked one component at a time from an fd of the target with ``O_NOFOLLOW``, so an entry
  whose parent is (or is raced into) a symlink is skipped. Absolute names and names with a
  ``..`` component are skipped. Symlink entries are created as they are (their targets are
  inert data, never followed here); this is why tarfile's ``filter="data"`` is not used: it
  refuses absolute symlinks, which are meaningful inside a container rootfs.
* Memory is bounded: file data moves in 1 MiB chunks; tar and gzip run in one worker thread
  that pulls from / pushes to the trio stream with ``trio.from_thread.run``, so the archive
  is never held in memory.
* Worker threads are never abandoned; a cancelled copy stops at the thread's next read or
  write of the stream (which raises ``Cancelled`` inside it) and every fd and the data
  connection are closed before the cancellation propagates.

Use as ``async with contextlib.aclosing(copy(request, dial)) as responses:`` so that a
consumer that stops early still closes the connection. No response is yielded while a
connection or file is open.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import select
import shutil
import stat as stat_mod
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument, NotFound, TrinitError
from trinit.exec import open_regular_at

from ._common import has_nul, os_reason, run_blocking
from ._paths import make_parents, makedirs, open_data, open_dir, stat_follow

if TYPE_CHECKING:
    import tarfile

log = logging.getLogger(__name__)

Dial = Callable[[int], Awaitable[trio.abc.Stream]]

CHUNK = 1 << 20  # file data moves in 1 MiB pieces, as in vminitd
_TAR_BUFSIZE = 256 << 10
_SEND_BUFFER = 256 << 10
_GZIP_LEVEL = 6

COPY_IN = pb.CopyRequest.COPY_IN
COPY_OUT = pb.CopyRequest.COPY_OUT


async def copy(request: pb.CopyRequest, dial: Dial) -> AsyncGenerator[pb.CopyResponse, None]:
    """Run one Copy RPC, yielding its responses (docs/protocol.md §4.7).

    Errors: unknown direction → ``InvalidArgument``; a missing COPY_OUT source →
    ``NotFound("copy: path not found '<path>'")`` before any response; anything else →
    ``Internal("copy failed: <reason>")``. On cancellation or error the data connection and
    every fd are closed; a partly written target stays as it is.
    """
    path = request.path
    if has_nul(path):
        raise InvalidArgument(f"copy: {path!r}: NUL byte in path")
    if request.direction == COPY_IN:
        await _failing_as_copy_error(_copy_in(request, dial))
        yield pb.CopyResponse(status=pb.CopyResponse.COMPLETE)
    elif request.direction == COPY_OUT:
        source = await _source(path)
        yield pb.CopyResponse(
            status=pb.CopyResponse.METADATA, is_archive=source.is_dir, total_size=source.size
        )
        await _failing_as_copy_error(_copy_out(request, dial, source))
        yield pb.CopyResponse(status=pb.CopyResponse.COMPLETE)
    else:
        raise InvalidArgument(f"copy: unknown direction {request.direction}")


async def _failing_as_copy_error(work: Awaitable[None]) -> None:
    try:
        await work
    except TrinitError:
        raise
    except Exception as exc:
        raise Internal(f"copy failed: {os_reason(exc)}") from None


async def _connect(dial: Dial, port: int) -> trio.abc.Stream:
    try:
        return await dial(port)
    except TrinitError:
        raise
    except Exception as exc:
        reason = os_reason(exc)
        raise Internal(f"copy failed: cannot connect to host port {port}: {reason}") from None


# ---------------------------------------------------------------- COPY_IN


async def _copy_in(request: pb.CopyRequest, dial: Dial) -> None:
    path = request.path
    if request.create_parents:
        await run_blocking(functools.partial(make_parents, path))
    stream = await _connect(dial, request.vsock_port)
    async with stream:
        if request.is_archive:
            await run_blocking(functools.partial(makedirs, path, 0o755))
            reader = _StreamReader(stream)
            count = await run_blocking(functools.partial(_extract_archive, reader, path))
            if count == 0:
                raise Internal("copy failed: archive has no entries")
        else:
            mode = request.mode & 0o7777 if request.mode else 0o644
            await _receive_file(stream, path, mode)


def _open_target(path: str, mode: int) -> int:
    """O_WRONLY|O_CREAT|O_TRUNC; a file this call creates gets exactly ``mode``; in a rootfs,
    only a regular file (resolved inside it)."""
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_TRUNC
    return open_data(path, flags, mode, create=True)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _receive_file(stream: trio.abc.Stream, path: str, mode: int) -> None:
    fd = await run_blocking(functools.partial(_open_target, path, mode))
    try:
        await run_blocking(functools.partial(_clear_nonblock, fd))
        sock = getattr(stream, "socket", None)
        if sock is not None:
            # the whole transfer in one worker thread: no event-loop round trip per chunk
            await _in_worker(_receive_loop, sock.fileno(), fd)
            return
        while data := await stream.receive_some(CHUNK):
            await run_blocking(functools.partial(_write_all, fd, data))
    finally:
        os.close(fd)


async def _in_worker(loop: Callable[..., None], *args: int) -> None:
    """Run a blocking transfer ``loop(*args)`` in one worker thread (no event-loop round trip
    per chunk). The thread is never abandoned, so no fd it uses is closed under it; it
    notices cancellation of the calling task within 100 ms (``from_thread.check_cancelled``).
    """
    await trio.to_thread.run_sync(loop, *args)


def _wait_fd(fd: int, events: int) -> None:
    poller = select.poll()
    poller.register(fd, events)
    while not poller.poll(100):
        trio.from_thread.check_cancelled()


def _receive_loop(sock_fd: int, file_fd: int) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        try:
            count = os.readv(sock_fd, [buffer])
        except BlockingIOError:
            _wait_fd(sock_fd, select.POLLIN)
            continue
        if count == 0:
            return
        _write_all(file_fd, view[:count])
        trio.from_thread.check_cancelled()


def _send_loop(file_fd: int, sock_fd: int) -> None:
    """sendfile(2) the whole file (page cache to socket, no copy through Python); files that
    refuse sendfile (some /proc and /sys files) go through a 1 MiB buffer."""
    offset = 0
    while True:
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, 1 << 24)
        except BlockingIOError:
            _wait_fd(sock_fd, select.POLLOUT)
            continue
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS) or offset:
                raise
            _send_buffered(file_fd, sock_fd)
            return
        if sent == 0:
            return
        offset += sent
        trio.from_thread.check_cancelled()


def _send_buffered(file_fd: int, sock_fd: int) -> None:
    os.set_blocking(file_fd, True)
    while data := os.read(file_fd, CHUNK):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(sock_fd, view) :]
            except BlockingIOError:
                _wait_fd(sock_fd, select.POLLOUT)


def _clear_nonblock(fd: int) -> None:
    os.set_blocking(fd, True)


class _StreamReader:
    """A blocking ``read`` for the worker thread, pulling from the trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes | bytearray] = []
        got = 0
        while not self._eof and (size < 0 or got < size):
            want = CHUNK if size < 0 else min(size - got, CHUNK)
            data = trio.from_thread.run(self._stream.receive_some, want)
            if not data:
                self._eof = True
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)


class _Skip(Exception):
    """An archive entry that fails validation: skipped and logged, not an error."""


def _safe_parts(name: str) -> list[str] | None:
    """The components of a relative member name, or None if it is absolute or has ``..``."""
    if name.startswith("/") or "\x00" in name:
        return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        return None
    return parts


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(root_fd: int, parts: list[str], *, create: bool) -> int:
    """An fd of ``root/parts...``, walking without following any symlink; missing
    directories are created (0755) when ``create``. Raises :class:`_Skip` for a component
    that is a symlink, not a directory, or missing (without ``create``)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _Skip(f"'{part}' does not exist") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Skip(f"'{part}' is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove_existing(dir_fd: int, name: str, *, keep_dir: bool) -> bool:
    """Make room for a new entry (last entry wins). True if a directory was kept."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat_mod.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
    return False


def _set_mtime(fd: int, member: tarfile.TarInfo) -> None:
    try:
        ns = int(member.mtime * 1_000_000_000)
        os.utime(fd, ns=(ns, ns))
    except (OSError, OverflowError, ValueError, TypeError):
        pass  # a timestamp the file system cannot hold is not worth failing the copy


def _extract_file(tar: tarfile.TarFile, member: tarfile.TarInfo, dir_fd: int, name: str) -> None:
    _remove_existing(dir_fd, name, keep_dir=False)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        source = tar.extractfile(member)
        if source is not None:
            while chunk := source.read(CHUNK):
                _write_all(fd, chunk)
        os.fchmod(fd, member.mode & 0o777)
        _set_mtime(fd, member)
    finally:
        os.close(fd)


def _extract_hardlink(root_fd: int, member: tarfile.TarInfo, dir_fd: int, parts: list[str]) -> None:
    source = _safe_parts(member.linkname)
    if not source or source == parts:
        raise _Skip(f"bad hard link target {member.linkname!r}")
    source_dir = _open_dir(root_fd, source[:-1], create=False)
    try:
        try:
            st = os.stat(source[-1], dir_fd=source_dir, follow_symlinks=False)
        except FileNotFoundError:
            raise _Skip(f"hard link target {member.linkname!r} does not exist") from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise _Skip(f"hard link target {member.linkname!r} is not a regular file")
        _remove_existing(dir_fd, parts[-1], keep_dir=False)
        os.link(
            source[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=dir_fd, follow_symlinks=False
        )
    finally:
        os.close(source_dir)


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    root_fd: int,
    parts: list[str],
    directories: list[tuple[list[str], tarfile.TarInfo]],
) -> None:
    if not parts:
        if not member.isdir():
            raise _Skip("a non-directory entry for the target itself")
        directories.append((parts, member))
        return
    dir_fd = _open_dir(root_fd, parts[:-1], create=True)
    name = parts[-1]
    try:
        if member.isdir():
            if not _remove_existing(dir_fd, name, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            directories.append((parts, member))  # mode and mtime once its contents exist
        elif member.isreg():
            _extract_file(tar, member, dir_fd, name)
        elif member.issym():
            _remove_existing(dir_fd, name, keep_dir=False)
            os.symlink(member.linkname, name, dir_fd=dir_fd)
        elif member.islnk():
            _extract_hardlink(root_fd, member, dir_fd, parts)
        elif member.isfifo():
            _remove_existing(dir_fd, name, keep_dir=False)
            os.mkfifo(name, member.mode & 0o777, dir_fd=dir_fd)
        else:
            raise _Skip("device nodes and other special entries are not extracted")
    finally:
        os.close(dir_fd)


def _finish_directories(root_fd: int, directories: list[tuple[list[str], tarfile.TarInfo]]) -> None:
    """Apply directory modes (masked 0o777) and mtimes deepest first, after every file was
    written (a read-only directory must not block its own contents)."""
    for parts, member in sorted(directories, key=lambda item: len(item[0]), reverse=True):
        try:
            fd = _open_dir(root_fd, parts, create=False)
        except _Skip:
            continue  # replaced by a later entry
        try:
            os.fchmod(fd, member.mode & 0o777)
            _set_mtime(fd, member)
        finally:
            os.close(fd)


def _extract_archive(reader: _StreamReader, target: str) -> int:
    """Extract a (gzip) tar read from ``reader`` into ``target``; the number of entries
    read (skipped ones included). Runs in a worker thread."""
    root_fd = open_dir(target, nofollow=True)
    count = 0
    directories: list[tuple[list[str], tarfile.TarInfo]] = []
    try:
        import tarfile  # loaded on first use: keeps agent start-up fast

        with tarfile.open(fileobj=reader, mode="r|*", bufsize=_TAR_BUFSIZE) as tar:  # type: ignore[call-overload]
            while (member := tar.next()) is not None:
                tar.members.clear()  # stream mode keeps every TarInfo; nothing here needs them
                count += 1
                parts = _safe_parts(member.name)
                try:
                    if parts is None:
                        raise _Skip("absolute name or '..' component")
                    _extract_member(tar, member, root_fd, parts, directories)
                except _Skip as skip:
                    log.warning("copy: skipping archive entry %r: %s", member.name, skip)
        _finish_directories(root_fd, directories)
    finally:
        os.close(root_fd)
    return count


# ---------------------------------------------------------------- COPY_OUT


@dataclass(frozen=True)
class _Source:
    is_dir: bool
    size: int


async def _source(path: str) -> _Source:
    try:
        st = await run_blocking(functools.partial(stat_follow, path))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise NotFound(f"copy: path not found '{path}'") from None
        raise Internal(f"copy failed: {os_reason(exc)}") from None
    if stat_mod.S_ISDIR(st.st_mode):
        return _Source(is_dir=True, size=0)
    if stat_mod.S_ISREG(st.st_mode):
        return _Source(is_dir=False, size=st.st_size)
    raise Internal(f"copy failed: '{path}' is not a regular file or a directory")


async def _copy_out(request: pb.CopyRequest, dial: Dial, source: _Source) -> None:
    stream = await _connect(dial, request.vsock_port)
    async with stream:
        if source.is_dir:
            writer = _StreamWriter(stream)
            await run_blocking(functools.partial(_write_archive, request.path, writer))
        else:
            await _send_file(stream, request.path)


async def _send_file(stream: trio.abc.Stream, path: str) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    fd = await run_blocking(functools.partial(open_data, path, flags, 0, create=False))
    try:
        sock = getattr(stream, "socket", None)
        if sock is not None:
            await _in_worker(_send_loop, fd, sock.fileno())
            return
        while data := await run_blocking(functools.partial(os.read, fd, CHUNK)):
            await stream.send_all(data)
    finally:
        os.close(fd)


class _StreamWriter:
    """A blocking ``write`` for the worker thread, pushing to the trio stream in 256 KiB
    pieces."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= _SEND_BUFFER:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            trio.from_thread.run(self._stream.send_all, data)


@dataclass(frozen=True)
class _FdRef:
    """What ``TarFile.gettarinfo(fileobj=...)`` needs of a directory fd (it fstats it)."""

    fd: int
    name: str

    def fileno(self) -> int:
        return self.fd


def _add_tree(tar: tarfile.TarFile, path: str) -> None:
    """``./`` and then everything below ``path``. The tree is walked by directory fds
    (each subdirectory opened ``O_NOFOLLOW`` in its parent's fd, each entry named as
    ``/proc/self/fd/<dir fd>/<name>``, whose last component is never followed), so a link
    planted or raced into the tree is archived as a link, never followed out of it."""
    dir_fd = open_dir(path)  # the source may be a symlink to a directory
    try:
        ref = _FdRef(dir_fd, path)
        tar.addfile(tar.gettarinfo(arcname=".", fileobj=ref))  # type: ignore[arg-type]
        _add_directory(tar, dir_fd, "")
    finally:
        os.close(dir_fd)


def _add_directory(tar: tarfile.TarFile, dir_fd: int, prefix: str) -> None:
    with os.scandir(dir_fd) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    subdirectories = []
    for entry in entries:
        name = prefix + entry.name
        if entry.is_file(follow_symlinks=False):
            # a regular file when the directory was read; opened only if it still is one
            fd = open_regular_at(dir_fd, entry.name, os.O_RDONLY | os.O_CLOEXEC)
            if fd is not None:
                with os.fdopen(fd, "rb") as file:
                    tar.addfile(tar.gettarinfo(arcname=name, fileobj=file), file)
                continue
        info = tar.gettarinfo(f"/proc/self/fd/{dir_fd}/{entry.name}", arcname=name)
        if info is None:
            continue  # sockets cannot be archived
        tar.addfile(info)
        if info.isdir():
            subdirectories.append((entry.name, name + "/"))
    for entry_name, sub_prefix in subdirectories:
        try:
            sub_fd = os.open(entry_name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                log.warning("copy: %r changed while archiving; contents left out", sub_prefix)
                continue
            raise
        try:
            _add_directory(tar, sub_fd, sub_prefix)
        finally:
            os.close(sub_fd)


def _write_archive(root: str, writer: _StreamWriter) -> None:
    """A gzip pax tar of ``root``: ``./`` first, then its contents with relative names.
    Runs in a worker thread."""
    import gzip  # loaded on first use: keeps agent start-up fast
    import tarfile

    with gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_tree(tar, root)
    writer.flush()
