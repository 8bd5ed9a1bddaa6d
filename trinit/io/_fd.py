"""Ownership of raw file descriptors, and the pipes trinit gives to its children.

An :class:`OwnedFd` owns exactly one fd number. Closing it forgets the number *before* the
``close(2)``: trinit is PID 1 and the kernel hands out the lowest free number again at once, so
a stale copy of a number is a handle on some unrelated file (another container's pipe, a
vsock). After :meth:`OwnedFd.close` every use raises :class:`trio.ClosedResourceError`
instead of touching whatever reused the number.

Closing also calls :func:`trio.lowlevel.notify_closing` when it runs inside trio, so a task
parked in ``wait_readable``/``wait_writable`` on that fd wakes with ``ClosedResourceError``
rather than waiting on a number that now means something else.

:func:`make_pipe` returns both ends as separate ``OwnedFd`` objects. They are separate file
descriptions, so trinit may set ``O_NONBLOCK`` on its own end while the end it hands to a child
stays blocking (programs are not written for a non-blocking stdio).
"""

from __future__ import annotations

import fcntl
import os
import socket
from types import TracebackType

import trio

__all__ = ["PIPE_SIZE", "OwnedFd", "make_pipe"]

#: Capacity requested for every pipe (``F_SETPIPE_SZ``). A large pipe lets a process write a
#: burst and exit without waiting for the host, and lets one ``splice`` move a lot at once.
PIPE_SIZE = 1 << 20


class OwnedFd:
    """Owns one fd number; closes it exactly once and then forgets it.

    Supports ``with``: the fd is closed when the block exits (also on exceptions).
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        if fd < 0:
            raise ValueError(f"invalid fd {fd}")
        self._fd = fd

    def fileno(self) -> int:
        """The fd number. Raises :class:`trio.ClosedResourceError` once closed or detached."""
        if self._fd < 0:
            raise trio.ClosedResourceError("file descriptor already closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the fd (idempotent). Waiters in trio are woken with ClosedResourceError."""
        fd = self._fd
        if fd < 0:
            return
        self._fd = -1
        try:
            trio.lowlevel.notify_closing(fd)
        except RuntimeError:
            pass  # not inside trio: nobody can be waiting on it
        try:
            os.close(fd)
        except OSError:
            # EBADF would mean somebody else closed our number: nothing left to do. EINTR and
            # EIO on Linux still release the number, so retrying could close a reused fd.
            pass

    def detach(self) -> int:
        """Give up ownership and return the number; the caller must close it."""
        fd = self.fileno()
        self._fd = -1
        return fd

    def __enter__(self) -> OwnedFd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A lost OwnedFd must not leak its number in a process that never exits. No
        # notify_closing here: __del__ may run anywhere, and a task waiting on the fd would
        # still hold a reference to us.
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            self._fd = -1
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"OwnedFd({self._fd})" if self._fd >= 0 else "OwnedFd(closed)"


def make_pipe(size: int = PIPE_SIZE) -> tuple[OwnedFd, OwnedFd]:
    """A close-on-exec pipe, enlarged to ``size`` bytes where permitted: ``(read, write)``.

    Both ends are blocking; whoever keeps an end for trinit makes that end non-blocking.
    Enlarging fails quietly (the pipe keeps the kernel default) when the size exceeds
    ``/proc/sys/fs/pipe-max-size`` or the user's pipe quota and we lack CAP_SYS_RESOURCE.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    read_end, write_end = OwnedFd(read_fd), OwnedFd(write_fd)
    try:
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        pass
    return read_end, write_end


#: kernel send buffer for host connections carrying stdio (bytes queued per stream at most)
SEND_BUFFER = 4 << 20


def enlarge_send_buffer(
    sock: socket.socket | trio.socket.SocketType, size: int = SEND_BUFFER
) -> None:
    """Let the kernel queue up to ``size`` bytes on a host connection.

    With the default (~200 KiB on unix sockets, 256 KiB on vsock) every splice moves a
    fraction of the 1 MiB pipe and the pump wakes several times as often: measured here,
    2.5x the CPU per GiB. Still bounded (backpressure stays the kernel's). Best effort:
    SO_SNDBUFFORCE needs CAP_NET_ADMIN (falls back to SO_SNDBUF, capped by wmem_max); on
    AF_VSOCK the buffer is the vsock transport's.
    """
    try:
        if sock.family == socket.AF_VSOCK:
            sock.setsockopt(socket.AF_VSOCK, socket.SO_VM_SOCKETS_BUFFER_MAX_SIZE, size)
            sock.setsockopt(socket.AF_VSOCK, socket.SO_VM_SOCKETS_BUFFER_SIZE, size)
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:
        pass  # a smaller buffer is slower, never wrong


_SO_SNDBUFFORCE = 32
