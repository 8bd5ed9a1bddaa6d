"""A unix-socket front for a guest's AF_VSOCK port, so grpcio can reach it.

grpcio (1.85) cannot dial ``vsock:CID:PORT`` targets ("Misformatted domain name"). The host
library therefore points its channel at a private unix socket and this relay carries each
connection to (CID, PORT) over AF_VSOCK, both directions, half-close preserved. Only the API
connection takes this hop: stdio and Copy data are direct AF_VSOCK (the guest dials the
host's listeners). The relay owns its listener, its directory and its connection threads;
:meth:`close` stops accepting and removes the socket file.

A connect that fails closes the relayed connection (grpcio then only sees UNAVAILABLE) and is
kept as :attr:`VsockRelay.last_error`, a :class:`VsockConnectError` naming the CID, the port
and the errno, which :meth:`trinit.host.Host.wait_ready` raises instead of an empty timeout.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import threading


class VsockConnectError(ConnectionError):
    """AF_VSOCK connect to (CID, port) failed; ``errno`` is the kernel's answer (ENODEV: no
    such CID or no vsock transport, ECONNRESET: nothing listens on the port, ETIMEDOUT)."""

    def __init__(self, cid: int, port: int, cause: OSError) -> None:
        code = cause.errno or 0
        name = errno.errorcode.get(code, str(code))
        reason = cause.strerror or os.strerror(code)
        super().__init__(code, f"cannot connect to vsock CID {cid} port {port}: {name} ({reason})")
        self.cid = cid
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


class VsockRelay:
    def __init__(self, cid: int, port: int) -> None:
        self.cid = cid
        self.port = port
        self._directory = tempfile.mkdtemp(prefix="trinit-vsock-")
        self.path = os.path.join(self._directory, f"guest_{port}")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._listener.bind(self.path)
        os.chmod(self.path, 0o600)
        self._listener.listen(16)
        self._closed = False
        self.last_error: VsockConnectError | None = None
        """The most recent connect failure (None after a connect succeeds)."""
        self._connecting = 0
        self._settled = threading.Condition()
        threading.Thread(target=self._accept, name="vsock-relay", daemon=True).start()

    @property
    def target(self) -> str:
        return f"unix:{self.path}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._settled:
                self._connecting += 1
            try:
                upstream = self._connect()
            finally:
                with self._settled:
                    self._connecting -= 1
                    self._settled.notify_all()
            if upstream is None:
                client.close()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_one_way, args=(src, dst), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        """One AF_VSOCK connection to (cid, port), or None with :attr:`last_error` set."""
        try:
            upstream = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        except OSError as exc:  # EAFNOSUPPORT: this kernel has no vsock
            self.last_error = VsockConnectError(self.cid, self.port, exc)
            return None
        try:
            upstream.connect((self.cid, self.port))
        except OSError as exc:
            self.last_error = VsockConnectError(self.cid, self.port, exc)
            upstream.close()
            return None
        self.last_error = None
        return upstream

    def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for connects in flight to succeed or fail, so
        :attr:`last_error` says how the latest attempt ended (an AF_VSOCK connect to a CID
        that never answers takes the kernel's connect timeout, 2 s by default)."""
        with self._settled:
            self._settled.wait_for(lambda: self._connecting == 0, timeout)

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        shutil.rmtree(self._directory, ignore_errors=True)


def _one_way(src: socket.socket, dst: socket.socket) -> None:
    """Copy until EOF, then half-close ``dst``; the socket closes when both ways are done."""
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass
