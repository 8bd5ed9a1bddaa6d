"""Host-side listeners for the ports the guest dials (stdio, Copy data, INTO proxies).

The guest always connects to the host (docs/protocol.md §1). Under the unix transport, host
port P is the socket file ``DIR/host_<P>``; under vsock it is AF_VSOCK port P on the host.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import socket
import threading
import time

_ACCEPT_SLICE = 0.05
"""Seconds an accept blocks before it looks whether :meth:`HostPort.stop_accepting` was
called."""


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
        self._stopped = threading.Event()

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
        """The guest's connection; TimeoutError after ``timeout`` seconds, OSError
        (ECANCELED) soon after :meth:`stop_accepting` from another thread."""
        deadline = time.monotonic() + timeout
        while True:  # a connection already queued is taken even after stop_accepting
            self.sock.settimeout(max(0.0, min(deadline - time.monotonic(), _ACCEPT_SLICE)))
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, BlockingIOError):
                if self._stopped.is_set():
                    raise OSError(errno.ECANCELED, "stopped accepting") from None
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"no connection on port {self.port} after {timeout} s"
                    ) from None
                continue
            conn.settimeout(None)
            return conn

    def stop_accepting(self) -> None:
        """Make an :meth:`accept` in another thread give up (neither closing nor shutting
        down a listening socket wakes a thread blocked in accept)."""
        self._stopped.set()

    def close(self) -> None:
        self.sock.close()
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
