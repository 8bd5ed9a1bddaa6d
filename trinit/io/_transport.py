"""Transports: how trinit listens for the host and dials it, behind one interface.

* :class:`VsockTransport` (production): listen on ``AF_VSOCK`` (CID any) and accept only the
  host's CID (``_peer``: a container can reach the listener too), dial the host's CID (2
  unless told otherwise).
* :class:`UnixTransport` (development and tests): guest port P listens at ``DIR/guest_<P>``,
  dialing host port P connects to ``DIR/host_<P>``, Firecracker's hybrid-vsock convention.

The rest of trinit sees only :class:`Transport`; :func:`parse_transport` maps the
``--transport`` option to one. We set no TCP options on any of these sockets (trio's
``SocketStream`` tries TCP_NODELAY on every socket it wraps; on AF_UNIX and AF_VSOCK the kernel
answers ENOPROTOOPT and trio ignores it, unlike anyio which fails).

Every method closes the socket it created when it fails or is cancelled: nothing half-built
is left behind.

Dialing retries briefly: the host may still be setting up the listener for a port it just
named (a vsock connect to a port nobody listens on fails with ECONNRESET, a unix one with
ENOENT or ECONNREFUSED, and a unix listener whose backlog is full answers EAGAIN, which is
not "in progress" as it would be for TCP). :func:`dial_with_retry` retries those errors
with a doubling backoff for at most :data:`DIAL_RETRY_SECONDS` (trio's clock, so it is
tested under MockClock), then fails with UNAVAILABLE naming the address and the errno.
Any other error fails at once.

Listening never takes a live socket over: a unix listener replaces a socket file only when a
connect to it is refused (a stale file from an earlier run); a file some process still
listens on gives ALREADY_EXISTS naming the path.
"""

from __future__ import annotations

import abc
import errno
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from trinit.errors import AlreadyExists, Unavailable

from ._peer import VMADDR_CID_LOCAL, PeerCheckedListener, PeerPolicy

__all__ = [
    "DIAL_RETRY_SECONDS",
    "Transport",
    "UnixTransport",
    "VsockTransport",
    "dial_with_retry",
    "parse_transport",
    "socket_is_live",
]

_BACKLOG = 128

DIAL_RETRY_SECONDS: Final = 2.0
"""How long a dial keeps retrying a port that is not accepting yet."""
_DIAL_BACKOFF_FIRST: Final = 0.01
_DIAL_BACKOFF_MAX: Final = 0.25
# The peer is not (yet) accepting: worth another try. Anything else fails at once.
_NOT_ACCEPTING_YET: Final = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ENOENT, errno.EAGAIN}
)


async def dial_with_retry(
    connect: Callable[[], Awaitable[trio.SocketStream]],
    address: str,
    budget: float = DIAL_RETRY_SECONDS,
) -> trio.SocketStream:
    """``connect()``, retried while the peer is not accepting yet, for ``budget`` seconds.

    Raises :class:`trinit.errors.Unavailable` naming ``address``, the last errno and the
    attempts once the budget is spent; other OSErrors propagate from the first attempt.
    """
    deadline = trio.current_time() + budget
    delay = _DIAL_BACKOFF_FIRST
    attempts = 0
    while True:
        attempts += 1
        try:
            return await connect()
        except OSError as exc:
            if exc.errno not in _NOT_ACCEPTING_YET:
                raise
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                raise Unavailable(
                    f"{address} is not accepting connections: {name} "
                    f"({os.strerror(exc.errno or 0)}), {attempts} attempts over {budget:g}s"
                ) from exc
        await trio.sleep(min(delay, remaining))
        delay = min(delay * 2, _DIAL_BACKOFF_MAX)


class Transport(abc.ABC):
    """Guest listeners and host connections, addressed by vsock-style port numbers."""

    dial_retry: float = DIAL_RETRY_SECONDS
    """Seconds a dial retries a host port that is not accepting yet (``--dial-retry``)."""

    @abc.abstractmethod
    async def listen(self, port: int) -> trio.abc.Listener[trio.SocketStream]:
        """A guest-side listener on ``port``."""

    async def dial(self, port: int) -> trio.SocketStream:
        """A connection to the host's ``port``, retried while it is not accepting yet
        (:func:`dial_with_retry`); Unavailable when it never does."""
        _check_port(port)
        return await dial_with_retry(
            lambda: self._connect(port), self.describe_port(port), self.dial_retry
        )

    @abc.abstractmethod
    async def _connect(self, port: int) -> trio.SocketStream:
        """One connection attempt to the host's ``port``; raises OSError on failure."""

    @abc.abstractmethod
    def describe_port(self, port: int) -> str:
        """The host address of ``port``, for messages."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for logs."""


def _check_port(port: int) -> None:
    if not 0 <= port <= 0xFFFFFFFF:
        raise ValueError(f"port {port} out of range")


class VsockTransport(Transport):
    """AF_VSOCK. Every listener accepts only the host CID (see ``_peer``); with
    ``allow_local`` also processes of this guest (CID 1 and the guest's own CID), which
    only tests that drive the agent from inside the guest want."""

    def __init__(self, host_cid: int = 2, allow_local: bool = False) -> None:
        if host_cid == VMADDR_CID_LOCAL and not allow_local:
            raise ValueError("host cid 1 is the guest itself: it needs allow_local")
        self.host_cid = host_cid
        self.policy = PeerPolicy(host_cid, allow_local)

    async def listen(self, port: int) -> PeerCheckedListener:
        _check_port(port)
        sock = trio.socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            await sock.bind((socket.VMADDR_CID_ANY, port))
            sock.listen(_BACKLOG)
            return PeerCheckedListener(trio.SocketListener(sock), self.policy, port=port)
        except BaseException:
            sock.close()
            raise

    async def _connect(self, port: int) -> trio.SocketStream:
        sock = trio.socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            await sock.connect((self.host_cid, port))
            return trio.SocketStream(sock)
        except BaseException:
            sock.close()
            raise

    def describe_port(self, port: int) -> str:
        return f"host vsock cid {self.host_cid} port {port}"

    def describe(self) -> str:
        local = ", local peers allowed" if self.policy.allow_local else ""
        return f"vsock (host cid {self.host_cid}{local})"


class UnixTransport(Transport):
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def guest_path(self, port: int) -> str:
        return os.path.join(self.directory, f"guest_{port}")

    def host_path(self, port: int) -> str:
        return os.path.join(self.directory, f"host_{port}")

    async def listen(self, port: int) -> trio.SocketListener:
        """Listen at ``DIR/guest_<port>``, replacing a stale socket file; mode 0600.

        AlreadyExists if a live listener holds the path (another agent, or an earlier
        OUT_OF proxy on the same port); FileExistsError if the path is not a socket."""
        _check_port(port)
        path = self.guest_path(port)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The socket inode's mode becomes the file's mode at bind, so nobody can connect
            # through a wider mode in the window before the chmod (which only covers a umask
            # that removed owner bits).
            os.fchmod(sock.fileno(), 0o600)
            # One worker-thread trip (file system work) from the stale file's removal to
            # listen: a client that sees the file must not find it refusing, and a hop back
            # to the loop between bind and listen (trio's own AF_UNIX bind) lasts as long
            # as a loaded loop takes to resume.
            await trio.to_thread.run_sync(_bind_listening, sock, path)
            return trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        except BaseException:
            sock.close()
            raise

    async def _connect(self, port: int) -> trio.SocketStream:
        """Connect to ``DIR/host_<port>``.

        Not trio's ``connect``: it treats EAGAIN like TCP's EINPROGRESS and, as an unconnected
        unix socket polls writable at once, returns a socket that was never connected. A
        non-blocking unix connect either completes at once or fails, so one call decides.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.connect(self.host_path(port))
        except BaseException:
            sock.close()
            raise
        await trio.lowlevel.checkpoint()
        return trio.SocketStream(trio.socket.from_stdlib_socket(sock))

    def describe_port(self, port: int) -> str:
        return self.host_path(port)

    def describe(self) -> str:
        return f"unix:{self.directory}"


def socket_is_live(path: str) -> bool:
    """True if something accepts connections on the unix socket at ``path``.

    A non-blocking connect decides at once: refused (or gone) means stale; connected, or
    EAGAIN from a full backlog, means a listener holds it. The probe connection is closed
    straight away; its listener sees a connection that ends before saying anything.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except BlockingIOError:
        return True
    finally:
        probe.close()
    return True


def _bind_listening(sock: socket.socket, path: str) -> None:
    """Replace a stale socket file at ``path``, bind ``sock`` there and listen, then make
    the file 0600."""
    _unlink_stale_socket(path)
    sock.bind(path)
    sock.listen(_BACKLOG)
    os.chmod(path, 0o600)


def _unlink_stale_socket(path: str) -> None:
    """Remove a socket file left by an earlier run; refuse to touch a live one or anything
    that is not a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    if socket_is_live(path):
        raise AlreadyExists(f"{path} is in use: another process is listening on it")
    os.unlink(path)


def parse_transport(
    spec: str,
    host_cid: int = 2,
    allow_local: bool = False,
    dial_retry: float = DIAL_RETRY_SECONDS,
) -> Transport:
    """``"vsock"`` or ``"unix:DIR"``; anything else raises ValueError. ``allow_local`` only
    matters for vsock (a unix socket directory is protected by its permissions)."""
    transport: Transport
    if spec == "vsock":
        transport = VsockTransport(host_cid, allow_local)
    elif spec.startswith("unix:") and len(spec) > len("unix:"):
        transport = UnixTransport(spec[len("unix:") :])
    else:
        raise ValueError(f"unknown transport {spec!r} (expected 'vsock' or 'unix:DIR')")
    transport.dial_retry = dial_retry
    return transport
