"""The server side of one HTTP/2 connection, as much as a gRPC server needs (no I/O).

Why not h2: h2 3.2 (pinned by purerpc) spent about 60% of the agent's CPU per unary call
(frame objects from hyperframe, two state machines per stream, event objects, a flow
control manager per stream; ~300 us of profiled time per Getenv). A gRPC server uses a small
part of HTTP/2: streams are opened by the client only, request headers arrive in one header
block, responses are HEADERS, DATA and trailing HEADERS, and there is no server push,
priority or upgrade. :class:`ServerConnection` implements that part directly: it parses
frames from a byte buffer, keeps per stream only what the rules below need, calls its
:class:`Handler` for requests, request bytes, ends and resets, and builds outbound frames
as bytes. A whole unary response (headers, message, trailers) is one concatenation of
precomputed bytes (:meth:`ServerConnection.send_unary`).

Rules kept (RFC 9113; what h2 enforced for us, and the bounds of docs/security.md):
- The client preface (magic, then a SETTINGS frame) must come first; a frame longer than
  our SETTINGS_MAX_FRAME_SIZE is refused from its 9-byte header, before its payload is
  buffered (nothing longer than one frame and one read is ever held).
- Streams: client-initiated (odd) ids only, each higher than the last; more than
  ``max_concurrent_streams`` open at once are refused with RST_STREAM(REFUSED_STREAM) after
  their header block is decoded (HPACK is stateful). Frames on an idle stream (other than
  HEADERS and PRIORITY) are a connection error.
- Flow control, inbound: DATA beyond the connection's or the stream's window is a
  FLOW_CONTROL_ERROR. The handler consumes data at once, so the windows are given back
  with WINDOW_UPDATE whenever half of one has been used (as h2's window manager did).
- Flow control, outbound: :meth:`ServerConnection.send_window` is what may be sent now;
  the peer's INITIAL_WINDOW_SIZE changes apply to every open stream, a window may not
  exceed 2^31-1, a zero increment is a PROTOCOL_ERROR.
- Streams that are closed: WINDOW_UPDATE, RST_STREAM and PRIORITY for them are ignored;
  DATA or HEADERS get RST_STREAM(STREAM_CLOSED) (a stream error, where RFC 9113 allows a
  connection error for streams that ended normally: one late frame does not cost every
  RPC on the connection). Their DATA still counts against, and is given back to, the
  connection's window. Nothing is remembered per closed stream.
- HPACK: request header blocks are decoded by ``_hpack.CachingDecoder`` (header list at
  most ``max_header_list_size``; a block with its CONTINUATIONs at most as long); any
  decoding error is a COMPRESSION_ERROR. Response header blocks never use the dynamic table
  (``_hpack``); after the peer's SETTINGS_HEADER_TABLE_SIZE changes, the next block starts
  with a table size update to 0.
- SETTINGS are acknowledged, PINGs answered; their answers wait in the same output buffer,
  which the caller bounds (``output_bytes``). A connection error queues GOAWAY and raises
  :class:`ConnectionFailed`; the caller then closes the connection.

Not supported, as a gRPC server does not need them: server push (never sent; a client's
PUSH_PROMISE is a connection error), priorities (parsed and ignored), request trailers
other than as the end of the request.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

import hpack  # type: ignore[import-untyped, unused-ignore]

from ._hpack import (
    RESPONSE_HEADER_BLOCK,
    TABLE_SIZE_UPDATE_TO_ZERO,
    CachingDecoder,
    encode_fields,
)

__all__ = ["ConnectionFailed", "Handler", "ServerConnection", "StreamClosed"]

CLIENT_MAGIC: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9
# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20
# Error codes (RFC 9113 section 7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB
# Settings (RFC 9113 section 6.5.2).
HEADER_TABLE_SIZE: Final = 0x1
ENABLE_PUSH: Final = 0x2
MAX_CONCURRENT_STREAMS: Final = 0x3
INITIAL_WINDOW_SIZE: Final = 0x4
MAX_FRAME_SIZE: Final = 0x5
MAX_HEADER_LIST_SIZE: Final = 0x6

MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65535
DEFAULT_FRAME_SIZE: Final = 16384
LARGEST_FRAME_SIZE: Final = 2**24 - 1

# Frame header: 24-bit length (as 16 + 8 bits), type, flags, stream id (31 bits + R).
_FRAME_HEADER: Final = struct.Struct(">HBBBL")
_U32: Final = struct.Struct(">L")
_SETTING: Final = struct.Struct(">HL")


def frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """The 9 bytes that start a frame."""
    return _FRAME_HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id)


class ConnectionFailed(Exception):
    """The peer broke HTTP/2: a GOAWAY with ``error_code`` is queued; close the connection."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class StreamClosed(Exception):
    """Sending on a stream that is closed (reset by either side, or already ended)."""


class Handler(Protocol):
    """What the connection tells its owner, from inside :meth:`ServerConnection.receive`.

    Each call comes after the connection's state has taken the frame in (a request whose
    HEADERS carried END_STREAM is already half-closed when ``on_request`` runs). The handler
    may send (and reset) from inside these calls.
    """

    def on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def on_data(self, stream_id: int, data: bytes) -> None: ...

    def on_end(self, stream_id: int) -> None: ...

    def on_reset(self, stream_id: int) -> None:
        """The stream is gone (the client reset it, or we did for a stream error)."""

    def on_window(self) -> None:
        """A WINDOW_UPDATE or SETTINGS arrived: blocked output may be able to go on."""


class _Detached:
    """The handler of a connection that is over: it ignores everything."""

    def on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        pass

    def on_data(self, stream_id: int, data: bytes) -> None:
        pass

    def on_end(self, stream_id: int) -> None:
        pass

    def on_reset(self, stream_id: int) -> None:
        pass

    def on_window(self) -> None:
        pass


_DETACHED: Final = _Detached()


class _Stream:
    """What one open stream needs: its windows and which sides have ended."""

    __slots__ = (
        "local_closed",
        "receive_unacked",
        "receive_window",
        "remote_closed",
        "send_window",
    )

    def __init__(self, send_window: int, receive_window: int) -> None:
        self.send_window = send_window
        self.receive_window = receive_window
        self.receive_unacked = 0
        self.remote_closed = False
        self.local_closed = False


class ServerConnection:
    """One connection's HTTP/2 state: feed it bytes, take its output, send through it.

    Not thread-safe and not async: the caller runs :meth:`receive` and the send methods
    from one event loop, never concurrently.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_concurrent_streams: int,
        stream_window: int,
        connection_window: int,
        max_frame_size: int,
        max_header_list_size: int,
    ) -> None:
        self._handler: Handler = handler
        self._max_streams = max_concurrent_streams
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._max_inbound_frame = max_frame_size
        self._max_header_block = max_header_list_size
        self._decoder = CachingDecoder()
        self._decoder.max_header_list_size = max_header_list_size
        self.streams: dict[int, _Stream] = {}
        self._highest_stream_id = 0
        # Inbound bytes not yet parsed (at most one partial frame plus one read).
        self._data = b""
        self._pos = 0
        self._magic_left = CLIENT_MAGIC
        self._settings_seen = False
        self.preface_done = False
        # A header block waiting for CONTINUATION: (stream id, END_STREAM, fragments).
        self._block_stream = 0
        self._block_end_stream = False
        self._block = bytearray()
        # Our receive window for the connection, and what the handler consumed of it.
        self._receive_window = connection_window
        self._receive_unacked = 0
        # The peer's limits on what we send.
        self._send_window = DEFAULT_WINDOW
        self._initial_send_window = DEFAULT_WINDOW
        self.max_outbound_frame_size = DEFAULT_FRAME_SIZE
        self._table_size_changed = False
        self._out = bytearray()
        self.goaway_sent = False

    def detach(self) -> None:
        """Forget the handler and every buffer: the connection is over.

        The handler usually holds this object, so the two form a reference cycle; breaking
        it frees what they hold at once rather than at the next full garbage collection.
        """
        self._handler = _DETACHED
        self.streams.clear()
        self._data = b""
        self._pos = 0
        self._block = bytearray()
        self._out = bytearray()

    # -- output ---------------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue our preface: SETTINGS (effective at once for what we accept) and the
        connection window's increase."""
        settings = b"".join(
            _SETTING.pack(code, value)
            for code, value in (
                (MAX_CONCURRENT_STREAMS, self._max_streams),
                (INITIAL_WINDOW_SIZE, self._stream_window),
                (MAX_FRAME_SIZE, self._max_inbound_frame),
                (MAX_HEADER_LIST_SIZE, self._max_header_block),
            )
        )
        self._out += frame_header(len(settings), SETTINGS, 0, 0) + settings
        if self._connection_window > DEFAULT_WINDOW:
            self._window_update(0, self._connection_window - DEFAULT_WINDOW)

    def data_to_send(self) -> bytes:
        """Everything queued for the peer, removed from the queue."""
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def output_bytes(self) -> int:
        return len(self._out)

    def send_window(self, stream_id: int) -> int:
        """Bytes of DATA the flow-control windows allow on the stream now (0 if closed)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        return min(stream.send_window, self._send_window)

    @property
    def connection_send_window(self) -> int:
        return self._send_window

    def remote_closed(self, stream_id: int) -> bool:
        """True if the client has ended its side of the stream (or the stream is gone)."""
        stream = self.streams.get(stream_id)
        return stream is None or stream.remote_closed

    def send_headers(self, stream_id: int) -> None:
        """The response headers (``:status 200``, gRPC content type), not ending the stream."""
        self._open_for_sending(stream_id)
        block = self._header_block(RESPONSE_HEADER_BLOCK)
        self._out += frame_header(len(block), HEADERS, END_HEADERS, stream_id) + block

    def send_data(self, stream_id: int, data: bytes | memoryview) -> None:
        """One DATA frame; the caller keeps it within :meth:`send_window` and the frame size."""
        stream = self._open_for_sending(stream_id)
        size = len(data)
        if size > min(stream.send_window, self._send_window, self.max_outbound_frame_size):
            raise ValueError(f"{size} bytes of DATA exceed the window or the frame size")
        stream.send_window -= size
        self._send_window -= size
        self._out += frame_header(size, DATA, 0, stream_id)
        self._out += data

    def send_trailers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        """End the stream with a header block (trailers, or a whole trailers-only response)."""
        self._open_for_sending(stream_id)
        self._header_frames(stream_id, self._header_block(encode_fields(fields)))
        self._local_end(stream_id)

    def send_unary(self, stream_id: int, message: bytes, trailer_block: bytes) -> bool:
        """A whole response in one step: headers, one DATA frame, trailers.

        Returns False (and sends nothing) unless the client has ended the request and the
        message fits the windows and one frame; the caller then takes the general path.
        """
        stream = self.streams.get(stream_id)
        size = len(message)
        if (
            stream is None
            or not stream.remote_closed
            or stream.local_closed
            or self._table_size_changed
            or size > stream.send_window
            or size > self._send_window
            or size > self.max_outbound_frame_size
            or len(trailer_block) > self.max_outbound_frame_size
        ):
            return False
        self._send_window -= size
        del self.streams[stream_id]
        header = frame_header(len(RESPONSE_HEADER_BLOCK), HEADERS, END_HEADERS, stream_id)
        self._out += b"".join(
            (
                header,
                RESPONSE_HEADER_BLOCK,
                frame_header(size, DATA, 0, stream_id),
                message,
                frame_header(len(trailer_block), HEADERS, END_HEADERS | END_STREAM, stream_id),
                trailer_block,
            )
        )
        return True

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Send RST_STREAM and forget the stream (no handler call: the caller knows)."""
        self.streams.pop(stream_id, None)
        self._out += frame_header(4, RST_STREAM, 0, stream_id) + _U32.pack(error_code)

    def close(self, error_code: int) -> None:
        """Queue GOAWAY (once); the caller closes the connection after sending it."""
        if self.goaway_sent:
            return
        self.goaway_sent = True
        payload = _U32.pack(self._highest_stream_id) + _U32.pack(error_code)
        self._out += frame_header(len(payload), GOAWAY, 0, 0) + payload

    def _open_for_sending(self, stream_id: int) -> _Stream:
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise StreamClosed(f"stream {stream_id} is closed")
        return stream

    def _local_end(self, stream_id: int) -> None:
        stream = self.streams[stream_id]
        stream.local_closed = True
        if stream.remote_closed:
            del self.streams[stream_id]

    def _header_block(self, block: bytes) -> bytes:
        if self._table_size_changed:
            self._table_size_changed = False
            return TABLE_SIZE_UPDATE_TO_ZERO + block
        return block

    def _header_frames(self, stream_id: int, block: bytes) -> None:
        """HEADERS with END_STREAM, and CONTINUATIONs if the block exceeds a frame."""
        limit = self.max_outbound_frame_size
        first, rest = block[:limit], block[limit:]
        flags = END_STREAM if rest else END_STREAM | END_HEADERS
        self._out += frame_header(len(first), HEADERS, flags, stream_id) + first
        while rest:
            part, rest = rest[:limit], rest[limit:]
            flags = 0 if rest else END_HEADERS
            self._out += frame_header(len(part), CONTINUATION, flags, stream_id) + part

    def _window_update(self, stream_id: int, increment: int) -> None:
        self._out += frame_header(4, WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)

    # -- input ----------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray, max_frames: int) -> bool:
        """Take bytes from the peer and process at most ``max_frames`` whole frames.

        Returns True if more whole frames may be waiting (call again with ``b""`` after
        letting others run), False once everything buffered has been processed. Raises
        :class:`ConnectionFailed` (with a GOAWAY queued) on a connection error.
        """
        if data:
            if not isinstance(data, bytes):
                data = bytes(data)  # so that payload slices are bytes the handler may keep
            if self._pos >= len(self._data):
                self._data = data
            else:
                self._data = self._data[self._pos :] + data
            self._pos = 0
        buffer = self._data
        pos = self._pos
        end = len(buffer)
        if self._magic_left:
            pos = self._check_magic(buffer, pos, end)
        frames = 0
        unpack = _FRAME_HEADER.unpack_from
        limit = self._max_inbound_frame
        try:
            while end - pos >= 9:
                high, low, kind, flags, stream_id = unpack(buffer, pos)
                length = (high << 8) | low
                if length > limit:
                    raise self._fail(
                        f"frame of {length} bytes exceeds the limit of {limit} bytes",
                        FRAME_SIZE_ERROR,
                    )
                if frames >= max_frames:
                    self._pos = pos
                    return True
                stop = pos + 9 + length
                if stop > end:
                    break
                payload = buffer[pos + 9 : stop]
                pos = stop
                self._pos = pos
                frames += 1
                stream_id &= 0x7FFFFFFF
                if self._block_stream and kind != CONTINUATION:
                    raise self._fail("header block interrupted", PROTOCOL_ERROR)
                if not self._settings_seen:
                    if kind != SETTINGS or flags & ACK:
                        raise self._fail("the client preface lacks SETTINGS", PROTOCOL_ERROR)
                    self._settings_seen = True
                if kind == DATA:
                    self._on_data(stream_id, flags, payload)
                elif kind == HEADERS:
                    self._on_headers(stream_id, flags, payload)
                else:
                    self._on_other(kind, flags, stream_id, payload)
                if not self.preface_done:
                    self.preface_done = True
        finally:
            self._pos = pos
        if pos >= end:
            self._data = b""
            self._pos = 0
        return False

    def _check_magic(self, buffer: bytes, pos: int, end: int) -> int:
        magic = self._magic_left
        step = min(len(magic), end - pos)
        if buffer[pos : pos + step] != magic[:step]:
            raise self._fail("invalid HTTP/2 connection preface", PROTOCOL_ERROR)
        self._magic_left = magic[step:]
        return pos + step

    def _fail(self, message: str, error_code: int) -> ConnectionFailed:
        self.close(error_code)
        return ConnectionFailed(message, error_code)

    def _stream_error(self, stream_id: int, error_code: int) -> None:
        known = stream_id in self.streams
        self.reset_stream(stream_id, error_code)
        if known:
            self._handler.on_reset(stream_id)

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise self._fail("DATA on stream 0", PROTOCOL_ERROR)
        size = len(payload)
        self._receive_window -= size
        if self._receive_window < 0:
            raise self._fail("DATA beyond the connection's flow-control window", FLOW_CONTROL_ERROR)
        # The handler consumes at once; give the connection window back in halves.
        self._receive_unacked += size
        if self._receive_unacked >= self._connection_window // 2:
            self._window_update(0, self._receive_unacked)
            self._receive_window += self._receive_unacked
            self._receive_unacked = 0
        if flags & PADDED:
            if not size or payload[0] >= size:
                raise self._fail("DATA padding longer than the frame", PROTOCOL_ERROR)
            payload = payload[1 : size - payload[0]]
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream is None and stream_id > self._highest_stream_id:
                raise self._fail(f"DATA on idle stream {stream_id}", PROTOCOL_ERROR)
            self._stream_error(stream_id, STREAM_CLOSED)
            return
        stream.receive_window -= size
        if stream.receive_window < 0:
            self._stream_error(stream_id, FLOW_CONTROL_ERROR)
            return
        end = bool(flags & END_STREAM)
        if end:
            stream.remote_closed = True
            if stream.local_closed:
                del self.streams[stream_id]
        else:
            stream.receive_unacked += size
            if stream.receive_unacked >= self._stream_window // 2:
                self._window_update(stream_id, stream.receive_unacked)
                stream.receive_window += stream.receive_unacked
                stream.receive_unacked = 0
        handler = self._handler
        if payload:
            handler.on_data(stream_id, payload)
        if end:
            handler.on_end(stream_id)

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise self._fail("HEADERS on stream 0", PROTOCOL_ERROR)
        start = 0
        stop = len(payload)
        if flags & PADDED:
            if not stop:
                raise self._fail("HEADERS padding longer than the frame", PROTOCOL_ERROR)
            start = 1
            stop -= payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if start > stop:
            raise self._fail("HEADERS padding longer than the frame", PROTOCOL_ERROR)
        fragment = payload[start:stop]
        if not flags & END_HEADERS:
            self._block_stream = stream_id
            self._block_end_stream = bool(flags & END_STREAM)
            self._append_block(fragment)
            return
        self._on_header_block(stream_id, bool(flags & END_STREAM), fragment)

    def _append_block(self, fragment: bytes) -> None:
        self._block += fragment
        if len(self._block) > self._max_header_block:
            raise self._fail("header block too long", ENHANCE_YOUR_CALM)

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if not self._block_stream or stream_id != self._block_stream:
            raise self._fail("unexpected CONTINUATION", PROTOCOL_ERROR)
        self._append_block(payload)
        if flags & END_HEADERS:
            block = bytes(self._block)
            self._block = bytearray()
            self._block_stream = 0
            self._on_header_block(stream_id, self._block_end_stream, block)

    def _on_header_block(self, stream_id: int, end_stream: bool, block: bytes) -> None:
        # Always decode first: HPACK is stateful, even for a block we refuse.
        try:
            headers: list[tuple[bytes, bytes]] = self._decoder.decode(block, raw=True)
        except hpack.HPACKError as exc:
            raise self._fail(f"header block: {exc}", COMPRESSION_ERROR) from None
        handler = self._handler
        stream = self.streams.get(stream_id)
        if stream is not None:
            # Trailers of the request: they may only end it.
            if stream.remote_closed or not end_stream:
                self._stream_error(stream_id, PROTOCOL_ERROR)
                return
            stream.remote_closed = True
            if stream.local_closed:
                del self.streams[stream_id]
            handler.on_end(stream_id)
            return
        if stream_id <= self._highest_stream_id:
            self._stream_error(stream_id, STREAM_CLOSED)
            return
        if not stream_id & 1:
            raise self._fail(f"client opened even stream {stream_id}", PROTOCOL_ERROR)
        self._highest_stream_id = stream_id
        if len(self.streams) >= self._max_streams:
            self.reset_stream(stream_id, REFUSED_STREAM)
            return
        stream = _Stream(self._initial_send_window, self._stream_window)
        stream.remote_closed = end_stream
        self.streams[stream_id] = stream
        handler.on_request(stream_id, headers)
        if end_stream:
            handler.on_end(stream_id)

    def _on_other(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        if kind == WINDOW_UPDATE:
            if size != 4:
                raise self._fail("WINDOW_UPDATE of the wrong size", FRAME_SIZE_ERROR)
            self._on_window_update(stream_id, _U32.unpack(payload)[0] & 0x7FFFFFFF)
        elif kind == SETTINGS:
            if stream_id:
                raise self._fail("SETTINGS on a stream", PROTOCOL_ERROR)
            if flags & ACK:
                if size:
                    raise self._fail("SETTINGS ACK with a payload", FRAME_SIZE_ERROR)
                return
            if size % 6:
                raise self._fail("SETTINGS of the wrong size", FRAME_SIZE_ERROR)
            self._on_settings(payload)
        elif kind == PING:
            if stream_id:
                raise self._fail("PING on a stream", PROTOCOL_ERROR)
            if size != 8:
                raise self._fail("PING of the wrong size", FRAME_SIZE_ERROR)
            if not flags & ACK:
                self._out += frame_header(8, PING, ACK, 0) + payload
        elif kind == RST_STREAM:
            if size != 4:
                raise self._fail("RST_STREAM of the wrong size", FRAME_SIZE_ERROR)
            self._check_not_idle(stream_id, "RST_STREAM")
            if self.streams.pop(stream_id, None) is not None:
                self._handler.on_reset(stream_id)
        elif kind == CONTINUATION:
            self._on_continuation(stream_id, flags, payload)
        elif kind == PRIORITY:
            if size != 5:
                raise self._fail("PRIORITY of the wrong size", FRAME_SIZE_ERROR)
            if not stream_id:
                raise self._fail("PRIORITY on stream 0", PROTOCOL_ERROR)
        elif kind == GOAWAY:
            # The client opens no more streams; those it has still get their responses.
            if stream_id:
                raise self._fail("GOAWAY on a stream", PROTOCOL_ERROR)
        elif kind == PUSH_PROMISE:
            raise self._fail("PUSH_PROMISE from a client", PROTOCOL_ERROR)
        # Unknown frame types are ignored (RFC 9113 section 4.1).

    def _check_not_idle(self, stream_id: int, what: str) -> None:
        if stream_id == 0 or stream_id > self._highest_stream_id:
            raise self._fail(f"{what} on idle stream {stream_id}", PROTOCOL_ERROR)

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            if not increment:
                raise self._fail("WINDOW_UPDATE of 0", PROTOCOL_ERROR)
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise self._fail("connection window over 2^31-1", FLOW_CONTROL_ERROR)
        else:
            self._check_not_idle(stream_id, "WINDOW_UPDATE")
            stream = self.streams.get(stream_id)
            if stream is None:
                return  # a late update for a stream that has ended: allowed, ignored
            if not increment:
                self._stream_error(stream_id, PROTOCOL_ERROR)
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                self._stream_error(stream_id, FLOW_CONTROL_ERROR)
                return
        self._handler.on_window()

    def _on_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload), 6):
            code, value = _SETTING.unpack_from(payload, offset)
            if code == HEADER_TABLE_SIZE:
                self._table_size_changed = True
            elif code == ENABLE_PUSH:
                if value > 1:
                    raise self._fail("ENABLE_PUSH not 0 or 1", PROTOCOL_ERROR)
            elif code == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise self._fail("INITIAL_WINDOW_SIZE over 2^31-1", FLOW_CONTROL_ERROR)
                delta = value - self._initial_send_window
                self._initial_send_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise self._fail("stream window over 2^31-1", FLOW_CONTROL_ERROR)
            elif code == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= LARGEST_FRAME_SIZE:
                    raise self._fail("MAX_FRAME_SIZE out of range", PROTOCOL_ERROR)
                self.max_outbound_frame_size = value
            # MAX_CONCURRENT_STREAMS limits pushes (we make none); MAX_HEADER_LIST_SIZE is
            # advisory and our header blocks are small; unknown settings are ignored.
        self._out += frame_header(0, SETTINGS, ACK, 0)
        self._handler.on_window()
