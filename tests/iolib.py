"""Shared helpers of the io tests: socket pairs, exact reads and writes, fd accounting."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys

import trio

MiB = 1 << 20


def open_fds() -> set[str]:
    """This process's open fds, after a garbage collection: an object an earlier test left
    for the collector (a socket, a channel) would otherwise close its fd in the middle of a
    later test and make its before/after comparison fail."""
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


def stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(host side, guest side) of a connected unix stream socket pair."""
    host, guest = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return trio.SocketStream(host), trio.SocketStream(guest)


async def receive_all(stream: trio.SocketStream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(MiB):
        chunks.append(chunk)
    return b"".join(chunks)


def spawn_python(script: str, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script], stdout=stdout)


def write_blocking(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def random_bytes(size: int) -> bytes:
    """Binary content where a lost, duplicated or reordered chunk shows."""
    return os.urandom(size)


def read_blocking(fd: int) -> bytes:
    """Everything ``fd`` gives until EOF."""
    chunks = []
    while chunk := os.read(fd, MiB):
        chunks.append(chunk)
    return b"".join(chunks)
