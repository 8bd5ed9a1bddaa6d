"""trinit.rpc._http2: the server's own HTTP/2 connection, against real clients.

The first part drives :class:`ServerConnection` without I/O against h2's client
(``h2.connection.H2Connection``, which validates what we send) and checks that both sides
agree on every stream's state and on the flow-control windows after many sequential and
concurrent calls, window updates and settings changes mid-stream. The second part runs the
real server loop (``serve``) against grpcio's and purerpc's clients. No assertion depends
on timing.
"""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import h2.config  # type: ignore[import-untyped, unused-ignore]
import h2.connection  # type: ignore[import-untyped, unused-ignore]
import h2.events  # type: ignore[import-untyped, unused-ignore]
import h2.settings  # type: ignore[import-untyped, unused-ignore]
import hpack  # type: ignore[import-untyped, unused-ignore]
import purerpc
import pytest
import trio
import trio.testing
from purerpc.rpc import Cardinality, RPCSignature
from test_rpc_adapter import CALL_TIMEOUT, SERVICE, Harness, Servicer
from test_rpc_adapter import harness as harness  # the fixture

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Code
from trinit.rpc import _http2, _wire, serve
from trinit.rpc._hpack import OK_TRAILER_BLOCK

MiB = 1024 * 1024
SETTINGS_CODES = h2.settings.SettingCodes
REQUEST_HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", f"/{SERVICE}/Getenv".encode()),
    (b":authority", b"localhost"),
    (b"te", b"trailers"),
    (b"content-type", b"application/grpc"),
    (b"grpc-timeout", b"10S"),
]


# -- without I/O, against h2's client --------------------------------------------------


class Recorder:
    """A Handler that records what the connection reports."""

    def __init__(self) -> None:
        self.requests: dict[int, dict[bytes, bytes]] = {}
        self.data: dict[int, bytes] = {}
        self.ended: list[int] = []
        self.resets: list[int] = []
        self.windows = 0

    def on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.requests[stream_id] = dict(headers)

    def on_data(self, stream_id: int, data: bytes) -> None:
        self.data[stream_id] = self.data.get(stream_id, b"") + data

    def on_end(self, stream_id: int) -> None:
        self.ended.append(stream_id)

    def on_reset(self, stream_id: int) -> None:
        self.resets.append(stream_id)

    def on_window(self) -> None:
        self.windows += 1


def make_server(**options: int) -> tuple[_http2.ServerConnection, Recorder]:
    recorder = Recorder()
    settings = {
        "max_concurrent_streams": 256,
        "stream_window": 4 * MiB,
        "connection_window": 16 * MiB,
        "max_frame_size": 64 * 1024,
        "max_header_list_size": 64 * 1024,
    }
    settings.update(options)
    server = _http2.ServerConnection(recorder, **settings)
    server.initiate()
    return server, recorder


class Pair:
    """Our server and h2's client, connected by hand."""

    def __init__(
        self,
        client_settings: dict[int, int] | None = None,
        *,
        handshake: bool = True,
        **options: int,
    ) -> None:
        self.server, self.recorder = make_server(**options)
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if client_settings:
            self.client.local_settings = h2.settings.Settings(
                client=True, initial_values=client_settings
            )
        self.client.initiate_connection()
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.body: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        if handshake:
            self.exchange()

    def to_server(self) -> None:
        data = self.client.data_to_send()
        if data:
            assert not self.server.receive(data, 10**6)

    def to_client(self) -> None:
        for event in self.client.receive_data(self.server.data_to_send()):
            sid = getattr(event, "stream_id", 0)
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                self.headers.setdefault(sid, {}).update(dict(event.headers))
            elif isinstance(event, h2.events.DataReceived):
                self.body[sid] = self.body.get(sid, b"") + event.data
                # The client reads at once and gives the window back (WINDOW_UPDATEs).
                self.client.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(sid)
            elif isinstance(event, h2.events.StreamReset):
                self.resets[sid] = event.error_code

    def exchange(self) -> None:
        for _ in range(3):
            self.to_server()
            self.to_client()

    def request(self, payload: bytes = b"req", *, end: bool = True) -> int:
        sid: int = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, REQUEST_HEADERS)
        self.client.send_data(sid, _wire.frame_message(payload), end_stream=end)
        return sid

    def assert_windows_agree(self) -> None:
        """The server's send windows are exactly what the client believes it may receive."""
        client = self.client
        assert (
            self.server.connection_send_window
            == client._inbound_flow_control_window_manager.current_window_size
        )
        for sid in self.server.streams:
            stream = client.streams[sid]
            if not stream.closed:
                assert (
                    self.server.send_window(sid)
                    == min(
                        stream._inbound_window_manager.current_window_size,
                        self.server.connection_send_window,
                    )
                    or self.server.streams[sid].local_closed
                )


def respond(server: _http2.ServerConnection, sid: int, message: bytes, *, general: bool) -> None:
    """Answer a unary call: the one-piece path, or headers, DATA as windows allow, trailers."""
    framed = _wire.frame_message(message)
    if not general and server.send_unary(sid, framed, OK_TRAILER_BLOCK):
        return
    server.send_headers(sid)
    server.send_data(sid, framed)
    server.send_trailers(sid, _wire.trailers(Code.OK, ""))


def test_many_sequential_calls_keep_both_sides_in_step() -> None:
    pair = Pair()
    for index in range(1000):
        sid = pair.request(b"k%d" % index)
        pair.to_server()
        assert pair.recorder.requests[sid][b":path"] == REQUEST_HEADERS[2][1]
        assert pair.recorder.data[sid] == _wire.frame_message(b"k%d" % index)
        assert pair.recorder.ended[-1] == sid
        respond(pair.server, sid, b"v%d" % index, general=index % 3 == 0)
        pair.to_client()
        pair.to_server()  # the client's WINDOW_UPDATEs
        assert sid in pair.ended
        assert pair.headers[sid][b":status"] == b"200"
        assert pair.headers[sid][b"grpc-status"] == b"0"
        assert pair.body[sid] == _wire.frame_message(b"v%d" % index)
        assert pair.server.streams == {}
        assert pair.client.open_outbound_streams == 0
        pair.assert_windows_agree()
    assert pair.recorder.resets == []


def test_concurrent_streams_answered_in_any_order() -> None:
    pair = Pair()
    sids = [pair.request(b"c%d" % index) for index in range(200)]
    pair.to_server()
    assert sorted(pair.recorder.ended) == sids
    assert len(pair.server.streams) == 200
    order = sids[:]
    random.Random(7).shuffle(order)
    for position, sid in enumerate(order):
        if position % 5 == 0:
            pair.server.send_trailers(sid, _wire.trailers_only(Code.NOT_FOUND, f"gone {sid}"))
        else:
            respond(pair.server, sid, b"r%d" % sid, general=position % 2 == 0)
        if position % 7 == 0:
            pair.to_client()
            pair.to_server()
            pair.assert_windows_agree()
    pair.exchange()
    assert pair.ended == set(sids)
    for position, sid in enumerate(order):
        if position % 5 == 0:
            assert pair.headers[sid][b"grpc-status"] == b"%d" % Code.NOT_FOUND
            assert pair.headers[sid][b"grpc-message"] == f"gone {sid}".encode()
            assert sid not in pair.body
        else:
            assert pair.body[sid] == _wire.frame_message(b"r%d" % sid)
    assert pair.server.streams == {}
    assert pair.client.open_outbound_streams == 0
    pair.assert_windows_agree()


def _send_as_windows_allow(pair: Pair, sid: int, data: bytes, *, settings_at: int) -> None:
    """Send a large message as flow control allows; the client changes SETTINGS mid-way."""
    server = pair.server
    server.send_headers(sid)
    offset = 0
    changed = False
    while offset < len(data):
        room = min(server.send_window(sid), server.max_outbound_frame_size)
        if room <= 0:
            windows = pair.recorder.windows
            pair.to_client()  # reads and acknowledges: WINDOW_UPDATEs
            pair.to_server()
            assert pair.recorder.windows > windows
            pair.assert_windows_agree()
            continue
        chunk = data[offset : offset + room]
        server.send_data(sid, chunk)
        offset += len(chunk)
        if not changed and offset >= settings_at:
            changed = True
            pair.to_client()
            pair.client.update_settings(
                {SETTINGS_CODES.INITIAL_WINDOW_SIZE: 30000, SETTINGS_CODES.MAX_FRAME_SIZE: 20000}
            )
            pair.exchange()
            assert server.max_outbound_frame_size == 20000
            pair.assert_windows_agree()
    server.send_trailers(sid, _wire.trailers(Code.OK, ""))
    pair.exchange()


def test_a_large_response_is_sent_as_flow_control_allows() -> None:
    pair = Pair({SETTINGS_CODES.INITIAL_WINDOW_SIZE: 1000})
    sid = pair.request()
    pair.to_server()
    message = _wire.frame_message(bytes(random.Random(1).randbytes(300_000)))
    assert not pair.server.send_unary(sid, message, OK_TRAILER_BLOCK)  # too big for one piece
    _send_as_windows_allow(pair, sid, message, settings_at=50_000)
    assert pair.body[sid] == message
    assert pair.headers[sid][b"grpc-status"] == b"0"
    assert pair.server.streams == {}
    pair.assert_windows_agree()
    # The connection goes on: a small call takes the one-piece path again.
    sid = pair.request()
    pair.to_server()
    assert pair.server.send_unary(sid, _wire.frame_message(b"ok"), OK_TRAILER_BLOCK)
    pair.exchange()
    assert pair.body[sid] == _wire.frame_message(b"ok")


def test_settings_shrinking_the_window_mid_stream() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.server.send_headers(sid)
    for _ in range(4):
        pair.server.send_data(sid, b"x" * 15000)
    pair.client.update_settings({SETTINGS_CODES.INITIAL_WINDOW_SIZE: 1000})
    pair.to_server()
    assert pair.server.send_window(sid) == 1000 - 60000  # negative: nothing may be sent
    pair.to_client()  # the client reads 60000 bytes and gives them back
    pair.to_server()
    assert pair.server.send_window(sid) == 1000
    pair.assert_windows_agree()


def test_header_table_size_change_is_announced() -> None:
    pair = Pair()
    pair.client.update_settings({SETTINGS_CODES.HEADER_TABLE_SIZE: 256})
    pair.exchange()
    sid = pair.request()
    pair.to_server()
    assert not pair.server.send_unary(sid, _wire.frame_message(b"v"), OK_TRAILER_BLOCK)
    pair.server.send_headers(sid)
    output = pair.server.data_to_send()
    assert output[9] == 0x20  # the block starts with a dynamic table size update to 0
    pair.client.receive_data(output)
    pair.server.send_data(sid, _wire.frame_message(b"v"))
    pair.server.send_trailers(sid, _wire.trailers(Code.OK, ""))
    pair.exchange()
    assert pair.headers[sid][b"grpc-status"] == b"0"
    assert pair.client.decoder.header_table_size == 0


def test_request_bodies_get_their_windows_back() -> None:
    pair = Pair()
    total = 0
    for _ in range(6):  # 24 MiB: more than the connection's 16 MiB window
        sid = pair.client.get_next_available_stream_id()
        pair.client.send_headers(sid, REQUEST_HEADERS)
        body = b"b" * (4 * MiB - 5)
        offset = 0
        while offset < len(body):
            room = min(
                pair.client.local_flow_control_window(sid), pair.client.max_outbound_frame_size
            )
            assert room > 0, "the server did not give the window back"
            chunk = body[offset : offset + room]
            offset += len(chunk)
            pair.client.send_data(sid, chunk, end_stream=offset == len(body))
            pair.exchange()
        total += len(pair.recorder.data.pop(sid))
        respond(pair.server, sid, b"", general=False)
    assert total == 6 * (4 * MiB - 5)


def _preface(server: _http2.ServerConnection) -> None:
    server.receive(_http2.CLIENT_MAGIC + _http2.frame_header(0, _http2.SETTINGS, 0, 0), 100)
    server.data_to_send()


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return _http2.frame_header(len(payload), kind, flags, sid) + payload


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while data:
        length = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big"), data[9 : 9 + length]))
        data = data[9 + length :]
    return out


def test_input_split_anywhere_gives_the_same_result() -> None:
    block = hpack.Encoder().encode(REQUEST_HEADERS)
    stream = (
        _http2.CLIENT_MAGIC
        + frame(_http2.SETTINGS, 0, 0, b"")
        + frame(_http2.HEADERS, _http2.END_HEADERS, 1, block)
        + frame(_http2.DATA, 0, 1, b"abc")
        + frame(_http2.DATA, _http2.END_STREAM, 1, b"def")
        + frame(_http2.PING, 0, 0, b"12345678")
    )
    for cut in range(1, len(stream)):
        server, recorder = make_server()
        for part in (stream[:cut], stream[cut:]):
            assert not server.receive(part, 100)
        assert server.preface_done
        assert recorder.data == {1: b"abcdef"} and recorder.ended == [1]
        assert recorder.requests[1][b":path"] == REQUEST_HEADERS[2][1]


def test_continuation_padding_and_priority() -> None:
    server, recorder = make_server()
    _preface(server)
    block = hpack.Encoder().encode(REQUEST_HEADERS)
    pad = 3
    headers = bytes((pad,)) + b"\x00\x00\x00\x00\x10" + block[:10] + b"\x00" * pad
    server.receive(
        frame(_http2.HEADERS, _http2.PADDED | _http2.PRIORITY_FLAG, 1, headers)
        + frame(_http2.CONTINUATION, 0, 1, block[10:20])
        + frame(_http2.CONTINUATION, _http2.END_HEADERS, 1, block[20:])
        + frame(_http2.PRIORITY, 0, 3, b"\x00\x00\x00\x01\x10")
        + frame(_http2.DATA, _http2.PADDED | _http2.END_STREAM, 1, b"\x02hi\x00\x00"),
        100,
    )
    assert recorder.requests[1] == dict(REQUEST_HEADERS)
    assert recorder.data == {1: b"hi"}
    assert recorder.ended == [1]


def test_frames_are_processed_in_bounded_batches() -> None:
    server, _ = make_server()
    _preface(server)
    pings = frame(_http2.PING, 0, 0, b"12345678") * 10
    assert server.receive(pings, 4)
    assert len(_frames(server.data_to_send())) == 4
    assert server.receive(b"", 4)
    assert not server.receive(b"", 4)
    assert len(_frames(server.data_to_send())) == 6


def test_an_oversized_frame_is_refused_from_its_header() -> None:
    server, _ = make_server(max_frame_size=100)
    _preface(server)
    assert not server.receive(_http2.frame_header(100, _http2.DATA, 0, 1)[:0], 100)
    header = _http2.frame_header(101, _http2.DATA, 0, 1)
    assert not server.receive(header[:2], 100)  # not known yet
    with pytest.raises(_http2.ConnectionFailed) as info:
        server.receive(header[2:] + b"x", 100)
    assert info.value.error_code == _http2.FRAME_SIZE_ERROR
    (goaway,) = _frames(server.data_to_send())
    assert goaway[0] == _http2.GOAWAY
    assert int.from_bytes(goaway[3][4:8], "big") == _http2.FRAME_SIZE_ERROR


_REQUEST_BLOCK = hpack.Encoder().encode(REQUEST_HEADERS)


@pytest.mark.parametrize(
    ("data", "error_code"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", _http2.PROTOCOL_ERROR),
        (_http2.CLIENT_MAGIC + frame(_http2.PING, 0, 0, b"12345678"), _http2.PROTOCOL_ERROR),
        (frame(_http2.DATA, 0, 5, b"x"), _http2.PROTOCOL_ERROR),  # idle stream
        (frame(_http2.HEADERS, _http2.END_HEADERS, 2, _REQUEST_BLOCK), _http2.PROTOCOL_ERROR),
        (frame(_http2.PUSH_PROMISE, 0, 1, b"\x00\x00\x00\x02"), _http2.PROTOCOL_ERROR),
        (frame(_http2.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"), _http2.PROTOCOL_ERROR),
        (frame(_http2.WINDOW_UPDATE, 0, 0, b"\x7f\xff\xff\xff"), _http2.FLOW_CONTROL_ERROR),
        (frame(_http2.SETTINGS, 0, 0, b"\x00\x05\x00\x00\x00\x10"), _http2.PROTOCOL_ERROR),
        (frame(_http2.SETTINGS, 0, 0, b"\x00\x04\x80\x00\x00\x00"), _http2.FLOW_CONTROL_ERROR),
        (frame(_http2.SETTINGS, 0, 0, b"\x00\x04"), _http2.FRAME_SIZE_ERROR),
        (frame(_http2.HEADERS, _http2.END_HEADERS, 1, b"\xff\xff\xff"), _http2.COMPRESSION_ERROR),
        (frame(_http2.CONTINUATION, _http2.END_HEADERS, 1, b""), _http2.PROTOCOL_ERROR),
        (frame(_http2.RST_STREAM, 0, 9, b"\x00\x00\x00\x08"), _http2.PROTOCOL_ERROR),
        (frame(_http2.PING, 0, 0, b"1234"), _http2.FRAME_SIZE_ERROR),
        (
            frame(_http2.HEADERS, 0, 1, _REQUEST_BLOCK) + frame(_http2.PING, 0, 0, b"12345678"),
            _http2.PROTOCOL_ERROR,  # a header block interrupted
        ),
    ],
)
def test_connection_errors_send_goaway(data: bytes, error_code: int) -> None:
    server, _ = make_server()
    if data.startswith(b"GET") or data.startswith(_http2.CLIENT_MAGIC):
        server.data_to_send()
    else:
        _preface(server)
    with pytest.raises(_http2.ConnectionFailed) as info:
        server.receive(data, 100)
    assert info.value.error_code == error_code
    kind, _, _, payload = _frames(server.data_to_send())[-1]
    assert kind == _http2.GOAWAY
    assert int.from_bytes(payload[4:8], "big") == error_code


def test_flow_control_violations() -> None:
    server, recorder = make_server(connection_window=65535, stream_window=100)
    _preface(server)
    server.receive(frame(_http2.HEADERS, _http2.END_HEADERS, 1, _REQUEST_BLOCK), 100)
    server.receive(frame(_http2.DATA, 0, 1, b"x" * 101), 100)  # over the stream's window
    assert recorder.resets == [1]
    ((kind, _, sid, payload),) = _frames(server.data_to_send())
    assert (kind, sid, int.from_bytes(payload, "big")) == (
        _http2.RST_STREAM,
        1,
        _http2.FLOW_CONTROL_ERROR,
    )
    # Late DATA on the reset stream: RST_STREAM(STREAM_CLOSED), but the connection's window
    # is still consumed, and given back once half of it is used.
    server.receive(frame(_http2.DATA, 0, 1, b"y" * 40000), 100)
    kinds = [(kind, sid) for kind, _, sid, _ in _frames(server.data_to_send())]
    assert kinds == [(_http2.WINDOW_UPDATE, 0), (_http2.RST_STREAM, 1)]
    # Over the connection's window (here 65535 and nothing given back yet): a connection error.
    small, _ = make_server(connection_window=65535, stream_window=4 * MiB)
    _preface(small)
    small.receive(frame(_http2.HEADERS, _http2.END_HEADERS, 1, _REQUEST_BLOCK), 100)
    with pytest.raises(_http2.ConnectionFailed) as info:
        small.receive(frame(_http2.DATA, 0, 1, b"z" * 65536), 100)
    assert info.value.error_code == _http2.FLOW_CONTROL_ERROR


def test_frames_for_closed_streams() -> None:
    server, recorder = make_server()
    _preface(server)
    server.receive(
        frame(_http2.HEADERS, _http2.END_HEADERS | _http2.END_STREAM, 1, _REQUEST_BLOCK), 100
    )
    assert server.send_unary(1, _wire.frame_message(b"v"), OK_TRAILER_BLOCK)
    server.data_to_send()
    # A late WINDOW_UPDATE, RST_STREAM and PRIORITY are ignored; late DATA is a stream error.
    server.receive(
        frame(_http2.WINDOW_UPDATE, 0, 1, b"\x00\x00\x03\xe8")
        + frame(_http2.RST_STREAM, 0, 1, b"\x00\x00\x00\x08")
        + frame(_http2.PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10"),
        100,
    )
    assert server.data_to_send() == b""
    server.receive(frame(_http2.DATA, 0, 1, b"late"), 100)
    ((kind, _, sid, payload),) = _frames(server.data_to_send())
    assert (kind, sid, int.from_bytes(payload, "big")) == (
        _http2.RST_STREAM,
        1,
        _http2.STREAM_CLOSED,
    )
    with pytest.raises(_http2.StreamClosed):
        server.send_headers(1)
    # A zero increment on an open stream resets that stream only.
    server.receive(frame(_http2.HEADERS, _http2.END_HEADERS, 3, _REQUEST_BLOCK), 100)
    server.receive(frame(_http2.WINDOW_UPDATE, 0, 3, b"\x00\x00\x00\x00"), 100)
    assert recorder.resets == [3]
    assert server.streams == {}


def test_streams_over_the_limit_are_refused_and_hpack_stays_in_step() -> None:
    # The client opens its streams before it has seen our SETTINGS (as a peer that
    # ignores the advertised limit would).
    pair = Pair(handshake=False, max_concurrent_streams=2)
    sids = [pair.request(b"%d" % index, end=False) for index in range(3)]
    pair.exchange()
    assert pair.resets == {sids[2]: _http2.REFUSED_STREAM}
    assert sorted(pair.recorder.requests) == sids[:2]
    for sid in sids[:2]:
        pair.client.end_stream(sid)
    pair.to_server()
    respond(pair.server, sids[0], b"a", general=False)
    pair.to_client()
    sid = pair.request(b"next")
    pair.exchange()
    assert pair.recorder.requests[sid] == dict(REQUEST_HEADERS)
    assert sid not in pair.resets


def test_pings_are_answered() -> None:
    server, _ = make_server()
    _preface(server)
    server.receive(frame(_http2.PING, 0, 0, b"abcdefgh") + frame(_http2.PING, 1, 0, b"ack!ack!"), 9)
    assert _frames(server.data_to_send()) == [(_http2.PING, _http2.ACK, 0, b"abcdefgh")]


# -- real clients through the server loop ------------------------------------------------


async def test_grpcio_mixed_calls_on_one_connection(harness: Harness) -> None:
    """Sequential and concurrent calls with deadlines, large responses limited by flow
    control, errors and expired deadlines, all on one connection."""

    def call(key: str, timeout: float = CALL_TIMEOUT) -> tuple[Any, str]:
        try:
            reply = harness.stub.Getenv(pb.GetenvRequest(key=key), timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, reply.value

    def worker(index: int) -> list[tuple[str, tuple[Any, str]]]:
        results = []
        for step in range(60):
            key = [f"k{index}-{step}", "notfound", "boom", f"big:{300_000 + step}"][step % 4]
            results.append((key, call(key)))
        return results

    for step in range(300):
        assert await harness.run(partial(call, f"seq{step}")) == (
            grpc.StatusCode.OK,
            f"value-of-seq{step}",
        )
    results: list[list[tuple[str, tuple[Any, str]]]] = [[] for _ in range(8)]

    async def run_worker(index: int) -> None:
        results[index] = await harness.run(partial(worker, index))

    async with trio.open_nursery() as nursery:
        for index in range(8):
            nursery.start_soon(run_worker, index)
    for key, (code, text) in (item for part in results for item in part):
        if key == "notfound":
            assert (code, text) == (grpc.StatusCode.NOT_FOUND, "no such thing")
        elif key == "boom":
            assert (code, text) == (grpc.StatusCode.INTERNAL, "ValueError: boom")
        elif key.startswith("big:"):
            assert (code, text) == (grpc.StatusCode.OK, "x" * int(key[4:]))
        else:
            assert (code, text) == (grpc.StatusCode.OK, f"value-of-{key}")
    # An expired deadline fails that call only.
    code, _ = await harness.run(partial(call, "forever", 0.2))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    with trio.fail_after(CALL_TIMEOUT):
        await harness.servicer.cancelled.wait()
    assert await harness.getenv("after") == "value-of-after"
    assert harness.accepted == 1


@pytest.fixture
async def tcp_port(nursery: trio.Nursery) -> AsyncIterator[tuple[int, Servicer]]:
    # purerpc's client only speaks TCP; serve() takes any listener.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    servicer = Servicer()
    await nursery.start(partial(serve, listeners[0], servicer))
    yield listeners[0].socket.getsockname()[1], servicer


def _stub(client: purerpc.Client, name: str, request: Any, response: Any, kind: Any) -> Any:
    return client.get_method_stub(name, RPCSignature(kind, request, response))


async def test_purerpc_client(tcp_port: tuple[int, Servicer], tmp_path: Path) -> None:
    port, _ = tcp_port
    # (purerpc refuses to send grpc-timeout; grpcio covers deadlines)
    with trio.fail_after(60):
        async with purerpc.insecure_channel("127.0.0.1", port) as channel:
            client = purerpc.Client(SERVICE, channel)
            getenv = _stub(
                client, "Getenv", pb.GetenvRequest, pb.GetenvResponse, Cardinality.UNARY_UNARY
            )
            copy = _stub(client, "Copy", pb.CopyRequest, pb.CopyResponse, Cardinality.UNARY_STREAM)
            for step in range(200):
                reply = await getenv(pb.GetenvRequest(key=f"p{step}"))
                assert reply.value == f"value-of-p{step}"
            replies: dict[int, str] = {}

            async def one(index: int) -> None:
                key = f"big:{MiB + index}" if index % 5 == 0 else f"c{index}"
                reply = await getenv(pb.GetenvRequest(key=key))
                replies[index] = reply.value

            async with trio.open_nursery() as nursery:
                for index in range(40):
                    nursery.start_soon(one, index)
            for index, value in replies.items():
                expected = "x" * (MiB + index) if index % 5 == 0 else f"value-of-c{index}"
                assert value == expected
            assert len(replies) == 40
            with pytest.raises(purerpc.NotFoundError, match="no such thing"):
                await getenv(pb.GetenvRequest(key="notfound"))
            sizes = [len(message.error) async for message in copy(pb.CopyRequest(path="large"))]
            assert sizes == [0, *(3 * MiB for _ in range(4)), 0]
            reply = await getenv(pb.GetenvRequest(key="last"))
            assert reply.value == "value-of-last"


async def test_raw_socket_settings_and_window_updates_mid_stream(tmp_path: Path) -> None:
    """An h2 client over a real socket changes SETTINGS and sends WINDOW_UPDATEs while a
    3 MiB response is flowing, with small calls in between."""
    path = str(tmp_path / "api.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(8)
    size = 3 * MiB
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, trio.SocketListener(sock), Servicer()))
        stream = await trio.open_unix_socket(path)
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        client.local_settings = h2.settings.Settings(
            client=True, initial_values={SETTINGS_CODES.INITIAL_WINDOW_SIZE: 4096}
        )
        client.initiate_connection()

        def start(key: str) -> int:
            sid: int = client.get_next_available_stream_id()
            client.send_headers(sid, REQUEST_HEADERS)
            request = pb.GetenvRequest(key=key).SerializeToString()
            client.send_data(sid, _wire.frame_message(request), end_stream=True)
            return sid

        big = start(f"big:{size}")
        bodies: dict[int, int] = {}
        status: dict[int, bytes] = {}
        small: list[int] = []
        frames = 0
        with trio.fail_after(60):
            while big not in status or not all(sid in status for sid in small):
                await stream.send_all(client.data_to_send())
                data = await stream.receive_some(65536)
                assert data, "the server closed the connection"
                for event in client.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        frames += 1
                        bodies[event.stream_id] = bodies.get(event.stream_id, 0) + len(event.data)
                        client.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.TrailersReceived):
                        status[event.stream_id] = dict(event.headers)[b"grpc-status"]
                if frames == 3:
                    client.update_settings(
                        # (not MAX_FRAME_SIZE: h2's client applies it only to its next read)
                        {SETTINGS_CODES.INITIAL_WINDOW_SIZE: 100_000}
                    )
                if big not in status and len(small) < 20:
                    small.append(start("s"))
        assert status[big] == b"0"
        # the message: 5-byte prefix, protobuf tag and length, the value
        assert bodies[big] == len(pb.GetenvResponse(value="x" * size).SerializeToString()) + 5
        assert small and {status[sid] for sid in small} == {b"0"}
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_finished_connection_is_freed_without_the_garbage_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection's HTTP/2 state and its owner refer to each other; the cycle is broken
    when the connection ends, so what it held (up to 16 MiB of partial requests) goes at
    once (found by bench/h2_abuse.py: +126 MiB stayed after the abusers closed)."""
    import gc
    import weakref

    from test_rpc_adapter import RawClient

    states: list[weakref.ref[_http2.ServerConnection]] = []
    original = _http2.ServerConnection.initiate

    def initiate(self: _http2.ServerConnection) -> None:
        states.append(weakref.ref(self))
        original(self)

    monkeypatch.setattr(_http2.ServerConnection, "initiate", initiate)
    path = str(tmp_path / "api.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(8)
    gc.collect()
    gc.disable()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, trio.SocketListener(sock), Servicer()))
            stream = await trio.open_unix_socket(path)
            client = RawClient(stream)
            with trio.fail_after(CALL_TIMEOUT):
                fields = await client.call(
                    "Getenv", pb.GetenvRequest(key="k").SerializeToString(), grpc_timeout="10S"
                )
                assert fields[b"grpc-status"] == b"0"
                # A request left unfinished: its buffered bytes belong to the connection.
                sid = client.h2.get_next_available_stream_id()
                client.h2.send_headers(sid, REQUEST_HEADERS)
                client.h2.send_data(sid, b"\x00\x00\x01\x00\x00" + b"p" * 1000)
                await stream.send_all(client.h2.data_to_send())
                await stream.aclose()
                await trio.testing.wait_all_tasks_blocked()
            assert len(states) == 1
            assert states[0]() is None
            nursery.cancel_scope.cancel()
    finally:
        gc.enable()
