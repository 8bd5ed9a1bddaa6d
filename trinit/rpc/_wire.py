"""gRPC-over-HTTP/2 wire details that need no I/O: framing, headers, deadlines, statuses.

Everything here is pure (no trio, no sockets), so the connection code in ``_adapter`` only
moves bytes and tasks, and these rules are tested without an event loop.

Invariants:
- A request is never buffered past the limit: :class:`UnaryRequestReader` rejects a message
  as soon as its 5-byte length prefix says it is larger than ``max_message_bytes``, before
  its body arrives (purerpc checks the same prefix but raises the error out of its
  connection loop, which kills every RPC on the connection; here it fails one RPC).
- Status messages sent to the host are one line of text; tracebacks and reprs never reach
  the wire (:func:`status_of`).
- A frame is never buffered past the advertised frame size: :class:`FrameScanner` reads
  each 9-byte frame header as it arrives and rejects an oversized length before the
  frame's payload is asked for (h2 3.2's own check runs only once the whole frame has been
  buffered).
"""

from __future__ import annotations

from typing import Final

from purerpc.grpclib.exceptions import RpcFailedError

from trinit.errors import Code, TrinitError, to_status

__all__ = [
    "FrameScanner",
    "FramingError",
    "MessageTooLarge",
    "ProtocolViolation",
    "RequestBufferFull",
    "UnaryRequestReader",
    "encode_grpc_message",
    "frame_message",
    "parse_grpc_timeout",
    "status_of",
    "trailers",
    "trailers_only",
]

PREFIX_BYTES: Final = 5

# The client connection preface's fixed part (RFC 9113 section 3.4); a SETTINGS frame follows.
CLIENT_MAGIC: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_BYTES: Final = 9
# RFC 9113 section 7 error codes used for connection errors found here.
PROTOCOL_ERROR: Final = 0x1
FRAME_SIZE_ERROR: Final = 0x6

RESPONSE_HEADERS: Final = (
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
)

# gRPC's grpc-timeout units, in seconds per unit.
_TIMEOUT_UNITS: Final = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}

# Bytes that grpc-message may carry unescaped: printable ASCII except '%' (gRPC HTTP/2 spec).
_PLAIN: Final = frozenset(range(0x20, 0x7F)) - {ord("%")}

_MESSAGE_LIMIT: Final = 1024


class MessageTooLarge(TrinitError):
    """An inbound message is larger than the server accepts (fails only its own RPC)."""

    code = Code.RESOURCE_EXHAUSTED


class ProtocolViolation(TrinitError):
    """The client broke the gRPC framing rules for one RPC (not the whole connection)."""

    code = Code.INTERNAL


class RequestBufferFull(TrinitError):
    """A connection holds too many bytes of unfinished requests; the one that would add
    more fails (the others, already buffered, go on)."""

    code = Code.RESOURCE_EXHAUSTED


class FramingError(Exception):
    """The peer broke HTTP/2 framing: a connection error (``error_code`` for the GOAWAY)."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


def parse_grpc_timeout(value: bytes) -> float:
    """Seconds in a ``grpc-timeout`` header value (1-8 ASCII digits and a unit).

    Raises :class:`ValueError` for a malformed value.
    """
    digits = value[:-1]
    scale = _TIMEOUT_UNITS.get(value[-1]) if value else None
    if scale is None or not digits.isdigit() or len(digits) > 8:
        raise ValueError(f"malformed grpc-timeout {value!r}")
    return int(digits) * scale


def encode_grpc_message(text: str) -> bytes:
    """Percent-encode a status message as the ``grpc-message`` header wants it.

    The message is cut to one line and at most 1 KiB of text, so a runaway error string
    cannot blow up the header block.
    """
    line = text.strip().splitlines()[0] if text.strip() else ""
    raw = line[:_MESSAGE_LIMIT].encode("utf-8", "replace")
    if all(byte in _PLAIN for byte in raw):
        return raw
    return b"".join(bytes((byte,)) if byte in _PLAIN else b"%%%02X" % byte for byte in raw)


def trailers(code: Code, message: str) -> list[tuple[bytes, bytes]]:
    """Trailers that end a response whose headers were already sent."""
    fields = [(b"grpc-status", b"%d" % code)]
    if message:
        fields.append((b"grpc-message", encode_grpc_message(message)))
    return fields


def trailers_only(code: Code, message: str) -> list[tuple[bytes, bytes]]:
    """A whole response in one HEADERS frame: response headers plus the status."""
    return [*RESPONSE_HEADERS, *trailers(code, message)]


def frame_message(payload: bytes) -> bytes:
    """A length-prefixed gRPC message (never compressed)."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def _single_leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (a handler's nursery wraps it)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def status_of(exc: BaseException) -> tuple[Code, str]:
    """The (code, message) a handler's exception becomes.

    purerpc's own status exceptions (the generated base class raises ``UnimplementedError``)
    keep their status; everything else goes through :func:`trinit.errors.to_status`.
    """
    exc = _single_leaf(exc)
    if isinstance(exc, RpcFailedError):
        status = exc.status
        try:
            code = Code(status.int_value)
        except ValueError:
            code = Code.UNKNOWN
        return code, str(status.status_message or "")
    return to_status(exc)


def is_expected(exc: BaseException) -> bool:
    """True for errors that carry their own status (not a bug in a handler)."""
    return isinstance(_single_leaf(exc), TrinitError | RpcFailedError)


class UnaryRequestReader:
    """Collects the single request message of an RPC from its DATA chunks.

    Feed every chunk with :meth:`feed`; call :meth:`finish` at END_STREAM. Both raise
    :class:`MessageTooLarge` or :class:`ProtocolViolation`, after which the reader must be
    dropped (the caller answers the RPC with that status and discards the rest).
    """

    __slots__ = ("_buffer", "_max_message_bytes", "_message")

    def __init__(self, max_message_bytes: int) -> None:
        self._max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._message: bytes | None = None

    def feed(self, chunk: bytes) -> None:
        if self._message is not None:
            raise ProtocolViolation("more than one request message for a unary request")
        buffer = self._buffer
        if not buffer and len(chunk) >= PREFIX_BYTES:
            # Common case: the whole message arrives in one DATA frame; slice once.
            length = self._check_prefix(chunk)
            if len(chunk) == PREFIX_BYTES + length:
                self._message = chunk[PREFIX_BYTES:]
                return
        buffer += chunk
        if len(buffer) < PREFIX_BYTES:
            return
        length = self._check_prefix(buffer)
        end = PREFIX_BYTES + length
        if len(buffer) > end:
            raise ProtocolViolation("more than one request message for a unary request")
        if len(buffer) == end:
            self._message = bytes(buffer[PREFIX_BYTES:])
            self._buffer = bytearray()

    def finish(self) -> bytes:
        if self._message is None:
            raise ProtocolViolation("request ended before a complete message arrived")
        return self._message

    def _check_prefix(self, data: bytes | bytearray) -> int:
        if data[0] != 0:
            raise ProtocolViolation("compressed request messages are not supported")
        length = int.from_bytes(data[1:PREFIX_BYTES], "big")
        if length > self._max_message_bytes:
            raise MessageTooLarge(
                f"request message of {length} bytes exceeds the limit of "
                f"{self._max_message_bytes} bytes"
            )
        return length


class FrameScanner:
    """Follows the frame boundaries of the byte stream a server receives.

    Why: h2 3.2's ``FrameBuffer`` appends every received byte to one buffer and checks a
    frame's length against SETTINGS_MAX_FRAME_SIZE only once the whole frame is there, so a
    header declaring 16 MiB makes it buffer up to 16 MiB before refusing it; and it copies
    its remaining input after every frame it parses, which is quadratic in the number of
    frames handed to it at once. Scanning the headers first lets the connection refuse an
    oversized frame from its header alone, and feed h2 batches of whole frames.

    :meth:`scan` only looks at the 24-byte client magic and at frame headers' lengths;
    everything else is h2's business. It keeps a header split across chunks (at most 8
    bytes) and nothing else.
    """

    __slots__ = ("_header", "_limit", "_magic_left", "_payload_left", "_started", "preface_done")

    def __init__(self, max_frame_size: int) -> None:
        self._limit = max_frame_size
        self._magic_left = CLIENT_MAGIC
        self._header = b""
        self._payload_left = 0
        self._started = False
        # True once the client magic and the whole first frame (its SETTINGS) have arrived.
        self.preface_done = False

    def scan(self, data: bytes | bytearray, start: int, max_frames: int) -> int:
        """Where a batch of ``data[start:]`` ends that begins at most ``max_frames`` frames.

        Returns ``len(data)`` or the offset of the first frame header past the batch.
        Raises :class:`FramingError` for a wrong client magic or a frame longer than the
        limit; the connection must then be closed.
        """
        pos = start
        end = len(data)
        if self._magic_left:
            magic = self._magic_left
            step = min(len(magic), end - pos)
            if data[pos : pos + step] != magic[:step]:
                raise FramingError("invalid HTTP/2 connection preface", PROTOCOL_ERROR)
            pos += step
            self._magic_left = magic[step:]
        frames = 0
        while pos < end:
            left = self._payload_left
            if left:
                step = min(left, end - pos)
                pos += step
                self._payload_left = left - step
                continue
            if frames >= max_frames:
                break
            header = self._header
            if header or end - pos < FRAME_HEADER_BYTES:
                step = min(FRAME_HEADER_BYTES - len(header), end - pos)
                header += data[pos : pos + step]
                pos += step
                if len(header) < FRAME_HEADER_BYTES:
                    self._header = header
                    break
                self._header = b""
                length = int.from_bytes(header[:3], "big")
            else:
                length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
                pos += FRAME_HEADER_BYTES
            if length > self._limit:
                raise FramingError(
                    f"frame of {length} bytes exceeds the limit of {self._limit} bytes",
                    FRAME_SIZE_ERROR,
                )
            self._payload_left = length
            self._started = True
            frames += 1
        if not self.preface_done and self._started and not self._payload_left:
            self.preface_done = not self._header
        return pos
