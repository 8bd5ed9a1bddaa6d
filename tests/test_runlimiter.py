"""RunLimiter: one thread limiter per trio run, with the tokens asked for."""

from __future__ import annotations

import trio

from trinit._runlimiter import RunLimiter


def test_one_limiter_per_run() -> None:
    limiter = RunLimiter("test_runlimiter", 3)
    seen: list[trio.CapacityLimiter] = []

    async def main() -> None:
        first = limiter.get()
        assert limiter.get() is first
        assert first.total_tokens == 3
        async with first:  # usable here: it belongs to this run
            assert first.borrowed_tokens == 1
        seen.append(first)

    trio.run(main)
    trio.run(main)
    assert len(seen) == 2 and seen[0] is not seen[1]
