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
"""

from __future__ import annotations

import sys
from typing import Any, Final

from trinit.errors import Code, TrinitError, to_status

__all__ = [
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


def _purerpc_status(exc: BaseException) -> Any:
    """The status of a purerpc ``RpcFailedError``, else None.

    purerpc is not imported for this: its package import costs the agent's start ~15 ms
    (its client and anyio), and an exception of purerpc's can only exist once purerpc's
    exceptions module has been imported by whoever raised it.
    """
    exceptions = sys.modules.get("purerpc.grpclib.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.RpcFailedError):
        return exc.status
    return None


def status_of(exc: BaseException) -> tuple[Code, str]:
    """The (code, message) a handler's exception becomes.

    purerpc's own status exceptions (the generated base class raises ``UnimplementedError``)
    keep their status; everything else goes through :func:`trinit.errors.to_status`.
    """
    exc = _single_leaf(exc)
    status = _purerpc_status(exc)
    if status is not None:
        try:
            code = Code(status.int_value)
        except ValueError:
            code = Code.UNKNOWN
        return code, str(status.status_message or "")
    return to_status(exc)


def is_expected(exc: BaseException) -> bool:
    """True for errors that carry their own status (not a bug in a handler)."""
    leaf = _single_leaf(exc)
    return isinstance(leaf, TrinitError) or _purerpc_status(leaf) is not None


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
