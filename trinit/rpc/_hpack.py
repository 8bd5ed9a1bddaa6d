"""HPACK for the server: response header blocks that never use the dynamic table, and a
request decoder that reuses the decoding of repeated blocks.

Why: hpack's ``Encoder`` searches the 61-entry static table linearly for every header and
logs each one, which costs more than the rest of a trivial RPC's send path. Our responses
only ever carry a handful of fields (``:status``, ``content-type``, ``grpc-status``,
``grpc-message``), so we emit them as static-table indexed fields or "literal header field
without indexing" (RFC 7541 6.1, 6.2.2). Neither reads nor changes the dynamic table, so an
encoding computed once stays valid for every connection and can be cached, and the common
blocks are constants (``RESPONSE_HEADER_BLOCK``, ``OK_TRAILER_BLOCK``).

Invariants:
- Output is plain RFC 7541 that any decoder accepts; no Huffman coding.
- When the peer has changed SETTINGS_HEADER_TABLE_SIZE, the next block must start with a
  dynamic table size update: the connection prefixes ``TABLE_SIZE_UPDATE_TO_ZERO``
  (``_http2``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import hpack  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "OK_TRAILER_BLOCK",
    "RESPONSE_HEADER_BLOCK",
    "TABLE_SIZE_UPDATE_TO_ZERO",
    "CachingDecoder",
    "encode_fields",
    "encode_literal",
]

# Static table entries (RFC 7541 appendix A) that we may use.
_STATIC_FIELDS: Final = {(b":status", b"200"): 8}
_STATIC_NAMES: Final = {b":status": 8, b"content-type": 31}
_CACHE_LIMIT: Final = 64
# Header blocks the decoder remembers: at most this many, each at most this long (bytes of
# the encoded block), so the cache holds a few KiB per connection whatever a peer sends.
_DECODE_CACHE_ENTRIES: Final = 32
_DECODE_CACHE_BLOCK_BYTES: Final = 512


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1 integer with an N-bit prefix; ``first`` holds the high flag bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0x00) + data


def encode_literal(name: bytes, value: bytes) -> bytes:
    """One header field, as indexed (static table only) or literal without indexing."""
    index = _STATIC_FIELDS.get((name, value))
    if index is not None:
        return _integer(index, 7, 0x80)
    name_index = _STATIC_NAMES.get(name)
    if name_index is not None:
        return _integer(name_index, 4, 0x00) + _string(value)
    return b"\x00" + _string(name) + _string(value)


def encode_fields(fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A header block of ``fields`` that leaves the dynamic table alone (cached per field).

    ``grpc-message`` values (free text) are not cached, so the cache stays bounded.
    """
    cache = _field_cache
    parts = []
    for name, value in fields:
        key = (name, value)
        block = cache.get(key)
        if block is None:
            block = encode_literal(name, value)
            if name != b"grpc-message" and len(cache) < _CACHE_LIMIT:
                cache[key] = block
        parts.append(block)
    return b"".join(parts)


_field_cache: dict[tuple[bytes, bytes], bytes] = {}

# The response headers of every gRPC response, and the trailers of a successful one.
RESPONSE_HEADER_BLOCK: Final = encode_fields(
    ((b":status", b"200"), (b"content-type", b"application/grpc"))
)
OK_TRAILER_BLOCK: Final = encode_fields(((b"grpc-status", b"0"),))
# "Dynamic table size update" to 0 (RFC 7541 6.3): our table is always empty, so 0 is the
# exact size, and no value is smaller than whatever the peer's new limit is.
TABLE_SIZE_UPDATE_TO_ZERO: Final = _integer(0, 5, 0x20)


class CachingDecoder(hpack.Decoder):  # type: ignore[misc]
    """hpack's ``Decoder`` that remembers the header lists of recent header blocks.

    Why: grpc-core sends the request headers of repeated calls (``:path``, ``grpc-timeout``
    and the rest) as references into HPACK's dynamic table, so consecutive calls of one
    method usually carry the very same few bytes of header block; hpack's pure-Python
    decoder (a log call and several objects per field) was the largest single cost of
    receiving a small request.

    Why it is correct: decoding is a function of the block's bytes and the dynamic table.
    The table changes only through representations that insert (literal with incremental
    indexing) or resize it (size update), and a block's decode also depends on the limits
    ``max_header_list_size`` and ``max_allowed_table_size``. So a block whose decode left
    the table untouched, under the same limits, decodes to the same list again; any block
    that changed the table (seen as a new newest entry, a different size or maximum) or a
    change of the limits empties the cache. Every block still goes through hpack the first
    time, with all of its checks (header list size, table size, malformed input).

    Bounds: at most ``_DECODE_CACHE_ENTRIES`` blocks of at most
    ``_DECODE_CACHE_BLOCK_BYTES`` bytes each, and their decoded lists.
    """

    def __init__(self) -> None:
        super().__init__()
        self._decoded: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self._limits: tuple[int, int] = (0, 0)

    def _table_state(self) -> tuple[object, int, int]:
        table = self.header_table
        entries = table.dynamic_entries
        return (entries[0] if entries else None, table._current_size, table.maxsize)

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        cache = self._decoded
        limits = (self.max_header_list_size, self.max_allowed_table_size)
        if limits != self._limits:
            cache.clear()
            self._limits = limits
        if raw:
            key = bytes(data)
            hit = cache.get(key)
            if hit is not None:
                return list(hit)
        before = self._table_state()
        headers: list[Any] = super().decode(data, raw)
        after = self._table_state()
        # ``is`` for the newest entry: an insertion always makes a new tuple object.
        if after[0] is not before[0] or after[1:] != before[1:]:
            cache.clear()
        elif raw and len(data) <= _DECODE_CACHE_BLOCK_BYTES:
            if len(cache) >= _DECODE_CACHE_ENTRIES:
                del cache[next(iter(cache))]
            cache[key] = tuple(headers)
        return headers
