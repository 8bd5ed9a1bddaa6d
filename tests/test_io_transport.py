"""Transports: the unix convention for real, vsock as far as this kernel allows."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trinit.errors import AlreadyExists, Unavailable
from trinit.io import (
    DIAL_RETRY_SECONDS,
    Transport,
    UnixTransport,
    VsockTransport,
    dial_with_retry,
    parse_transport,
    socket_is_live,
)

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def test_parse_transport() -> None:
    vsock = parse_transport("vsock", host_cid=7)
    assert isinstance(vsock, VsockTransport)
    assert vsock.host_cid == 7
    assert vsock.describe() == "vsock (host cid 7)"
    assert isinstance(parse_transport("vsock"), VsockTransport)
    assert parse_transport("vsock").host_cid == 2  # type: ignore[attr-defined]
    unix = parse_transport("unix:/run/trinit")
    assert isinstance(unix, UnixTransport)
    assert unix.directory == "/run/trinit"
    assert unix.describe() == "unix:/run/trinit"
    for bad in ("", "tcp", "unix:", "unix", "vsock:2", "VSOCK"):
        with pytest.raises(ValueError):
            parse_transport(bad)


async def test_unix_listen_at_guest_port(tmp_path: Path) -> None:
    transport: Transport = UnixTransport(str(tmp_path))
    listener = await transport.listen(1024)
    async with listener:
        path = tmp_path / "guest_1024"
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        client = await trio.open_unix_socket(str(path))
        async with client, await listener.accept() as server:
            await client.send_all(b"ping")
            assert await server.receive_some(10) == b"ping"
            await server.send_all(b"pong")
            assert await client.receive_some(10) == b"pong"


async def test_unix_listen_accepts_from_the_moment_the_file_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sees ``guest_<port>`` must find it listening. trio binds an AF_UNIX
    socket in a worker thread; a ``listen()`` after the hop back to the loop left a window,
    as long as a loaded loop takes to resume, in which the file refused connections (a CI
    run: ECONNREFUSED just after the file appeared). Each worker-thread trip the listen
    makes is followed here, before its caller resumes, by a connect to the path if it
    exists."""
    transport = UnixTransport(str(tmp_path))
    path = transport.guest_path(1024)
    outcomes: list[str] = []
    real_run_sync = trio.to_thread.run_sync

    async def run_sync_then_probe(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = await real_run_sync(fn, *args, **kwargs)
        # blocking on purpose: the probe must run before the caller resumes
        if os.path.lexists(path):  # noqa: ASYNC240
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                    outcomes.append("connected")
                except ConnectionRefusedError:
                    outcomes.append("refused")
        return result

    monkeypatch.setattr(trio.to_thread, "run_sync", run_sync_then_probe)
    async with await transport.listen(1024):
        pass
    assert outcomes and "refused" not in outcomes, outcomes


async def test_unix_listen_replaces_stale_socket_only(tmp_path: Path) -> None:
    transport = UnixTransport(str(tmp_path))
    async with await transport.listen(5):
        pass
    assert (tmp_path / "guest_5").exists()  # left behind, like after a crash
    async with await transport.listen(5) as listener:
        client = await trio.open_unix_socket(str(tmp_path / "guest_5"))
        async with client, await listener.accept():
            pass
    (tmp_path / "guest_6").write_text("not a socket")
    with pytest.raises(FileExistsError):
        await transport.listen(6)
    assert (tmp_path / "guest_6").read_text() == "not a socket"


async def test_unix_mode_0600_despite_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        async with await UnixTransport(str(tmp_path)).listen(9):
            assert stat.S_IMODE((tmp_path / "guest_9").lstat().st_mode) == 0o600
    finally:
        os.umask(old)


async def test_unix_dial_host_port(tmp_path: Path) -> None:
    host = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with host:
        await host.bind(str(tmp_path / "host_2000"))
        host.listen()
        transport = UnixTransport(str(tmp_path))
        stream = await transport.dial(2000)
        accepted, _ = await host.accept()
        with accepted:
            async with stream:
                await stream.send_all(b"stdout bytes")
                assert await accepted.recv(100) == b"stdout bytes"


async def test_unix_dial_failure_leaks_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(Unavailable, match=r"host_1 is not accepting connections: ENOENT"):
        await UnixTransport(str(tmp_path)).dial(1)
    with pytest.raises(ValueError):
        await UnixTransport(str(tmp_path)).dial(-1)


class _FlakyHost:
    """connect() refuses ``failures`` times, then returns a real socket pair's end."""

    def __init__(self, failures: int, errno_: int = errno.ECONNREFUSED) -> None:
        self.failures = failures
        self.errno = errno_
        self.attempts: list[float] = []
        self.peers: list[socket.socket] = []

    async def connect(self) -> trio.SocketStream:
        self.attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.attempts) <= self.failures:
            raise OSError(self.errno, os.strerror(self.errno))
        ours, theirs = socket.socketpair()
        self.peers.append(theirs)
        return trio.SocketStream(trio.socket.from_stdlib_socket(ours))


async def test_dial_retries_with_doubling_backoff(autojump_clock: trio.testing.MockClock) -> None:
    host = _FlakyHost(failures=5)
    stream = await dial_with_retry(host.connect, "host port 9")
    async with stream:
        host.peers[0].close()
    start = host.attempts[0]
    assert [round(t - start, 6) for t in host.attempts] == [0, 0.01, 0.03, 0.07, 0.15, 0.31]


async def test_dial_gives_up_after_the_budget(autojump_clock: trio.testing.MockClock) -> None:
    host = _FlakyHost(failures=1000, errno_=errno.ECONNRESET)
    start = trio.current_time()
    with pytest.raises(Unavailable) as info:
        await dial_with_retry(host.connect, "host vsock cid 2 port 9")
    assert trio.current_time() - start == pytest.approx(DIAL_RETRY_SECONDS)
    assert str(info.value).startswith(
        "host vsock cid 2 port 9 is not accepting connections: ECONNRESET"
    )
    assert f"{len(host.attempts)} attempts over 2s" in str(info.value)
    # at 0, .01, .03, .07, .15, .31 (doubling), then every 0.25 s up to 1.81, and a last
    # one at the deadline
    assert len(host.attempts) == 13 and host.attempts[-1] - start == pytest.approx(2.0)


async def test_dial_does_not_retry_other_errors(autojump_clock: trio.testing.MockClock) -> None:
    host = _FlakyHost(failures=1, errno_=errno.EACCES)
    with pytest.raises(PermissionError):
        await dial_with_retry(host.connect, "x")
    assert len(host.attempts) == 1


async def test_unix_dial_waits_for_a_listener_that_appears(tmp_path: Path) -> None:
    transport = UnixTransport(str(tmp_path))
    async with trio.open_nursery() as nursery:
        dialed: list[trio.SocketStream] = []

        async def dial() -> None:
            dialed.append(await transport.dial(7))

        nursery.start_soon(dial)
        await trio.testing.wait_all_tasks_blocked()  # refused once, now backing off
        host = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await host.bind(str(tmp_path / "host_7"))
        host.listen()
    with host:
        accepted, _ = await host.accept()
        with accepted:
            async with dialed[0]:
                await dialed[0].send_all(b"late")
                assert await accepted.recv(10) == b"late"


async def test_unix_dial_to_a_full_backlog_is_not_a_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """EAGAIN from a unix listener's full backlog used to pass for "connecting" and gave a
    stream that was never connected (the process's output was lost)."""
    host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    queued = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with host, queued:
        host.bind(str(tmp_path / "host_8"))
        host.listen(0)
        queued.connect(str(tmp_path / "host_8"))  # fills the backlog; never accepted
        with pytest.raises(Unavailable, match="EAGAIN"):
            await UnixTransport(str(tmp_path)).dial(8)


async def test_unix_listen_never_takes_over_a_live_socket(tmp_path: Path) -> None:
    transport = UnixTransport(str(tmp_path))
    async with await transport.listen(1024) as live:
        with pytest.raises(AlreadyExists, match="guest_1024 is in use"):
            await transport.listen(1024)
        client = await trio.open_unix_socket(str(tmp_path / "guest_1024"))
        async with client, await live.accept():  # the first listener still holds the path
            pass
    assert not socket_is_live(str(tmp_path / "guest_1024"))


def _vsock_available() -> str | None:
    """None if AF_VSOCK sockets can be created here, else the reason they cannot."""
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError as exc:
        return f"AF_VSOCK unavailable: {exc}"
    return None


def _vsock_loopback_available() -> str | None:
    """None if the vsock loopback transport is loaded (or loads), else why not."""
    if Path("/sys/module/vsock_loopback").exists():
        return None
    modprobe = shutil.which("modprobe")
    if modprobe is None:
        return "no vsock_loopback module loaded and no modprobe to load it"
    result = subprocess.run(
        [modprobe, "vsock_loopback"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return f"modprobe vsock_loopback failed: {result.stderr.strip()}"
    return None


@pytest.fixture
def vsock() -> None:
    reason = _vsock_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def vsock_loopback(vsock: None) -> None:
    reason = _vsock_loopback_available()
    if reason:
        pytest.skip(reason)


async def test_vsock_listen(vsock: None) -> None:
    transport = VsockTransport()
    port = 40000 + os.getpid() % 20000
    listener = await transport.listen(port)
    async with listener:
        assert listener.inner.socket.family == socket.AF_VSOCK
        assert listener.inner.socket.getsockname() == (socket.VMADDR_CID_ANY, port)
        # A second listener on the same port fails cleanly, without leaking its socket.
        with pytest.raises(OSError):
            await transport.listen(port)


async def test_vsock_dial_through_loopback(vsock_loopback: None) -> None:
    port = 40000 + (os.getpid() + 1) % 20000
    local = VsockTransport(host_cid=1, allow_local=True)
    async with await local.listen(port) as listener:
        # The loopback transport serves CID 1 (VMADDR_CID_LOCAL).
        with trio.fail_after(5):
            stream = await local.dial(port)
            async with stream, await listener.accept() as server:
                await stream.send_all(b"over vsock")
                assert await server.receive_some(100) == b"over vsock"


async def test_vsock_dial_cancelled_or_failed_leaks_nothing(vsock: None) -> None:
    """Exercises the dial path on any kernel: it connects, fails, or is cancelled, and in every
    case its socket is closed (the autouse fixture checks /proc/self/fd). CID 1 is local (the
    loopback transport, if loaded), so nothing leaves this machine."""
    with trio.move_on_after(0.2):
        try:
            stream = await VsockTransport(host_cid=1, allow_local=True).dial(9)
        except OSError:
            return
        await stream.aclose()
