"""trinit.rpc.serve against the official grpcio client, over a unix socket.

Every test runs our server in the test's trio loop and drives it with grpcio from a worker
thread (``trio.to_thread.run_sync``). Every grpcio call carries a timeout so a broken
server fails the test instead of hanging it. The deadline test at the end uses a minimal
h2 client in the trio loop instead, so it can run under MockClock with exact times.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import h2.config  # type: ignore[import-untyped, unused-ignore]
import h2.connection  # type: ignore[import-untyped, unused-ignore]
import h2.events  # type: ignore[import-untyped, unused-ignore]
import hpack  # type: ignore[import-untyped, unused-ignore]
import pytest
import trio
import trio.testing

from trinit._proto import sandbox_pb2 as pb
from trinit._proto import sandbox_pb2_grpc as pb_grpc
from trinit._proto.sandbox_grpc import SandboxContextServicer
from trinit.errors import Code, NotFound
from trinit.rpc import _wire, serve
from trinit.rpc._hpack import TABLE_SIZE_UPDATE_TO_ZERO, encode_fields

T = TypeVar("T")

SERVICE = "com.apple.containerization.sandbox.v3.SandboxContext"
MiB = 1024 * 1024
CALL_TIMEOUT = 20.0


class Servicer(SandboxContextServicer):
    """Getenv's key selects a behaviour; the events let tests wait for handler state."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.release = trio.Event()
        self.copy_continue = trio.Event()
        self.written: list[int] = []
        self.waiting = 0
        self.expected_waiting = 0
        self.all_waiting = trio.Event()

    async def Getenv(self, request: pb.GetenvRequest) -> pb.GetenvResponse:
        key = request.key
        if key == "boom":
            raise ValueError("boom\n  File secret.py, line 1")
        if key == "notfound":
            raise NotFound("no such thing")
        if key == "group":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fail_not_found)
        if key == "forever":
            try:
                self.started.set()
                await trio.sleep_forever()
            finally:
                self.cancelled.set()
        if key == "wait":
            self.waiting += 1
            if self.waiting == self.expected_waiting:
                self.all_waiting.set()
            await self.release.wait()
        if key.startswith("big:"):
            return pb.GetenvResponse(value="x" * int(key[4:]))
        return pb.GetenvResponse(value=f"value-of-{key}")

    async def _fail_not_found(self) -> None:
        raise NotFound("raised inside a nursery")

    async def WriteFile(self, request: pb.WriteFileRequest) -> pb.WriteFileResponse:
        self.written.append(len(request.data))
        return pb.WriteFileResponse()

    async def Setenv(self, request: pb.SetenvRequest) -> pb.SetenvResponse:
        return "not a SetenvResponse"  # type: ignore[return-value]

    async def Copy(self, request: pb.CopyRequest) -> AsyncIterator[pb.CopyResponse]:
        yield pb.CopyResponse(status=pb.CopyResponse.METADATA, total_size=1)
        if request.path == "fail":
            raise NotFound("copy: path vanished")
        if request.path == "endless":
            try:
                while True:
                    yield pb.CopyResponse(error="e" * (3 * MiB))
            finally:
                self.cancelled.set()
        if request.path == "large":
            for index in range(4):
                yield pb.CopyResponse(error=str(index) * (3 * MiB))
        else:
            await self.copy_continue.wait()
        yield pb.CopyResponse(status=pb.CopyResponse.COMPLETE)


class CountingListener(trio.abc.Listener[trio.SocketStream]):
    """Counts accepted connections, to prove a test's RPCs shared one connection."""

    def __init__(self, inner: trio.SocketListener) -> None:
        self.inner = inner
        self.accepted = 0

    async def accept(self) -> trio.SocketStream:
        stream = await self.inner.accept()
        self.accepted += 1
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


class Harness:
    def __init__(self, path: str, servicer: Servicer, listener: CountingListener) -> None:
        self.path = path
        self.servicer = servicer
        self.listener = listener
        # A private subchannel pool: each Harness gets its own connection.
        self.channel = grpc.insecure_channel(
            f"unix:{path}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.stub = pb_grpc.SandboxContextStub(self.channel)  # type: ignore[no-untyped-call]

    @property
    def accepted(self) -> int:
        return self.listener.accepted

    async def run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn)

    async def getenv(self, key: str) -> str:
        reply = await self.run(
            lambda: self.stub.Getenv(pb.GetenvRequest(key=key), timeout=CALL_TIMEOUT)
        )
        value: str = reply.value
        return value

    async def getenv_error(self, key: str) -> grpc.RpcError:
        return await self.expect_error(
            lambda: self.stub.Getenv(pb.GetenvRequest(key=key), timeout=CALL_TIMEOUT)
        )

    async def expect_error(self, fn: Callable[[], Any]) -> grpc.RpcError:
        def call() -> grpc.RpcError:
            try:
                fn()
            except grpc.RpcError as exc:
                return exc
            raise AssertionError("the call succeeded")

        return await self.run(call)


async def _listen_unix(path: str) -> trio.SocketListener:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(64)
    return trio.SocketListener(sock)


@pytest.fixture
async def harness(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Harness]:
    path = str(tmp_path / "api.sock")
    servicer = Servicer()
    listener = CountingListener(await _listen_unix(path))
    await nursery.start(partial(serve, listener, servicer))
    h = Harness(path, servicer, listener)
    try:
        yield h
    finally:
        h.channel.close()


# -- basics ----------------------------------------------------------------------------


async def test_unary_call(harness: Harness) -> None:
    assert await harness.getenv("PATH") == "value-of-PATH"


async def test_many_connections_and_concurrent_rpcs(harness: Harness) -> None:
    other = Harness(harness.path, harness.servicer, harness.listener)
    try:

        def many() -> list[str]:
            futures = [
                stub.Getenv.future(pb.GetenvRequest(key="wait"), timeout=CALL_TIMEOUT)
                for stub in (harness.stub, other.stub)
                for _ in range(40)
            ]
            return [f.result().value for f in futures]

        async with trio.open_nursery() as nursery:
            results: list[list[str]] = []

            async def collect() -> None:
                results.append(await harness.run(many))

            harness.servicer.expected_waiting = 80
            nursery.start_soon(collect)
            # All 80 handlers run at once (none may finish before the last has started).
            with trio.fail_after(CALL_TIMEOUT):
                await harness.servicer.all_waiting.wait()
            assert await harness.getenv("quick") == "value-of-quick"
            harness.servicer.release.set()
        assert results == [["value-of-wait"] * 80]
        assert harness.accepted == 2
    finally:
        other.channel.close()


# -- errors ----------------------------------------------------------------------------


async def test_domain_error_keeps_code_and_message(harness: Harness) -> None:
    error = await harness.getenv_error("notfound")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such thing"


async def test_single_error_in_exception_group_keeps_its_code(harness: Harness) -> None:
    error = await harness.getenv_error("group")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "raised inside a nursery"


async def test_unimplemented_base_streaming_method(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, await _listen_unix(path), SandboxContextServicer()))
        with grpc.insecure_channel(f"unix:{path}") as channel:
            stub = pb_grpc.SandboxContextStub(channel)  # type: ignore[no-untyped-call]

            def copy() -> grpc.RpcError:
                try:
                    list(stub.Copy(pb.CopyRequest(), timeout=CALL_TIMEOUT))
                except grpc.RpcError as exc:
                    return exc
                raise AssertionError("the call succeeded")

            error = await trio.to_thread.run_sync(copy)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert error.details() == "Copy is not implemented"
        nursery.cancel_scope.cancel()


async def test_unimplemented_base_method(harness: Harness) -> None:
    error = await harness.expect_error(
        lambda: harness.stub.Mount(pb.MountRequest(), timeout=CALL_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == "Mount is not implemented"


async def test_unexpected_error_is_internal_one_line_and_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trinit.rpc")
    error = await harness.getenv_error("boom")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "ValueError: boom"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [f"/{SERVICE}/Getenv failed: ValueError: boom"]
    tracebacks = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert len(tracebacks) == 1
    assert "Traceback" not in error.details()
    # the connection is still fine
    assert await harness.getenv("after") == "value-of-after"
    assert harness.accepted == 1


async def test_wrong_response_type_is_internal(harness: Harness) -> None:
    error = await harness.expect_error(
        lambda: harness.stub.Setenv(pb.SetenvRequest(), timeout=CALL_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "returned str, expected SetenvResponse" in error.details()


async def test_failing_handler_does_not_affect_concurrent_rpcs(harness: Harness) -> None:
    harness.servicer.expected_waiting = 1
    waiting = harness.stub.Getenv.future(pb.GetenvRequest(key="wait"), timeout=CALL_TIMEOUT)
    with trio.fail_after(CALL_TIMEOUT):
        await harness.servicer.all_waiting.wait()
    error = await harness.getenv_error("boom")
    assert error.code() == grpc.StatusCode.INTERNAL
    harness.servicer.release.set()
    assert (await harness.run(waiting.result)).value == "value-of-wait"
    assert harness.accepted == 1


async def test_unknown_method_and_service(harness: Harness) -> None:
    def raw(path: str) -> Callable[[], Any]:
        call = harness.channel.unary_unary(path)
        return lambda: call(b"", timeout=CALL_TIMEOUT)

    for path in (f"/{SERVICE}/NoSuchMethod", "/no.such.Service/Getenv"):
        error = await harness.expect_error(raw(path))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert error.details() == f"unknown method {path}"
    assert await harness.getenv("after") == "value-of-after"
    assert harness.accepted == 1


async def test_malformed_request_is_invalid_argument(harness: Harness) -> None:
    call = harness.channel.unary_unary(f"/{SERVICE}/Getenv")
    error = await harness.expect_error(lambda: call(b"\x0a\xff\xff", timeout=CALL_TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("malformed request: ")
    assert await harness.getenv("after") == "value-of-after"
    assert harness.accepted == 1


# -- sizes and flow control ------------------------------------------------------------


async def test_oversized_request_fails_only_its_rpc(harness: Harness) -> None:
    error = await harness.expect_error(
        lambda: harness.stub.WriteFile(
            pb.WriteFileRequest(path="/x", data=b"a" * (5 * MiB)), timeout=CALL_TIMEOUT
        )
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    size = pb.WriteFileRequest(path="/x", data=b"a" * (5 * MiB)).ByteSize()
    assert error.details() == (
        f"request message of {size} bytes exceeds the limit of {4 * MiB} bytes"
    )
    assert harness.servicer.written == []
    assert await harness.getenv("after") == "value-of-after"
    assert harness.accepted == 1  # the same connection carried both RPCs


async def test_request_up_to_the_limit(harness: Harness) -> None:
    data = b"b" * (4 * MiB - 100)
    await harness.run(
        lambda: harness.stub.WriteFile(pb.WriteFileRequest(path="/x", data=data), timeout=30)
    )
    assert harness.servicer.written == [len(data)]


async def test_large_request_and_response(harness: Harness) -> None:
    size = int(3.9 * MiB)
    await harness.run(
        lambda: harness.stub.WriteFile(pb.WriteFileRequest(data=b"c" * size), timeout=CALL_TIMEOUT)
    )
    assert harness.servicer.written == [size]
    assert await harness.getenv(f"big:{size}") == "x" * size


async def test_concurrent_large_responses(harness: Harness) -> None:
    size = 3 * MiB

    def several() -> list[int]:
        futures = [
            harness.stub.Getenv.future(pb.GetenvRequest(key=f"big:{size}"), timeout=CALL_TIMEOUT)
            for _ in range(4)
        ]
        return [len(f.result().value) for f in futures]

    assert await harness.run(several) == [size] * 4


# -- streaming -------------------------------------------------------------------------


async def test_stream_messages_are_sent_as_produced(harness: Harness) -> None:
    responses: Iterator[pb.CopyResponse] = harness.stub.Copy(
        pb.CopyRequest(path="slow"), timeout=CALL_TIMEOUT
    )
    first = await harness.run(lambda: next(responses))
    # The handler is still parked on copy_continue: the first message came on its own.
    assert first.status == pb.CopyResponse.METADATA
    assert not harness.servicer.copy_continue.is_set()
    harness.servicer.copy_continue.set()
    rest = await harness.run(lambda: list(responses))
    assert [r.status for r in rest] == [pb.CopyResponse.COMPLETE]


async def test_stream_error_mid_stream(harness: Harness) -> None:
    received: list[pb.CopyResponse] = []

    def consume() -> None:
        for response in harness.stub.Copy(pb.CopyRequest(path="fail"), timeout=CALL_TIMEOUT):
            received.append(response)

    error = await harness.expect_error(consume)
    assert [r.status for r in received] == [pb.CopyResponse.METADATA]
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "copy: path vanished"


async def test_stream_large_messages_respect_flow_control(harness: Harness) -> None:
    def consume() -> list[int]:
        call = harness.stub.Copy(pb.CopyRequest(path="large"), timeout=CALL_TIMEOUT)
        return [len(r.error) for r in call]

    assert await harness.run(consume) == [0, 3 * MiB, 3 * MiB, 3 * MiB, 3 * MiB, 0]


# -- cancellation ----------------------------------------------------------------------


async def test_client_cancel_of_a_stream_blocked_on_flow_control(harness: Harness) -> None:
    responses = harness.stub.Copy(pb.CopyRequest(path="endless"), timeout=CALL_TIMEOUT)
    first = await harness.run(lambda: next(responses))
    assert first.status == pb.CopyResponse.METADATA
    # The client now reads nothing more: the handler fills the windows and waits.
    await trio.testing.wait_all_tasks_blocked()
    assert not harness.servicer.cancelled.is_set()
    await harness.run(responses.cancel)
    with trio.fail_after(CALL_TIMEOUT):
        await harness.servicer.cancelled.wait()
    assert await harness.getenv("after") == "value-of-after"
    assert harness.accepted == 1


async def test_client_deadline_cancels_handler(harness: Harness) -> None:
    # connect first: the short deadline must not also cover the connection and handshake
    assert await harness.getenv("warm") == "value-of-warm"
    error = await harness.expect_error(
        lambda: harness.stub.Getenv(pb.GetenvRequest(key="forever"), timeout=0.3)
    )
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with trio.fail_after(CALL_TIMEOUT):
        await harness.servicer.cancelled.wait()
    assert await harness.getenv("after") == "value-of-after"
    assert harness.accepted == 1


async def test_client_cancel_cancels_handler(harness: Harness) -> None:
    future = harness.stub.Getenv.future(pb.GetenvRequest(key="forever"), timeout=CALL_TIMEOUT)
    with trio.fail_after(CALL_TIMEOUT):
        await harness.servicer.started.wait()
        assert not harness.servicer.cancelled.is_set()
        await harness.run(future.cancel)
        await harness.servicer.cancelled.wait()
    assert await harness.getenv("after") == "value-of-after"
    assert harness.accepted == 1


async def test_connection_close_cancels_handlers(harness: Harness) -> None:
    future = harness.stub.Getenv.future(pb.GetenvRequest(key="forever"), timeout=CALL_TIMEOUT)
    with trio.fail_after(CALL_TIMEOUT):
        await harness.servicer.started.wait()
        await harness.run(harness.channel.close)
        await harness.servicer.cancelled.wait()
    assert future.code() == grpc.StatusCode.CANCELLED


async def test_debug_line_per_rpc(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trinit.rpc")
    await harness.getenv("x")
    await harness.getenv_error("notfound")
    lines = [r.getMessage() for r in caplog.records if r.name == "trinit.rpc"]
    assert len(lines) == 2
    assert lines[0].startswith(f"/{SERVICE}/Getenv OK ") and lines[0].endswith(" ms")
    assert lines[1].startswith(f"/{SERVICE}/Getenv NOT_FOUND ")


# -- server-side deadline, exactly, under MockClock ------------------------------------


class RawClient:
    """Just enough of an HTTP/2 gRPC client to send one unary request and read the reply."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()

    async def call(self, method: str, payload: bytes, grpc_timeout: str) -> dict[bytes, bytes]:
        stream_id = await self.start(method, payload, grpc_timeout)
        fields: dict[bytes, bytes] = {}
        while True:
            data = await self.stream.receive_some(65536)
            assert data, "server closed the connection"
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    fields.update(dict(event.headers))
                if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    return fields
            await self.stream.send_all(self.h2.data_to_send())

    async def start(self, method: str, payload: bytes, grpc_timeout: str) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", f"/{SERVICE}/{method}"),
            (":authority", "localhost"),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
            ("grpc-timeout", grpc_timeout),
        ]
        self.h2.send_headers(stream_id, headers)
        framed = b"\x00" + len(payload).to_bytes(4, "big") + payload
        self.h2.send_data(stream_id, framed, end_stream=True)
        await self.stream.send_all(self.h2.data_to_send())
        return int(stream_id)


async def test_server_sends_deadline_exceeded_at_the_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = str(tmp_path / "api.sock")
    servicer = Servicer()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, await _listen_unix(path), servicer))
        async with await trio.open_unix_socket(path) as stream:
            client = RawClient(stream)
            start = trio.current_time()
            payload = pb.GetenvRequest(key="forever").SerializeToString()
            fields = await client.call("Getenv", payload, grpc_timeout="2500m")
            assert trio.current_time() - start == pytest.approx(2.5)
        assert servicer.cancelled.is_set()
        assert fields[b"grpc-status"] == b"%d" % Code.DEADLINE_EXCEEDED
        assert fields[b"grpc-message"] == b"deadline exceeded"
        nursery.cancel_scope.cancel()


async def test_socket_close_without_reset_cancels_handlers(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    servicer = Servicer()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, await _listen_unix(path), servicer))
        with trio.fail_after(CALL_TIMEOUT):
            stream = await trio.open_unix_socket(path)
            payload = pb.GetenvRequest(key="forever").SerializeToString()
            await RawClient(stream).start("Getenv", payload, grpc_timeout="100S")
            await servicer.started.wait()
            await stream.aclose()  # no RST_STREAM, no GOAWAY: the connection just ends
            await servicer.cancelled.wait()
        nursery.cancel_scope.cancel()


async def test_no_fd_left_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    before = set(os.listdir("/proc/self/fd"))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, await _listen_unix(path), Servicer()))
        for _ in range(3):
            async with await trio.open_unix_socket(path) as stream:
                payload = pb.GetenvRequest(key="k").SerializeToString()
                with trio.fail_after(CALL_TIMEOUT):
                    fields = await RawClient(stream).call("Getenv", payload, grpc_timeout="10S")
                assert fields[b"grpc-status"] == b"0"
        nursery.cancel_scope.cancel()
    assert set(os.listdir("/proc/self/fd")) == before


# -- pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"5S", 5.0),
        (b"2500m", 2.5),
        (b"1H", 3600.0),
        (b"3M", 180.0),
        (b"7u", 7e-6),
        (b"99999999n", 0.099999999),
    ],
)
def test_parse_grpc_timeout(value: bytes, seconds: float) -> None:
    assert _wire.parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"5", b"5s", b"123456789S", b"-1S", b"1.5S"])
def test_parse_grpc_timeout_rejects(value: bytes) -> None:
    with pytest.raises(ValueError):
        _wire.parse_grpc_timeout(value)


def test_grpc_message_encoding() -> None:
    assert _wire.encode_grpc_message("plain text: ok") == b"plain text: ok"
    assert _wire.encode_grpc_message("100% caf\u00e9\nsecond line") == b"100%25 caf%C3%A9"
    assert len(_wire.encode_grpc_message("x" * 5000)) == 1024


def _framed(payload: bytes) -> bytes:
    return _wire.frame_message(payload)


def test_request_reader_whole_and_split() -> None:
    whole = _wire.UnaryRequestReader(100)
    whole.feed(_framed(b"hello"))
    assert whole.finish() == b"hello"
    split = _wire.UnaryRequestReader(100)
    data = _framed(b"hello")
    for index in range(len(data)):
        split.feed(data[index : index + 1])
    assert split.finish() == b"hello"
    empty = _wire.UnaryRequestReader(100)
    empty.feed(_framed(b""))
    assert empty.finish() == b""


def test_request_reader_errors() -> None:
    with pytest.raises(_wire.MessageTooLarge, match="of 101 bytes exceeds the limit of 100"):
        _wire.UnaryRequestReader(100).feed(b"\x00\x00\x00\x00\x65")
    with pytest.raises(_wire.ProtocolViolation, match="compressed"):
        _wire.UnaryRequestReader(100).feed(b"\x01\x00\x00\x00\x01x")
    two = _wire.UnaryRequestReader(100)
    two.feed(_framed(b"a"))
    with pytest.raises(_wire.ProtocolViolation, match="more than one"):
        two.feed(_framed(b"b"))
    partial_message = _wire.UnaryRequestReader(100)
    partial_message.feed(_framed(b"abc")[:-1])
    with pytest.raises(_wire.ProtocolViolation, match="ended before"):
        partial_message.finish()
    with pytest.raises(_wire.ProtocolViolation, match="ended before"):
        _wire.UnaryRequestReader(100).finish()


def test_response_header_blocks_round_trip_through_hpack() -> None:
    decoder = hpack.Decoder()
    blocks = [
        [(b":status", b"200"), (b"content-type", b"application/grpc")],
        [(b"grpc-status", b"0")],
        [(b"grpc-status", b"13"), (b"grpc-message", b"x" * 300)],
        [(b":status", b"200"), (b"content-type", b"application/grpc")],
    ]
    for block in blocks:
        assert decoder.decode(encode_fields(block), raw=True) == block
    # what follows a peer's SETTINGS_HEADER_TABLE_SIZE change: a size update to 0 first
    assert (
        decoder.decode(TABLE_SIZE_UPDATE_TO_ZERO + encode_fields(blocks[1]), raw=True)
        == (blocks[1])
    )
    assert decoder.header_table_size == 0
    assert decoder.decode(encode_fields(blocks[0]), raw=True) == blocks[0]


def test_status_of() -> None:
    from purerpc.grpclib.exceptions import UnimplementedError

    assert _wire.status_of(NotFound("gone")) == (Code.NOT_FOUND, "gone")
    assert _wire.status_of(UnimplementedError("nope")) == (Code.UNIMPLEMENTED, "nope")
    assert _wire.status_of(OSError(2, "No such file")) == (
        Code.INTERNAL,
        "FileNotFoundError: [Errno 2] No such file",
    )
    group = ExceptionGroup("g", [ExceptionGroup("h", [NotFound("deep")])])
    assert _wire.status_of(group) == (Code.NOT_FOUND, "deep")
    two = ExceptionGroup("g", [NotFound("a"), NotFound("b")])
    assert _wire.status_of(two)[0] == Code.INTERNAL


async def test_window_update_for_a_finished_stream_is_ignored(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, await _listen_unix(path), Servicer()))
        async with await trio.open_unix_socket(path) as stream:
            client = RawClient(stream)
            payload = pb.GetenvRequest(key="k").SerializeToString()
            with trio.fail_after(CALL_TIMEOUT):
                first = await client.call("Getenv", payload, grpc_timeout="10S")
                assert first[b"grpc-status"] == b"0"
                # A second stream makes h2 clean up stream 1; then a late WINDOW_UPDATE
                # for stream 1 arrives (length 4, type 8, stream 1, increment 1000).
                second = await client.start("Getenv", payload, grpc_timeout="10S")
                await stream.send_all(bytes.fromhex("000004 08 00 00000001 000003e8"))
                fields: dict[bytes, bytes] = {}
                while b"grpc-status" not in fields:
                    data = await stream.receive_some(65536)
                    assert data, "the server closed the connection"
                    for event in client.h2.receive_data(data):
                        if isinstance(event, h2.events.TrailersReceived):
                            assert event.stream_id == second
                            fields.update(dict(event.headers))
                assert fields[b"grpc-status"] == b"0"
                third = await client.call("Getenv", payload, grpc_timeout="10S")
                assert third[b"grpc-status"] == b"0"
        nursery.cancel_scope.cancel()
