"""Serve a purerpc-generated servicer over any trio listener: our own HTTP/2 server loop.

Who calls it: the agent's root nursery runs :func:`serve` with the transport's listener
(AF_VSOCK in a guest, AF_UNIX in development and tests). Only the servicer's method table
(``METHODS``: names, cardinalities, protobuf types, as ``scripts/gen_proto.py`` renders it
next to the purerpc ``service`` description) is read; the connection handling below
replaces ``purerpc.Server``, which cannot be used. purerpc itself is not imported here: its
package imports its client and anyio (~15 ms of the agent's start), and nothing of it is
needed to serve. Its defects, and how this module fixes each one:

- ``Server`` binds a TCP port on all interfaces (SO_REUSEPORT) and sets TCP options on
  every socket, which fails on AF_UNIX and AF_VSOCK. -> :func:`serve` takes any
  ``trio.abc.Listener`` it is handed and never touches socket options.
- ``grpc-timeout`` is ignored. -> Every RPC runs in a ``trio.CancelScope`` whose deadline
  comes from the header; on expiry the handler is cancelled and DEADLINE_EXCEEDED sent.
- RST_STREAM from the client is ignored, so handlers of abandoned calls run forever. ->
  A reset cancels that RPC's scope; losing the connection cancels all its RPCs (they run
  in the connection's nursery).
- An oversized message raises out of the connection loop and kills every RPC on the
  connection. -> The length prefix is checked per RPC (``_wire.UnaryRequestReader``); only
  that RPC fails, with RESOURCE_EXHAUSTED, and the rest of its body is discarded while the
  connection keeps its flow-control windows open.
- Handler exceptions reach the client as CANCELLED with a Python repr of ``sys.exc_info()``
  (a traceback) in the message. -> :func:`trinit.errors.to_status` maps them: domain errors
  keep their code and message, purerpc status exceptions keep their status, anything else
  is INTERNAL with one line; the traceback goes to the ``trinit.rpc`` logger at debug.

HTTP/2 itself is ``_http2.ServerConnection`` (no I/O), not h2: h2 3.2 (which purerpc
pins) cost about 60% of the agent's CPU per unary call, and had defects this loop had to
patch (a late WINDOW_UPDATE for a cleaned-up stream, or one stream over
SETTINGS_MAX_CONCURRENT_STREAMS, killed the connection with GOAWAY; a frame was buffered
whole before its length was checked; every closed stream was remembered).

Resource bounds (what one connection can make trinit hold; the host is trusted, but no
connection may exhaust or freeze PID 1):

- Frames: at most ``_MAX_INBOUND_FRAME`` (64 KiB, advertised). A longer frame header is
  answered with GOAWAY(FRAME_SIZE_ERROR) and the connection is closed, before its payload
  is read.
- Streams: at most ``_MAX_CONCURRENT_STREAMS`` (256, advertised) open at once; HEADERS for
  another get RST_STREAM(REFUSED_STREAM) (a client may retry), the connection lives on.
- Request bytes: each message at most ``max_message_bytes``; all unfinished requests of a
  connection together at most ``_MAX_BUFFERED_REQUEST_BYTES``. The request whose DATA would
  go over fails with RESOURCE_EXHAUSTED (the rest of its body is discarded); the others
  go on.
- Response bytes waiting for the peer (for flow-control window, or for the socket to take
  them): at most ``_MAX_QUEUED_RESPONSE_BYTES``. Streaming handlers wait until their
  previous message is out, so only unary responses a peer never collects can pile up; past
  the cap the peer is not reading, and the connection is closed (every RPC on it
  cancelled). Waiting would not help: the response already exists when it is queued.
- Connections: at most ``max_connections`` (``DEFAULT_MAX_CONNECTIONS``, 128) served at
  once per :func:`serve`; another is closed at accept, before a byte is read
  (``trinit._connlimit``), and the peer may connect again once one of its connections
  has closed. Without it the bounds above would multiply with the number of connections.
- Time: the client preface (magic and SETTINGS) must arrive within ``PREFACE_TIMEOUT``
  (10 s) of the connection's start; an idle connection after that is fine.
- Fairness: the reader lets the connection process at most ``_MAX_FRAMES_PER_BATCH``
  frames, then yields to the scheduler, so a flood on one connection delays others by one
  batch at a time.
- Logs: warnings about bad connections go through one ``RateLimitedLog`` per
  :func:`serve` (one line per ``_BAD_CONNECTION_LOG_INTERVAL``, with a count of the
  suppressed ones).

Theory of operation (one connection):

- One reader task (``_Connection._read_loop``) feeds received bytes to the connection
  (``_http2.ServerConnection.receive``), which checks each frame header against our limit
  before buffering its payload and processes at most a batch of frames per step, with a
  checkpoint between batches. It calls this class's ``on_request``/``on_data``/``on_end``/
  ``on_reset``/``on_window`` directly (no event objects); they collect each request's body
  and start one task per RPC when the request has ended (for unary-request RPCs the whole
  request is needed before the handler can run). Rejections that need no handler
  (unknown method, oversized or malformed framing) are answered directly by the reader
  without a task.
- RPC tasks write responses into the connection's output buffer synchronously (no await
  between its calls, so its state is never seen half-updated), then flush
  (``_flush_after_rpc``). A unary response that fits the flow-control windows (nearly
  all) is one concatenation of precomputed bytes: HEADERS, DATA, trailers
  (``ServerConnection.send_unary``).
- Sending: an RPC that is alone on its connection writes its bytes at once with one
  non-blocking ``os.write`` (no task switch: the cheapest path for sequential calls).
  Otherwise the writer task is woken; it runs after every task of the current scheduler
  batch, so the responses of concurrent RPCs leave in one ``send_all``. Whatever a
  non-blocking write leaves over goes to the writer too. Nothing ever awaits in the middle
  of sending a frame except the writer, which is only cancelled with the whole
  connection, so cancelling an RPC can never cut a frame in half. (A write to a closed
  peer gets EPIPE rather than a signal because Python ignores SIGPIPE, as trio's own
  sends also assume.)
- Receiving: 256 KiB reads; on a socket the reader waits for readability first when its
  previous read drained the socket, which saves a failed read per request on an idle
  connection.
- Responses' header blocks are constants or cached (``_hpack``, dynamic-table free).
  Requests' header blocks are decoded by ``_hpack.CachingDecoder``, which reuses the
  decoded list of a recent identical block while the dynamic table is unchanged (grpc-core
  repeats the same indexed block for every call). Request headers are not validated
  beyond what is read: the host is trusted and only ``:path``, ``content-type``,
  ``grpc-timeout`` and ``grpc-encoding`` are used, each checked here.
- Outbound flow control: DATA is given to the connection only as far as the peer's window
  allows; the rest waits in the RPC's queue and is resumed on WINDOW_UPDATE/SETTINGS
  (``on_window``). A streaming handler is not asked for its next message until its
  previous one has been handed over.
- Inbound flow control: the connection gives received DATA's window back at once (what is
  kept is bounded by the message limit and the connection's request-byte cap), so large
  requests stream at full speed.

Invariants: no RPC task outlives its connection; no handler exception escapes its RPC;
the HTTP/2 state is touched only from tasks of its own connection and never across an
``await``.
"""

from __future__ import annotations

import collections
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, NoReturn, Protocol

import trio

from trinit._connlimit import ConnectionLimit
from trinit._ratelimit import RateLimitedLog
from trinit.errors import Code, InvalidArgument, TrinitError, describe

from . import _http2, _wire
from ._hpack import OK_TRAILER_BLOCK

__all__ = ["serve"]

_log = logging.getLogger("trinit.rpc")

DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS: Final = 128
"""Concurrent connections one :func:`serve` accepts (the host needs a handful: its control
connection and one per concurrent client it runs)."""

# Bytes asked of the socket per receive: large, so a 4 MiB request takes few wakeups.
_RECEIVE_BYTES: Final = 256 * 1024
# Our receive windows. Received data is consumed at once, so these only bound what is in
# flight; large windows keep large requests from waiting on WINDOW_UPDATE round trips.
_STREAM_WINDOW: Final = 4 * 1024 * 1024
_CONNECTION_WINDOW: Final = 16 * 1024 * 1024
# Largest frame the client may send us (checked from each frame's header): it bounds what
# the reader holds of a frame that has not fully arrived.
_MAX_INBOUND_FRAME: Final = 64 * 1024
# Streams a client may have open at once; HEADERS for one more are refused with
# RST_STREAM(REFUSED_STREAM), which gRPC clients retry transparently. The host keeps
# long-lived RPCs open (WaitProcess per process, Copy, stdio-related calls), a few per
# container, plus short calls in bursts; 256 leaves room for dozens of containers per
# connection, and bounds what one connection can make us hold: with the caps below, a
# stream's state and handler task (a few KiB) times 256.
_MAX_CONCURRENT_STREAMS: Final = 256
_MAX_HEADER_LIST_BYTES: Final = 64 * 1024
# Bytes of unfinished request bodies one connection may make us hold (sum over its
# streams): four maximum-size messages arriving interleaved. The request whose DATA would
# go over it fails with RESOURCE_EXHAUSTED. (Inbound DATA is acknowledged at once, so
# flow control does not bound this.)
_MAX_BUFFERED_REQUEST_BYTES: Final = 4 * DEFAULT_MAX_MESSAGE_BYTES
# Response bytes one connection may have waiting for its peer (for window, or for the
# socket to take them). Past this the peer is not reading, and the connection is closed.
# Streaming handlers hold at most one message each in the queue (they wait on ``drained``),
# so only unary responses the peer never collects can pile up to this.
_MAX_QUEUED_RESPONSE_BYTES: Final = 8 * DEFAULT_MAX_MESSAGE_BYTES
# Frames processed per step of the reader: after each batch it yields to the scheduler,
# so one busy connection cannot delay the others by more than a batch (a few ms of frame
# parsing), however much it sends at once. Two frames start a typical RPC.
_MAX_FRAMES_PER_BATCH: Final = 128
# A connection must have sent the client preface (magic and SETTINGS) within this time;
# otherwise it is not an HTTP/2 client and is closed. An idle connection after the
# preface is fine (the host keeps connections open between calls).
PREFACE_TIMEOUT: Final = 10.0
# Warnings about bad connections (protocol errors, timeouts, peers that do not read):
# at most one line per this many seconds, so a misbehaving peer cannot flood the console.
_BAD_CONNECTION_LOG_INTERVAL: Final = 10.0
# How long a connection that is going away may spend flushing its last frames (GOAWAY).
_CLOSE_FLUSH_SECONDS: Final = 1.0

_OK_TRAILERS: Final = _wire.trailers(Code.OK, "")


class MethodSpec(Protocol):
    """One RPC of a generated servicer's ``METHODS`` (``trinit._proto.sandbox_grpc``).

    ``cardinality`` is the name of a ``purerpc.Cardinality`` member."""

    @property
    def name(self) -> str: ...
    @property
    def cardinality(self) -> str: ...
    @property
    def request_type(self) -> Any: ...
    @property
    def response_type(self) -> Any: ...


class GeneratedServicer(Protocol):
    """What :func:`serve` needs of a servicer: the service's name and method table; the
    handlers are the methods named there."""

    # read-only members: a generated servicer's METHODS is a tuple, which a plain (writable)
    # ``Sequence`` attribute would not accept
    @property
    def SERVICE_NAME(self) -> str: ...  # the generated class's names, upper case

    @property
    def METHODS(self) -> Sequence[MethodSpec]: ...


class _Method:
    """One servicer method, resolved once per :func:`serve` call."""

    __slots__ = ("call", "name", "request_type", "response_type", "streaming")

    def __init__(self, name: str, call: Callable[..., Any], spec: MethodSpec) -> None:
        self.name = name
        self.call = call
        self.request_type: Any = spec.request_type
        self.response_type: Any = spec.response_type
        self.streaming = spec.cardinality == "UNARY_STREAM"


def _method_table(servicer: GeneratedServicer) -> dict[bytes, _Method]:
    """``:path`` -> method, for every unary-request method of the servicer's service."""
    service = servicer.SERVICE_NAME
    table: dict[bytes, _Method] = {}
    for spec in servicer.METHODS:
        if spec.cardinality not in ("UNARY_UNARY", "UNARY_STREAM"):
            # The SandboxContext API has no client-streaming RPC; such a method is
            # answered UNIMPLEMENTED like an unknown one.
            _log.warning("%s/%s: client-streaming RPCs are not supported", service, spec.name)
            continue
        path = f"/{service}/{spec.name}"
        table[path.encode()] = _Method(path, getattr(servicer, spec.name), spec)
    return table


class _Call:
    """State of one RPC (one HTTP/2 stream) on a connection."""

    __slots__ = (
        "buffered",
        "deadline",
        "drained",
        "headers_sent",
        "method",
        "pending",
        "reader",
        "remote_closed",
        "reset",
        "scope",
        "started_at",
        "stream_id",
        "trailers",
    )

    def __init__(self, stream_id: int, method: _Method, reader: _wire.UnaryRequestReader) -> None:
        self.stream_id = stream_id
        self.method = method
        self.reader: _wire.UnaryRequestReader | None = reader
        # Request bytes this call holds in its reader (counted in the connection's total).
        self.buffered = 0
        self.deadline = float("inf")
        self.started_at = trio.current_time()
        # Created here, entered by the RPC task: a reset before the task runs still cancels.
        self.scope = trio.CancelScope()
        self.headers_sent = False
        self.remote_closed = False
        self.reset = False
        # Framed response bytes waiting for flow-control window, then the trailers.
        self.pending: collections.deque[memoryview] = collections.deque()
        self.trailers: list[tuple[bytes, bytes]] | None = None
        # Set when ``pending`` empties, for a streaming handler waiting to produce more.
        self.drained: trio.Event | None = None


class _Connection:
    """One client connection: its HTTP/2 state, its RPCs and its writer."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        methods: dict[bytes, _Method],
        max_message_bytes: int,
        bad_connection_log: RateLimitedLog,
    ) -> None:
        self._stream = stream
        self._methods = methods
        self._max_message_bytes = max_message_bytes
        self._bad_connection_log = bad_connection_log
        self._h2 = _http2.ServerConnection(
            self,
            max_concurrent_streams=_MAX_CONCURRENT_STREAMS,
            stream_window=_STREAM_WINDOW,
            connection_window=_CONNECTION_WINDOW,
            max_frame_size=_MAX_INBOUND_FRAME,
            max_header_list_size=_MAX_HEADER_LIST_BYTES,
        )
        self._calls: dict[int, _Call] = {}
        # Sum of _Call.buffered over this connection's calls.
        self._buffered_request_bytes = 0
        # Response bytes in the calls' ``pending`` queues, and in the writer's hands.
        self._queued_response_bytes = 0
        self._writer_holding = 0
        self._abandoned = False
        # Calls whose output waits for window, in the order they blocked.
        self._blocked: dict[int, _Call] = {}
        self._write_lot = trio.lowlevel.ParkingLot()
        self._write_scheduled = False
        self._writer_sending = False
        # Bytes taken from the HTTP/2 state but not yet sent: they go out before anything else.
        self._unsent = b""
        # The socket's fd for the eager path of _flush_after_rpc (-1: always use the writer).
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._drained = True
        self._closing = False
        self._writer_done = trio.Event()
        self._rpc_nursery: trio.Nursery | None = None
        self._connection_scope: trio.CancelScope | None = None

    async def run(self) -> None:
        """Serve until the peer closes, the socket breaks or we are cancelled.

        On return (or cancellation) every RPC task of this connection has been cancelled
        and has finished. The stream itself is closed by the caller.
        """
        self._h2.initiate()
        try:
            async with trio.open_nursery() as connection_nursery:
                self._connection_scope = connection_nursery.cancel_scope
                connection_nursery.start_soon(self._writer)
                self._schedule_write()
                async with trio.open_nursery() as rpc_nursery:
                    self._rpc_nursery = rpc_nursery
                    await self._read_loop()
                    rpc_nursery.cancel_scope.cancel()
                # Let the writer flush what is left (a GOAWAY, typically), within bounds.
                self._closing = True
                self._schedule_write()
                with trio.move_on_after(_CLOSE_FLUSH_SECONDS):
                    await self._writer_done.wait()
                connection_nursery.cancel_scope.cancel()
        finally:
            # The HTTP/2 state calls back into this object, so the two form a reference
            # cycle; break it, so that what the connection held (up to the request-byte
            # cap of partial requests) is freed now, not at the next full collection.
            self._h2.detach()
            self._calls.clear()
            self._blocked.clear()

    # -- socket I/O -------------------------------------------------------------------

    async def _receive(self) -> bytes | bytearray:
        """Next bytes from the peer (b"" at EOF).

        For a socket, wait for readability *before* reading when the last read drained the
        socket: an idle connection then costs no failed (EAGAIN) read per request.
        """
        fd = self._fd
        if fd < 0:
            return await self._stream.receive_some(_RECEIVE_BYTES)
        if self._drained:
            await trio.lowlevel.wait_readable(fd)
        else:
            await trio.lowlevel.checkpoint()
        while True:
            try:
                data = os.read(fd, _RECEIVE_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            except OSError as exc:  # ECONNRESET and friends: the peer is gone
                raise trio.BrokenResourceError(describe(exc)) from exc
            self._drained = len(data) < _RECEIVE_BYTES
            return data

    async def _read_loop(self) -> None:
        with trio.CancelScope(deadline=trio.current_time() + PREFACE_TIMEOUT) as preface:
            await self._read_frames(preface)
        if preface.cancelled_caught:
            self._bad_connection_log.warning(
                "no HTTP/2 preface within %g s, closing connection", PREFACE_TIMEOUT
            )

    async def _read_frames(self, preface: trio.CancelScope) -> None:
        h2c = self._h2
        while True:
            data = await self._receive()
            if not data:
                _log.debug("connection closed by peer")
                return
            try:
                # At most a batch of frames at a time (each frame's header checked against
                # our limit before its payload is buffered); the connection calls our
                # on_* methods as it goes.
                more = h2c.receive(data, _MAX_FRAMES_PER_BATCH)
                while True:
                    # SETTINGS/PING acks, WINDOW_UPDATEs, rejections.
                    if h2c.output_bytes:
                        self._schedule_write()
                        # The connection answers PINGs, SETTINGS and bad streams itself: a
                        # peer that sends those but does not read would grow its buffer.
                        self._check_backlog()
                    if not more:
                        break
                    # Let other connections (and the RPCs just started) run between batches.
                    await trio.lowlevel.checkpoint()
                    more = h2c.receive(b"", _MAX_FRAMES_PER_BATCH)
            except _http2.ConnectionFailed as exc:
                # A GOAWAY is queued; run() flushes it on the way out.
                self._bad_connection_log.warning(
                    "HTTP/2 protocol error, closing connection: %s", exc
                )
                return
            if h2c.preface_done and preface.deadline != float("inf"):
                preface.deadline = float("inf")

    def _schedule_write(self) -> None:
        if not self._write_scheduled:
            self._write_scheduled = True
            self._write_lot.unpark_all()

    async def _writer(self) -> None:
        """The only task that sends on the socket (so a frame is never cut by a cancel)."""
        h2c = self._h2
        send_all = self._stream.send_all
        try:
            while True:
                data = self._unsent or h2c.data_to_send()
                self._unsent = b""
                if data:
                    self._writer_sending = True
                    self._writer_holding = len(data)
                    await send_all(data)
                    self._writer_holding = 0
                    self._writer_sending = False
                elif self._closing:
                    return
                else:
                    self._write_scheduled = False
                    await self._write_lot.park()
        finally:
            self._writer_done.set()

    def _flush_after_rpc(self) -> None:
        """Send what an RPC task produced: at once if it is alone, else in the next batch.

        With no other RPC in flight on the connection there is nothing to batch with, so
        the bytes go out now with one non-blocking write from this task, saving a switch to
        the writer task. A write never blocks or awaits here, so a cancel cannot cut a frame;
        whatever the socket does not take is handed to the writer.
        """
        if self._calls or self._writer_sending or self._write_scheduled or self._fd < 0:
            self._schedule_write()
            return
        data = self._h2.data_to_send()
        if not data:
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # the writer's send_all reports the broken socket and ends the connection
        if sent < len(data):
            self._unsent = data[sent:]
            self._schedule_write()

    # -- inbound events -----------------------------------------------------------------

    # These are the ``_http2.Handler`` methods: the connection calls them from receive().

    def on_window(self) -> None:
        if self._blocked:
            self._resume_blocked()

    def on_end(self, stream_id: int) -> None:
        self._on_request_ended(stream_id)

    def on_reset(self, stream_id: int) -> None:
        call = self._calls.get(stream_id)
        if call is not None:
            self._drop(call)

    def on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        path = b""
        timeout: bytes | None = None
        content_type = b""
        encoding = b"identity"
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-encoding":
                encoding = value
        method = self._methods.get(path)
        if method is None:
            text = path.decode("utf-8", "replace")
            self._reject(stream_id, text, Code.UNIMPLEMENTED, f"unknown method {text}")
            return
        if not content_type.startswith(b"application/grpc"):
            self._reject(stream_id, method.name, Code.INTERNAL, "content-type is not gRPC")
            return
        if encoding != b"identity":
            self._reject(
                stream_id, method.name, Code.UNIMPLEMENTED, "compressed requests not supported"
            )
            return
        call = _Call(stream_id, method, _wire.UnaryRequestReader(self._max_message_bytes))
        if timeout is not None:
            try:
                call.deadline = call.started_at + _wire.parse_grpc_timeout(timeout)
            except ValueError as exc:
                self._reject(stream_id, method.name, Code.INTERNAL, str(exc))
                return
        self._calls[stream_id] = call

    def on_data(self, stream_id: int, data: bytes) -> None:
        # The connection gives the window back by itself: what we keep is bounded by the
        # message limit and the connection's request-byte cap.
        call = self._calls.get(stream_id)
        if call is None or call.reader is None:
            return  # the RPC was already answered; discard the rest of its body
        size = len(data)
        if self._buffered_request_bytes + size > _MAX_BUFFERED_REQUEST_BYTES:
            self._abort_request(
                call,
                _wire.RequestBufferFull(
                    f"the connection's buffered request bytes would exceed the limit of "
                    f"{_MAX_BUFFERED_REQUEST_BYTES} bytes"
                ),
            )
            return
        self._buffered_request_bytes += size
        call.buffered += size
        try:
            call.reader.feed(data)
        except TrinitError as exc:
            self._abort_request(call, exc)

    def _on_request_ended(self, stream_id: int) -> None:
        call = self._calls.get(stream_id)
        if call is None:
            return
        call.remote_closed = True
        reader = call.reader
        if reader is None:
            return
        self._release_reader(call)
        try:
            payload = reader.finish()
        except TrinitError as exc:
            self._abort_request(call, exc)
            return
        assert self._rpc_nursery is not None
        self._rpc_nursery.start_soon(self._run_call, call, payload)

    def _release_reader(self, call: _Call) -> None:
        """The call's request is complete or abandoned: its bytes no longer count."""
        call.reader = None
        self._buffered_request_bytes -= call.buffered
        call.buffered = 0

    def _abort_request(self, call: _Call, exc: TrinitError) -> None:
        """Fail an RPC whose request could not be read; nothing else is affected."""
        self._release_reader(call)
        self._calls.pop(call.stream_id, None)
        self._reject(call.stream_id, call.method.name, exc.code, exc.message, call.started_at)

    def _reject(
        self,
        stream_id: int,
        name: str,
        code: Code,
        message: str,
        started_at: float | None = None,
    ) -> None:
        """Answer a stream with a trailers-only status and ask the client to stop sending."""
        h2c = self._h2
        try:
            h2c.send_trailers(stream_id, _wire.trailers_only(code, message))
            # RFC 9113 8.1: after a complete response, RST_STREAM(NO_ERROR) tells the
            # client to stop sending the request body without failing the response.
            if not h2c.remote_closed(stream_id):
                h2c.reset_stream(stream_id, _http2.NO_ERROR)
        except _http2.StreamClosed as exc:
            _log.debug("%s: could not send status: %s", name, describe(exc))
        self._schedule_write()
        self._log_call(name, code, started_at)

    # -- RPC tasks ----------------------------------------------------------------------

    async def _run_call(self, call: _Call, payload: bytes) -> None:
        """Run one handler and answer its RPC. Never raises (except Cancelled).

        If the connection is cancelled, the handler is cancelled and nothing is sent.
        """
        method = call.method
        code, message = Code.OK, ""
        try:
            with call.scope:
                call.scope.deadline = call.deadline
                try:
                    request = method.request_type.FromString(payload)
                except Exception as exc:  # protobuf's DecodeError, whatever its module
                    raise InvalidArgument(f"malformed request: {describe(exc)}") from None
                result = method.call(request)
                if method.streaming:
                    await self._stream_responses(call, result)
                else:
                    response = await result
                    framed = _wire.frame_message(self._serialize(method, response))
                    # The common case: the whole response (headers, message, trailers)
                    # fits the windows and goes out as one piece of precomputed bytes.
                    if not call.reset and self._h2.send_unary(
                        call.stream_id, framed, OK_TRAILER_BLOCK
                    ):
                        self._calls.pop(call.stream_id, None)
                        self._flush_after_rpc()
                        self._log_call(method.name, Code.OK, call.started_at)
                        return
                    self._send_message(call, framed)
        except _http2.StreamClosed as exc:
            # Sending failed: the client reset the stream or is closing the connection.
            _log.debug("%s: response not sent: %s", method.name, describe(exc))
            self._drop(call)
            self._log_call(method.name, Code.CANCELLED, call.started_at)
            return
        except Exception as exc:
            code, message = _wire.status_of(exc)
            if not _wire.is_expected(exc):
                _log.warning("%s failed: %s", method.name, message)
                _log.debug("%s traceback", method.name, exc_info=exc)
        if call.reset:
            code, message = Code.CANCELLED, "cancelled by the client"
        elif call.scope.cancelled_caught:
            code, message = Code.DEADLINE_EXCEEDED, "deadline exceeded"
        self._finish(call, code, message)
        self._flush_after_rpc()
        self._log_call(method.name, code, call.started_at)

    async def _stream_responses(self, call: _Call, result: Any) -> None:
        """Send each message of a server-streaming handler as it is produced."""
        if inspect.isawaitable(result):
            # e.g. the generated base class's ``async def`` that raises UNIMPLEMENTED
            result = await result
        if not hasattr(result, "__aiter__"):
            raise TypeError(f"{call.method.name} did not return an async iterator")
        responses: AsyncIterator[Any] = result
        try:
            async for response in responses:
                framed = _wire.frame_message(self._serialize(call.method, response))
                self._send_message(call, framed)
                self._flush_after_rpc()
                if call.pending:
                    call.drained = trio.Event()
                    await call.drained.wait()
                    call.drained = None
        finally:
            # Run the generator's cleanup now (in this task, under its cancel scope),
            # not whenever the garbage collector finds it.
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    def _serialize(method: _Method, response: Any) -> bytes:
        if not isinstance(response, method.response_type):
            raise TypeError(
                f"{method.name} returned {type(response).__name__}, "
                f"expected {method.response_type.__name__}"
            )
        data: bytes = response.SerializeToString()
        return data

    def _send_message(self, call: _Call, framed: bytes) -> None:
        """Queue one framed response message; sends what the flow-control window allows now."""
        if call.reset:
            return
        h2c = self._h2
        stream_id = call.stream_id
        if not call.headers_sent:
            h2c.send_headers(stream_id)
            call.headers_sent = True
        if not call.pending and len(framed) <= min(
            h2c.send_window(stream_id), h2c.max_outbound_frame_size
        ):
            h2c.send_data(stream_id, framed)
        else:
            call.pending.append(memoryview(framed))
            self._queued_response_bytes += len(framed)
            self._blocked[stream_id] = call
            self._resume_blocked()
        self._check_backlog()

    def _check_backlog(self) -> None:
        """Close the connection if more output waits for the peer than it may make us hold."""
        backlog = (
            self._queued_response_bytes
            + self._h2.output_bytes
            + len(self._unsent)
            + self._writer_holding
        )
        if backlog > _MAX_QUEUED_RESPONSE_BYTES:
            self._abandon(f"peer is not reading: {backlog} response bytes queued")

    def _resume_blocked(self) -> None:
        """Send waiting DATA as far as the windows allow; then send due trailers."""
        h2c = self._h2
        max_frame = h2c.max_outbound_frame_size
        for stream_id, call in list(self._blocked.items()):
            pending = call.pending
            try:
                while pending:
                    window = h2c.send_window(stream_id)
                    if window <= 0:
                        break
                    view = pending[0]
                    size = min(len(view), window, max_frame)
                    h2c.send_data(stream_id, view[:size])
                    self._queued_response_bytes -= size
                    if size == len(view):
                        pending.popleft()
                    else:
                        pending[0] = view[size:]
                if pending:
                    if h2c.connection_send_window <= 0:
                        break  # the connection window is shut: later streams wait too
                    continue
                del self._blocked[stream_id]
                if call.trailers is not None:
                    self._send_trailers(call, call.trailers)
            except _http2.StreamClosed as exc:
                _log.debug("%s: response not sent: %s", call.method.name, describe(exc))
                self._drop(call)
            if call.drained is not None:
                call.drained.set()
        self._schedule_write()

    def _finish(self, call: _Call, code: Code, message: str) -> None:
        """End the RPC's response with its status (after any DATA still waiting)."""
        if call.reset:
            return
        try:
            if call.headers_sent:
                fields = _OK_TRAILERS if code == Code.OK else _wire.trailers(code, message)
            else:
                fields = _wire.trailers_only(code, message)
            if call.pending:
                call.trailers = fields  # sent by _resume_blocked once the data is out
            else:
                self._send_trailers(call, fields)
        except _http2.StreamClosed as exc:
            _log.debug("%s: could not send status: %s", call.method.name, describe(exc))
            self._drop(call)

    def _drop(self, call: _Call) -> None:
        """Forget an RPC whose stream can carry nothing more (reset by the client, or
        closed by a stream error): cancel its handler and discard its unsent output."""
        self._calls.pop(call.stream_id, None)
        self._blocked.pop(call.stream_id, None)
        call.reset = True
        self._release_reader(call)
        self._queued_response_bytes -= sum(len(view) for view in call.pending)
        call.pending.clear()
        call.trailers = None
        call.scope.cancel()
        if call.drained is not None:
            call.drained.set()

    def _abandon(self, reason: str) -> None:
        """Close the connection now: cancel its reader, writer and RPCs, keep nothing."""
        if self._abandoned:
            return
        self._abandoned = True
        self._bad_connection_log.warning("%s, closing connection", reason)
        for call in list(self._calls.values()):
            call.pending.clear()
        self._blocked.clear()
        self._queued_response_bytes = 0
        assert self._connection_scope is not None
        self._connection_scope.cancel()

    def _send_trailers(self, call: _Call, fields: list[tuple[bytes, bytes]]) -> None:
        h2c = self._h2
        stream_id = call.stream_id
        call.trailers = None
        self._calls.pop(stream_id, None)
        h2c.send_trailers(stream_id, fields)
        if not call.remote_closed:
            h2c.reset_stream(stream_id, _http2.NO_ERROR)

    @staticmethod
    def _log_call(name: str, code: Code, started_at: float | None) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            if started_at is None:
                _log.debug("%s %s", name, code.name)
            else:
                elapsed_ms = (trio.current_time() - started_at) * 1000
                _log.debug("%s %s %.3f ms", name, code.name, elapsed_ms)


async def _serve_connection(
    stream: trio.abc.Stream,
    methods: dict[bytes, _Method],
    max_message_bytes: int,
    bad_connection_log: RateLimitedLog,
) -> None:
    """Run one connection; its failures are logged and never reach the server loop."""
    try:
        await _Connection(stream, methods, max_message_bytes, bad_connection_log).run()
    except* (trio.BrokenResourceError, trio.ClosedResourceError) as group:
        _log.debug("connection lost: %s", describe(group.exceptions[0]))
    except* Exception as group:
        bad_connection_log.warning("connection failed: %s", describe(group.exceptions[0]))
        _log.debug("connection failure", exc_info=group)


async def serve(
    listener: trio.abc.Listener[trio.abc.Stream],
    servicer: GeneratedServicer,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``servicer`` (gRPC over cleartext HTTP/2) on every connection ``listener`` accepts.

    Runs until cancelled; ``task_status.started()`` is called once the listener is being
    accepted on. Each connection gets a task and each RPC a task inside it; any number of
    concurrent RPCs are served. Request messages larger than
    ``max_message_bytes`` fail their RPC with RESOURCE_EXHAUSTED. At most
    ``max_connections`` are served at once; another is closed as soon as it is accepted.

    Handlers are the servicer's methods: ``async def M(self, request) -> response`` for
    unary RPCs and async generators for server-streaming ones. A handler that raises a
    :class:`trinit.errors.TrinitError` fails its RPC with that error's code and message;
    a purerpc ``RpcFailedError`` keeps its status; any other exception becomes INTERNAL with
    a one-line message (logged at warning, traceback at debug). A ``grpc-timeout`` cancels
    the handler at the deadline (DEADLINE_EXCEEDED); a client reset cancels it too.

    Cancellation: cancelling ``serve`` cancels every connection and RPC handler, waits for
    them to finish, and closes the listener and every accepted stream.
    """
    methods = _method_table(servicer)
    # One limiter for all connections: the point is to bound lines per second, whoever
    # causes them.
    bad_connection_log = RateLimitedLog(
        _log, interval=_BAD_CONNECTION_LOG_INTERVAL, clock=trio.current_time
    )

    limit = ConnectionLimit(max_connections, bad_connection_log, "an API connection")

    async def handle(stream: trio.abc.Stream) -> None:
        if not limit.admit():
            await trio.aclose_forcefully(stream)
            return
        try:
            await _serve_connection(stream, methods, max_message_bytes, bad_connection_log)
        finally:
            limit.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, [listener])
        task_status.started()
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover
