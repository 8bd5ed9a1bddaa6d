"""The vsock accept filter: only the host CID reaches a guest listener (issue 12 item 1).

AF_VSOCK peers other than the loopback need a VM (tests/vm covers them for real); here the
filter runs on a real unix listener with an injected peer-address function.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from trinit._agent import AgentConfig
from trinit._ratelimit import RateLimiter
from trinit.io import VsockTransport, parse_transport
from trinit.io._peer import PeerCheckedListener, PeerPolicy

pytestmark = pytest.mark.usefixtures("no_fd_leak")

HOST, GUEST = 2, 3


async def closed_without_answer(stream: trio.SocketStream) -> bool:
    """EOF or a reset (the peer closed with our bytes unread), and not one byte of answer."""
    try:
        with trio.fail_after(10):
            return await stream.receive_some(100) == b""
    except trio.BrokenResourceError:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_one_event_per_key_per_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(interval=60, clock=clock)
    assert limiter.allow(1)
    assert not limiter.allow(1)
    assert limiter.allow(3)  # another key has its own budget
    clock.now += 59.9
    assert not limiter.allow(1)
    clock.now += 0.1
    assert limiter.allow(1)
    assert not limiter.allow(1)


def test_rate_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(interval=60, clock=clock, max_keys=4)
    for key in range(100):
        assert limiter.allow(key)
    assert len(limiter._last) == 4
    assert not limiter.allow(99)  # the newest are remembered
    assert limiter.allow(0)  # the oldest were forgotten


def test_policy_host_only_by_default() -> None:
    policy = PeerPolicy(HOST)
    assert policy.allows(HOST, GUEST)
    assert not policy.allows(1, 1)  # vsock_loopback
    assert not policy.allows(GUEST, GUEST)  # the guest's own CID
    assert not policy.allows(7, GUEST)
    local = PeerPolicy(HOST, allow_local=True)
    assert local.allows(1, 1) and local.allows(GUEST, GUEST) and local.allows(HOST, GUEST)
    assert not local.allows(7, GUEST)  # another VM is never local


def test_local_peers_are_refused_unless_asked_for() -> None:
    assert AgentConfig().allow_local_vsock is False
    transport = parse_transport("vsock")
    assert isinstance(transport, VsockTransport)
    assert transport.policy == PeerPolicy(2, allow_local=False)
    assert parse_transport("vsock", 2, True).policy.allow_local  # type: ignore[attr-defined]
    with pytest.raises(ValueError):  # CID 1 as "the host" would let the guest in
        VsockTransport(host_cid=1)
    described = VsockTransport(1, allow_local=True).describe()
    assert described == "vsock (host cid 1, local peers allowed)"


async def test_listener_closes_refused_peers_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "sock")
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen(8)
    peers = iter([(1, 1), (GUEST, GUEST), (1, 1), (HOST, GUEST)])
    listener = PeerCheckedListener(
        trio.SocketListener(sock), PeerPolicy(HOST), port=1024, addresses=lambda _: next(peers)
    )
    caplog.set_level(logging.WARNING, logger="trinit.transport")
    async with listener:
        clients = [await trio.open_unix_socket(path) for _ in range(4)]
        for client in clients:
            await client.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        with trio.fail_after(10):
            accepted = await listener.accept()
        async with accepted:
            for refused in clients[:3]:
                assert await closed_without_answer(refused)
            await accepted.send_all(b"hello host")
            assert await clients[3].receive_some(100) == b"hello host"
        for client in clients:
            await client.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "vsock port 1024: refused a connection from cid 1: only the host (cid 2) may connect",
        "vsock port 1024: refused a connection from cid 3: only the host (cid 2) may connect",
    ]


async def test_listener_skips_peers_that_vanished(tmp_path: Path) -> None:
    path = str(tmp_path / "sock")
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen(8)
    calls = 0

    def addresses(stream: trio.SocketStream) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(107, "Transport endpoint is not connected")
        return HOST, GUEST

    listener = PeerCheckedListener(trio.SocketListener(sock), PeerPolicy(HOST), port=5,
                                   addresses=addresses)  # fmt: skip
    async with listener:
        first = await trio.open_unix_socket(path)
        second = await trio.open_unix_socket(path)
        with trio.fail_after(10):
            accepted = await listener.accept()
        await accepted.aclose()
        assert await closed_without_answer(first)
        await first.aclose()
        await second.aclose()
