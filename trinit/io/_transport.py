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
"""

from __future__ import annotations

import abc
import os
import socket
import stat

import trio

from ._peer import VMADDR_CID_LOCAL, PeerCheckedListener, PeerPolicy

__all__ = ["Transport", "UnixTransport", "VsockTransport", "parse_transport"]

_BACKLOG = 128


class Transport(abc.ABC):
    """Guest listeners and host connections, addressed by vsock-style port numbers."""

    @abc.abstractmethod
    async def listen(self, port: int) -> trio.abc.Listener[trio.SocketStream]:
        """A guest-side listener on ``port``."""

    @abc.abstractmethod
    async def dial(self, port: int) -> trio.SocketStream:
        """A connection to the host's ``port``."""

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

    async def dial(self, port: int) -> trio.SocketStream:
        _check_port(port)
        sock = trio.socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            await sock.connect((self.host_cid, port))
            return trio.SocketStream(sock)
        except BaseException:
            sock.close()
            raise

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
        """Listen at ``DIR/guest_<port>``, replacing a stale socket file; mode 0600."""
        _check_port(port)
        path = self.guest_path(port)
        _unlink_stale_socket(path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The socket inode's mode becomes the file's mode at bind, so nobody can connect
            # through a wider mode in the window before the chmod below (which only covers
            # a umask that removed owner bits).
            os.fchmod(sock.fileno(), 0o600)
            await sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(_BACKLOG)
            return trio.SocketListener(sock)
        except BaseException:
            sock.close()
            raise

    async def dial(self, port: int) -> trio.SocketStream:
        """Connect to ``DIR/host_<port>``."""
        _check_port(port)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(self.host_path(port))
            return trio.SocketStream(sock)
        except BaseException:
            sock.close()
            raise

    def describe(self) -> str:
        return f"unix:{self.directory}"


def _unlink_stale_socket(path: str) -> None:
    """Remove a socket file left by an earlier run; refuse to delete anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    os.unlink(path)


def parse_transport(spec: str, host_cid: int = 2, allow_local: bool = False) -> Transport:
    """``"vsock"`` or ``"unix:DIR"``; anything else raises ValueError. ``allow_local`` only
    matters for vsock (a unix socket directory is protected by its permissions)."""
    if spec == "vsock":
        return VsockTransport(host_cid, allow_local)
    if spec.startswith("unix:") and len(spec) > len("unix:"):
        return UnixTransport(spec[len("unix:") :])
    raise ValueError(f"unknown transport {spec!r} (expected 'vsock' or 'unix:DIR')")
