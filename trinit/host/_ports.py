"""Host-side listeners for the ports the guest dials (stdio, Copy data, INTO proxies).

The guest always connects to the host (docs/protocol.md §1). Under the unix transport, host
port P is the socket file ``DIR/host_<P>``; under vsock it is AF_VSOCK port P on the host.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading


class PortAllocator:
    """Hands out port numbers unlikely to collide with another host in the same directory."""

    def __init__(self, start: int | None = None) -> None:
        self._counter = itertools.count(
            start if start is not None else random.randint(20000, 60000)
        )
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


class HostPort:
    """A listening socket for one port; :meth:`accept` takes the guest's one connection."""

    def __init__(self, sock: socket.socket, port: int, path: str | None) -> None:
        self.sock = sock
        self.port = port
        self._path = path

    @classmethod
    def listen(cls, transport: str, port: int) -> HostPort:
        if transport.startswith("unix:"):
            path = os.path.join(transport[5:], f"host_{port}")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(4)
            return cls(sock, port, path)
        if transport == "vsock":
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.bind((socket.VMADDR_CID_ANY, port))
            sock.listen(4)
            return cls(sock, port, None)
        raise ValueError(f"unknown transport {transport!r}")

    def accept(self, timeout: float = 30.0) -> socket.socket:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        conn.settimeout(None)
        return conn

    def close(self) -> None:
        self.sock.close()
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
