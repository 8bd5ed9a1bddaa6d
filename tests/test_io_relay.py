"""The ProxyVsock byte relay over real unix socket pairs."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing
from iolib import receive_all, stream_pair

from trinit.io import relay

MiB = 1024 * 1024

pytestmark = pytest.mark.usefixtures("no_fd_leak")


class Setup:
    """client <-> [a  relay  b] <-> server"""

    def __init__(self) -> None:
        self.client, self.a = stream_pair()
        self.b, self.server = stream_pair()
        self.relay_done = trio.Event()

    async def run_relay(self) -> None:
        await relay(self.a, self.b)
        self.relay_done.set()


async def test_ten_mib_each_way_exact() -> None:
    s = Setup()
    to_server = os.urandom(10 * MiB)
    to_client = os.urandom(10 * MiB)
    async with s.client, s.server, trio.open_nursery() as nursery:
        nursery.start_soon(s.run_relay)

        async def send(stream: trio.SocketStream, data: bytes) -> None:
            await stream.send_all(data)
            await stream.send_eof()

        async def expect(stream: trio.SocketStream, data: bytes) -> None:
            assert await receive_all(stream) == data

        nursery.start_soon(send, s.client, to_server)
        nursery.start_soon(send, s.server, to_client)
        nursery.start_soon(expect, s.server, to_server)
        nursery.start_soon(expect, s.client, to_client)
    assert s.relay_done.is_set()
    assert s.a.socket.fileno() == -1
    assert s.b.socket.fileno() == -1


async def test_half_close_keeps_the_other_direction_flowing() -> None:
    s = Setup()
    async with s.client, s.server, trio.open_nursery() as nursery:
        nursery.start_soon(s.run_relay)
        await s.client.send_all(b"request")
        await s.client.send_eof()
        # The server sees the request and then EOF (SHUT_WR propagated) ...
        assert await receive_all(s.server) == b"request"
        # ... and can still answer at length after the client stopped sending.
        answer = os.urandom(3 * MiB)
        nursery.start_soon(s.server.send_all, answer)
        received = b""
        while len(received) < len(answer):
            received += await s.client.receive_some(MiB)
        assert received == answer
        assert not s.relay_done.is_set()
        await s.server.send_eof()
        assert await s.client.receive_some(10) == b""
        await s.relay_done.wait()


async def test_peer_reset_tears_down_both() -> None:
    s = Setup()
    async with s.client, trio.open_nursery() as nursery:
        nursery.start_soon(s.run_relay)
        await s.client.send_all(b"hello")
        assert await s.server.receive_some(10) == b"hello"
        # The server vanishes while holding unread data: its peer gets ECONNRESET/EPIPE.
        await s.client.send_all(b"unread")
        await trio.testing.wait_all_tasks_blocked()
        await s.server.aclose()
        with trio.fail_after(5):
            await s.relay_done.wait()
        # The client's connection was closed too, not left half-open.
        with pytest.raises(trio.BrokenResourceError):
            while await s.client.receive_some(10):
                pass
            await s.client.send_all(b"x" * MiB)


async def test_full_close_of_one_side_tears_down_both() -> None:
    """A client that closes its connection (not a half-close) ends the relay even though
    the server neither writes nor closes: the server sees EOF, nothing is left open."""
    s = Setup()
    async with s.server, trio.open_nursery() as nursery:
        nursery.start_soon(s.run_relay)
        await s.client.send_all(b"last words")
        await s.client.aclose()
        with trio.fail_after(5):
            assert await receive_all(s.server) == b"last words"
            await s.relay_done.wait()
        assert s.a.socket.fileno() == -1
        assert s.b.socket.fileno() == -1


async def test_cancel_closes_both() -> None:
    s = Setup()
    async with s.client, s.server:
        with trio.move_on_after(0.01):
            await relay(s.a, s.b)
        assert s.a.socket.fileno() == -1
        assert s.b.socket.fileno() == -1
        assert await s.client.receive_some(10) == b""
