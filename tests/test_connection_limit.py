"""Connection caps: ``trinit._connlimit``, the API server's (``serve(max_connections=...)``)
and a ProxyVsock listener's, over real unix sockets in the test's trio loop.

The real agent's default API cap is checked in ``tests/test_agent_connection_limit.py``.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest
import trio
from test_rpc_adapter import Servicer

from trinit._connlimit import ConnectionLimit
from trinit._ratelimit import RateLimitedLog
from trinit.nursery._proxies import INTO, VsockProxy
from trinit.rpc import serve

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_limit_admits_up_to_the_cap_and_frees_on_release(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limit = ConnectionLimit(2, RateLimitedLog(logging.getLogger("t"), interval=10, clock=clock))
    assert limit.admit() and limit.admit()
    assert not limit.admit() and not limit.admit()
    assert limit.refused == 2
    assert caplog.text.count("refused a connection: 2 connections open") == 1  # rate-limited
    limit.release()
    assert limit.admit()
    assert limit.active == 2
    with pytest.raises(ValueError):
        ConnectionLimit(0, RateLimitedLog(logging.getLogger("t"), interval=10))


@pytest.fixture
async def socket_dir() -> AsyncIterator[str]:
    directory = tempfile.mkdtemp(prefix="trn-cap-", dir="/tmp")
    yield directory
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


async def unix_listener(path: str) -> trio.SocketListener:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(64)
    return trio.SocketListener(sock)


async def connect(path: str) -> trio.SocketStream:
    return await trio.open_unix_socket(path)


async def first_bytes(stream: trio.SocketStream) -> bytes:
    """What the server sends first; b"" when it closed the connection at once."""
    with trio.fail_after(10):
        try:
            return await stream.receive_some(9)
        except trio.BrokenResourceError:  # ECONNRESET: closed with our bytes unread
            return b""


async def served_again(path: str, request: bytes, served: Callable[[bytes], bool]) -> None:
    """Reconnect until a connection is served again (``served`` of its first bytes): a freed
    slot shows only once the server has seen the EOF, and nothing announces that."""
    with trio.fail_after(10):
        while True:
            again = await connect(path)
            try:
                await again.send_all(request)
            except trio.BrokenResourceError:
                pass
            answer = await first_bytes(again)
            await again.aclose()
            if served(answer):
                return
            await trio.sleep(0.01)


async def test_serve_refuses_connections_beyond_its_cap(
    nursery: trio.Nursery, socket_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = os.path.join(socket_dir, "api")
    await nursery.start(partial(serve, await unix_listener(path), Servicer(), max_connections=2))
    held = []
    for _ in range(2):
        stream = await connect(path)
        await stream.send_all(PREFACE + EMPTY_SETTINGS)
        assert await first_bytes(stream) != b""  # the server's SETTINGS
        held.append(stream)
    refused = await connect(path)
    assert await first_bytes(refused) == b""
    await refused.aclose()
    assert "refused an API connection: 2 connections open" in caplog.text
    await held.pop().aclose()
    await served_again(path, PREFACE + EMPTY_SETTINGS, lambda answer: answer != b"")
    for stream in held:
        await stream.aclose()
    nursery.cancel_scope.cancel()


async def test_a_proxy_refuses_connections_beyond_its_cap(
    nursery: trio.Nursery, socket_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An INTO proxy's socket is in a container's reach: each connection dials the host."""
    dialed = 0

    async def dial() -> trio.SocketStream:  # the "host": an echo over a socketpair
        nonlocal dialed
        dialed += 1
        ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        nursery.start_soon(echo, trio.SocketStream(theirs))
        return trio.SocketStream(ours)

    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(4096):
                await stream.send_all(data)

    path = os.path.join(socket_dir, "proxy")
    proxy = VsockProxy("p1", INTO, await unix_listener(path), dial, None, max_connections=2)
    await nursery.start(proxy.run)
    held = []
    for n in range(2):
        stream = await connect(path)
        await stream.send_all(b"ping%d" % n)
        assert await first_bytes(stream) == b"ping%d" % n
        held.append(stream)
    refused = await connect(path)
    assert await first_bytes(refused) == b""
    await refused.aclose()
    assert dialed == 2
    assert "refused a connection to proxy p1: 2 connections open" in caplog.text
    await held.pop().aclose()
    await served_again(path, b"again", lambda answer: answer == b"again")
    for stream in held:
        await stream.aclose()
    await proxy.stop()
    nursery.cancel_scope.cancel()
