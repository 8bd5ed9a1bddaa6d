"""CachingDecoder decodes exactly as hpack's Decoder does, whatever the encoder's table does."""

from __future__ import annotations

import random

import hpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from trinit.rpc._hpack import CachingDecoder


def _blocks(seed: int) -> list[bytes]:
    """Header blocks of a stateful encoder: repeats, new values, table resizes, evictions."""
    rng = random.Random(seed)
    encoder = hpack.Encoder()
    blocks = []
    for step in range(600):
        if step % 97 == 50:
            encoder.header_table_size = rng.choice([0, 256, 4096])
        headers = [
            (b":method", b"POST"),
            (b":path", rng.choice([b"/S/Getenv", b"/S/Setenv", b"/S/Stat"])),
            (b"grpc-timeout", rng.choice([b"10S", b"9999m", b"5S", str(step).encode() + b"u"])),
            (b"x-big", b"v" * rng.choice([1, 100, 3000])),
        ]
        blocks.append(encoder.encode(headers))
    return blocks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_caching_decoder_matches_hpack(seed: int) -> None:
    plain, caching = hpack.Decoder(), CachingDecoder()
    hits = 0
    for block in _blocks(seed):
        hits += bytes(block) in caching._decoded
        assert caching.decode(block, raw=True) == plain.decode(block, raw=True)
        assert list(caching.header_table.dynamic_entries) == list(
            plain.header_table.dynamic_entries
        )
    assert hits > 0


def test_repeated_indexed_block_is_served_from_the_cache() -> None:
    encoder, decoder = hpack.Encoder(), CachingDecoder()
    headers = [(b":path", b"/S/Getenv"), (b"grpc-timeout", b"10S")]
    first = decoder.decode(encoder.encode(headers), raw=True)
    block = encoder.encode(headers)  # now all references into the dynamic table
    assert decoder.decode(block, raw=True) == first
    assert bytes(block) in decoder._decoded
    decoder.max_header_list_size = 10  # a changed limit is never answered from the cache
    with pytest.raises(hpack.OversizedHeaderListError):
        decoder.decode(block, raw=True)
