"""Shared helpers of the io tests: socket pairs, exact reads and writes, fd accounting."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import trio

from trinit.io import OutputPump, OwnedFd, make_pipe

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


@dataclass
class Pumped:
    """What :func:`through_output_pump` moved, and the pump with the two ends it owned."""

    received: bytes
    pump: OutputPump
    read_end: OwnedFd
    socket: trio.SocketStream


async def through_output_pump(payload: bytes, name: str = "stdout") -> Pumped:
    """``payload`` written by a thread into a fresh pipe and moved by an ``OutputPump`` to a
    socket, whose other side is read to EOF."""
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = OutputPump(name, read_end, guest)
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)

        async def writer() -> None:
            with write_end:
                await trio.to_thread.run_sync(write_blocking, write_end.fileno(), payload)

        nursery.start_soon(writer)
        received = await receive_all(host)
    return Pumped(received, pump, read_end, guest)
