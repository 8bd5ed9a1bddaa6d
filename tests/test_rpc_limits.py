"""trinit.rpc.serve against abusive HTTP/2 peers: what one connection may make trinit hold.

The server loop runs in the test's trio loop and is driven by hand-built frames or by the
``h2`` library as a client, over in-memory streams (so MockClock can be used, and nothing
depends on real time) or over a socketpair where the kernel's send buffer matters (a peer
that never reads). Each test sends real HTTP/2 bytes through the real server loop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import cast

import h2.config  # type: ignore[import-untyped, unused-ignore]
import h2.connection  # type: ignore[import-untyped, unused-ignore]
import h2.errors  # type: ignore[import-untyped, unused-ignore]
import h2.events  # type: ignore[import-untyped, unused-ignore]
import h2.settings  # type: ignore[import-untyped, unused-ignore]
import pytest
import trio
import trio.testing
from test_rpc_adapter import SERVICE, Servicer

from trinit._proto import sandbox_pb2 as pb
from trinit._ratelimit import RateLimitedLog
from trinit.errors import Code
from trinit.rpc import _adapter, serve

MiB = 1024 * 1024
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(
    kind: int, flags: int, stream_id: int, payload: bytes, length: int | None = None
) -> bytes:
    """One HTTP/2 frame; ``length`` may lie about the payload's size."""
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of every whole frame in ``data``."""
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if len(data) < 9 + length:
            break
        frames.append(
            (data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9 : 9 + length])
        )
        data = data[9 + length :]
    return frames


class Listener(trio.abc.Listener[trio.abc.Stream]):
    """Hands the server the far ends of stream pairs the test creates."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)
        self.server_sockets: list[trio.socket.SocketType] = []

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def connect_socket(self) -> trio.SocketStream:
        ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server_sockets.append(theirs)
        await self._send.send(trio.SocketStream(theirs))
        return trio.SocketStream(ours)


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[tuple[Listener, Servicer]]:
    listener = Listener()
    servicer = Servicer()
    await nursery.start(partial(serve, listener, cast(_adapter.GeneratedServicer, servicer)))
    yield listener, servicer
    nursery.cancel_scope.cancel()


async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    received = bytearray()
    while data := await stream.receive_some(65536):
        received += data
    return bytes(received)


class Client:
    """An h2 client connection that records responses per stream."""

    def __init__(self, stream: trio.abc.Stream, settings: dict[int, int] | None = None) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if settings:
            self.h2.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.h2.initiate_connection()
        self.fields: dict[int, dict[bytes, bytes]] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.remote_settings: dict[int, int] = {}
        self.closed = False

    def open(self, method: str) -> int:
        """Open a stream with a gRPC request's headers."""
        stream_id: int = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/{SERVICE}/{method}"),
                (":authority", "localhost"),
                ("te", "trailers"),
                ("content-type", "application/grpc"),
                ("grpc-timeout", "100S"),
            ],
        )
        return stream_id

    def start(self, method: str, payload: bytes) -> int:
        """A whole small request (it must fit the flow-control windows)."""
        stream_id = self.open(method)
        self.h2.send_data(stream_id, framed(payload), end_stream=True)
        return stream_id

    async def send_body(self, stream_id: int, data: bytes, *, end: bool) -> None:
        """Send as flow control allows, reading the server's frames while the window is shut."""
        offset = 0
        while stream_id not in self.resets:
            room = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if room <= 0 and offset < len(data):
                await self.flush()
                await self.pump()
                continue
            chunk = data[offset : offset + room]
            offset += len(chunk)
            done = offset >= len(data)
            self.h2.send_data(stream_id, chunk, end_stream=end and done)
            if done:
                break
        await self.flush()

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def pump(self) -> None:
        data = await self.stream.receive_some(1024 * 1024)
        if not data:
            self.closed = True
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                self.fields.setdefault(event.stream_id, {}).update(dict(event.headers))
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.resets[event.stream_id] = event.error_code
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                for code, change in event.changed_settings.items():
                    self.remote_settings[code] = change.new_value
        await self.flush()

    async def until(self, condition: Callable[[], bool]) -> None:
        await self.flush()
        while not condition():
            assert not self.closed, "the server closed the connection"
            await self.pump()

    async def handshake(self) -> None:
        await self.until(lambda: bool(self.remote_settings))

    def status(self, stream_id: int) -> int:
        return int(self.fields[stream_id][b"grpc-status"])


def framed(payload: bytes, claimed: int | None = None) -> bytes:
    size = len(payload) if claimed is None else claimed
    return b"\x00" + size.to_bytes(4, "big") + payload


def getenv(key: str) -> bytes:
    data: bytes = pb.GetenvRequest(key=key).SerializeToString()
    return data


# -- item 5: frame size ------------------------------------------------------------------


async def test_oversized_frame_header_is_refused_before_its_payload(
    server: tuple[Listener, Servicer], autojump_clock: trio.testing.MockClock
) -> None:
    listener, _ = server
    stream = await listener.connect()
    # A DATA frame that declares 16 MiB (the most 24 bits can say); only its header and a
    # few bytes follow. The server must answer from the header alone, not buffer 16 MiB.
    await stream.send_all(
        PREFACE + frame(SETTINGS, 0, 0, b"") + frame(DATA, 0, 1, b"x" * 10, 16 * MiB - 1)
    )
    with trio.fail_after(60):  # virtual time: fails at once if the server just waits
        received = await read_until_eof(stream)
    goaways = [payload for kind, _, _, payload in parse_frames(received) if kind == GOAWAY]
    assert len(goaways) == 1
    assert int.from_bytes(goaways[0][4:8], "big") == h2.errors.ErrorCodes.FRAME_SIZE_ERROR


async def test_frame_of_exactly_the_advertised_size_is_accepted(
    server: tuple[Listener, Servicer],
) -> None:
    listener, servicer = server
    client = Client(await listener.connect())
    await client.handshake()
    limit = client.h2.max_outbound_frame_size
    assert limit == 64 * 1024
    data = b"d" * (3 * limit)
    request = pb.WriteFileRequest(path="/x", data=data).SerializeToString()
    sid = client.open("WriteFile")
    await client.send_body(sid, framed(request), end=True)
    await client.until(lambda: sid in client.ended)
    assert client.status(sid) == Code.OK
    assert servicer.written == [len(data)]


# -- item 5: concurrent streams ----------------------------------------------------------


async def test_streams_over_the_limit_are_refused_and_the_connection_lives(
    server: tuple[Listener, Servicer],
) -> None:
    listener, servicer = server
    limit = _adapter._MAX_CONCURRENT_STREAMS
    assert limit <= 1024
    client = Client(await listener.connect())
    # Opened before our client has seen the server's SETTINGS, as a peer that ignores the
    # advertised limit would.
    servicer.expected_waiting = limit
    waiting = [client.start("Getenv", getenv("wait")) for _ in range(limit)]
    extra = client.start("Getenv", getenv("too-many"))
    await client.until(lambda: extra in client.resets)
    assert client.resets[extra] == h2.errors.ErrorCodes.REFUSED_STREAM
    assert client.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == limit
    with trio.fail_after(30):
        await servicer.all_waiting.wait()
    # Every admitted stream still works, and once they are done, so do new ones (the
    # refused stream's header block was decoded, so HPACK state is still in step).
    servicer.release.set()
    await client.until(lambda: all(sid in client.ended for sid in waiting))
    assert {client.status(sid) for sid in waiting} == {Code.OK}
    after = client.start("Getenv", getenv("after"))
    await client.until(lambda: after in client.ended)
    assert client.status(after) == Code.OK


# -- item 5: buffered request bytes ------------------------------------------------------


async def test_partial_requests_are_capped_per_connection(
    server: tuple[Listener, Servicer],
) -> None:
    listener, servicer = server
    cap = _adapter._MAX_BUFFERED_REQUEST_BYTES
    client = Client(await listener.connect())
    await client.handshake()
    # Streams whose length prefix promises 4 MiB send most of it and wait: together they
    # hold just under the cap. One more stream's data goes over it.
    claimed = 4 * MiB
    part = claimed - 64 * 1024
    held = []
    total = 0
    while total + part + 5 <= cap:
        held.append(client.open("WriteFile"))
        await client.send_body(held[-1], framed(b"w" * part, claimed), end=False)
        total += part + 5
    over = client.open("WriteFile")
    await client.send_body(over, framed(b"o" * (cap - total), claimed), end=True)
    await client.until(lambda: over in client.ended)
    assert client.status(over) == Code.RESOURCE_EXHAUSTED
    message = client.fields[over][b"grpc-message"].decode()
    assert "buffered request bytes" in message
    # The streams below the cap complete normally.
    for sid in held:
        await client.send_body(sid, b"w" * (claimed - part), end=True)
    await client.until(lambda: all(sid in client.ended for sid in held))
    assert {client.status(sid) for sid in held} == {Code.INVALID_ARGUMENT}  # "w"* is no proto
    assert servicer.written == []


# -- item 5: queued response bytes -------------------------------------------------------


@pytest.mark.parametrize("window", ["open", "shut"])
async def test_a_peer_that_never_reads_is_disconnected(
    server: tuple[Listener, Servicer], window: str
) -> None:
    listener, _ = server
    stream = await listener.connect_socket()
    settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1} if window == "open" else {}
    client = Client(stream, settings)
    if window == "open":
        client.h2.increment_flow_control_window(2**31 - 1 - 65535)
    await client.handshake()
    size = 3 * MiB
    count = _adapter._MAX_QUEUED_RESPONSE_BYTES // size + 2
    for _ in range(count):
        client.start("Getenv", getenv(f"big:{size}"))
    await client.flush()
    # The client reads nothing more. Once every server task is blocked, the server must
    # have given up on the connection rather than hold count * 3 MiB for it.
    await trio.testing.wait_all_tasks_blocked()
    assert listener.server_sockets[0].fileno() == -1
    await stream.aclose()


# -- item 5: fairness across connections --------------------------------------------------


class SpawnCounter(trio.abc.Instrument):
    """The most tasks any single task step spawned (RPCs started without a checkpoint)."""

    def __init__(self) -> None:
        self.current = 0
        self.most = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.current = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.current += 1
        self.most = max(self.most, self.current)


async def test_a_flood_is_handled_in_bounded_batches(server: tuple[Listener, Servicer]) -> None:
    listener, _ = server
    flooder = Client(await listener.connect())
    await flooder.handshake()
    rounds = 2000
    for _ in range(rounds):
        sid = flooder.start("Getenv", getenv("flood"))
        flooder.h2.reset_stream(sid)
    flood = flooder.h2.data_to_send()
    assert len(flood) > 64 * 1024  # several reads' worth
    counter = SpawnCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        await flooder.stream.send_all(flood)
        probe = Client(await listener.connect())
        sid = probe.start("Getenv", getenv("probe"))
        await probe.until(lambda: sid in probe.ended)
        await trio.testing.wait_all_tasks_blocked()
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert probe.status(sid) == Code.OK
    # HEADERS + DATA(END_STREAM) start one RPC: at most half a batch of frames per step.
    assert 0 < counter.most <= _adapter._MAX_FRAMES_PER_BATCH // 2


# -- item 9: bad connections --------------------------------------------------------------


async def test_a_connection_without_preface_is_closed_at_the_timeout(
    server: tuple[Listener, Servicer], autojump_clock: trio.testing.MockClock
) -> None:
    listener, _ = server
    stream = await listener.connect()
    start = trio.current_time()
    await stream.send_all(PREFACE[:10])  # a peer that stalls inside the preface
    with trio.fail_after(3600):  # virtual time
        received = await read_until_eof(stream)
    assert trio.current_time() == start + _adapter.PREFACE_TIMEOUT
    assert parse_frames(received)[0][0] == SETTINGS  # the server's own preface


async def test_an_idle_connection_after_the_preface_stays_open(
    server: tuple[Listener, Servicer], autojump_clock: trio.testing.MockClock
) -> None:
    listener, _ = server
    client = Client(await listener.connect())
    await client.handshake()
    await trio.sleep(10 * _adapter.PREFACE_TIMEOUT)
    sid = client.start("Getenv", getenv("late"))
    await client.until(lambda: sid in client.ended)
    assert client.status(sid) == Code.OK


async def test_bad_connection_warnings_are_rate_limited(
    server: tuple[Listener, Servicer],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trinit.rpc")
    listener, _ = server
    for _ in range(5):
        stream = await listener.connect()
        await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
        await read_until_eof(stream)
    lines = [r.getMessage() for r in caplog.records if r.name == "trinit.rpc"]
    assert len(lines) == 1
    assert lines[0].startswith("HTTP/2 protocol error, closing connection: ")
    await trio.sleep(_adapter._BAD_CONNECTION_LOG_INTERVAL)
    stream = await listener.connect()
    await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
    await read_until_eof(stream)
    lines = [r.getMessage() for r in caplog.records if r.name == "trinit.rpc"]
    assert len(lines) == 2
    assert lines[1].endswith(" (4 similar messages suppressed)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.ratelimit")
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), interval=10.0, clock=clock)
    log.warning("bad %s", 1)
    log.warning("bad %s", 2)
    clock.now += 9.999
    log.warning("bad %s", 3)
    assert [r.getMessage() for r in caplog.records] == ["bad 1"]
    clock.now += 0.001
    log.warning("bad %s", 4)
    log.warning("bad %s", 5)
    clock.now += 10.0
    log.warning("bad %s", 6)
    clock.now += 10.0
    log.warning("bad %s", 7)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1",
        "bad 4 (2 similar messages suppressed)",
        "bad 6 (1 similar message suppressed)",
        "bad 7",
    ]


# (Frame parsing on its own, split anywhere and in batches: tests/test_rpc_http2.py.)


async def test_a_ping_flood_that_never_reads_is_disconnected(
    server: tuple[Listener, Servicer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # h2 answers each PING itself; a peer that never reads the answers must not make us
    # buffer them forever. (A small cap keeps the test quick; the mechanism is the same.)
    monkeypatch.setattr(_adapter, "_MAX_QUEUED_RESPONSE_BYTES", 64 * 1024)
    listener, _ = server
    stream = await listener.connect_socket()
    ping = frame(6, 0, 0, b"12345678")
    await stream.send_all(PREFACE + frame(SETTINGS, 0, 0, b""))
    with trio.move_on_after(30):  # a bound on the loop only; the assertion is below
        while listener.server_sockets[0].fileno() != -1:
            try:
                await stream.send_all(ping * 1024)
            except trio.BrokenResourceError:
                break
    await trio.testing.wait_all_tasks_blocked()
    assert listener.server_sockets[0].fileno() == -1
    await stream.aclose()
