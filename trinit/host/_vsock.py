"""A unix-socket front for a guest's AF_VSOCK port, so grpcio can reach it.

grpcio (1.85) cannot dial ``vsock:CID:PORT`` targets ("Misformatted domain name"). The host
library therefore points its channel at a private unix socket and this relay carries each
connection to (CID, PORT) over AF_VSOCK, both directions, half-close preserved. Only the API
connection takes this hop: stdio and Copy data are direct AF_VSOCK (the guest dials the
host's listeners). The relay owns its listener, its directory and its connection threads;
:meth:`close` stops accepting and removes the socket file.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading


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
            upstream = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                upstream.connect((self.cid, self.port))
            except OSError:
                client.close()
                upstream.close()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_one_way, args=(src, dst), daemon=True).start()

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
