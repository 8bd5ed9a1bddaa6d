"""Bulk stretches of the stdio pumps (``trinit.io._bulk``): real pipes, sockets and threads.

A stream that keeps moving data continues in a worker thread. What must hold: every byte
arrives once and in order, a cancellation or a drain deadline ends a stretch at once even
while the thread waits for a stalled side, no thread outlives its pump, a paused stream
gives its thread back, and no more than BULK_THREADS stretches run at once.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

import pytest
import trio
import trio.testing
from iolib import (
    random_bytes,
    read_blocking,
    receive_all,
    stream_pair,
    through_output_pump,
    write_blocking,
)

import trinit.io._bulk as bulk
from trinit.io import InputPump, OutputPump, make_pipe

MiB = 1 << 20

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def _produce_until(stop: threading.Event, fd: int, chunk: bytes) -> None:
    """Write ``chunk`` over and over until ``stop`` is set or the reader is gone; never
    blocks for more than 0.1 s at a time, so a failing test cannot hang on it."""
    os.set_blocking(fd, False)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    view = memoryview(chunk)
    while not stop.is_set():
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            poller.poll(100)
            continue
        except BrokenPipeError:
            return
        view = view[written:] or memoryview(chunk)


async def _until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` (state a worker thread changes: no event to wait on)."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


async def test_output_stretch_moves_exact_bytes() -> None:
    data = random_bytes(24 * MiB)
    pumped = await through_output_pump(data)
    assert pumped.received == data
    assert pumped.pump.bulk_stretches >= 1
    assert pumped.pump.bytes_moved == len(data)
    assert bulk.bulk_limiter().borrowed_tokens == 0


async def test_input_stretch_then_close_stdin_delivers_everything() -> None:
    data = random_bytes(24 * MiB)
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    received: list[bytes] = []
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)

        async def reader() -> None:
            with read_end:
                received.append(await trio.to_thread.run_sync(read_blocking, read_end.fileno()))

        nursery.start_soon(reader)
        await host.send_all(data)
        await _until(lambda: pump.bulk_stretches >= 1 or pump.bytes_moved == len(data))
        await host.send_all(b"and the last words")
        await pump.close_stdin()  # wakes a running stretch; the loop delivers the rest
    assert received == [data + b"and the last words"]
    assert pump.bulk_stretches >= 1
    assert bulk.bulk_limiter().borrowed_tokens == 0


async def test_cancel_ends_a_stretch_waiting_for_a_stalled_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host stops reading mid-stretch; the thread waits for the socket (for a minute,
    were it not woken). Cancelling the pump must end the wait at once and close both ends."""
    monkeypatch.setattr(bulk, "QUIET", 60.0)
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    stop = threading.Event()
    pump_scope = trio.CancelScope()

    async def run_pump() -> None:
        with pump_scope:
            await pump.run()

    try:
        async with host, trio.open_nursery() as nursery:
            nursery.start_soon(
                trio.to_thread.run_sync, _produce_until, stop, write_end.fileno(), b"x" * MiB
            )
            nursery.start_soon(run_pump)
            received = 0
            with trio.fail_after(10):
                while received < 12 * MiB:  # into a stretch, then stop reading
                    received += len(await host.receive_some(MiB))
            await _until(lambda: bulk.bulk_limiter().borrowed_tokens == 1)
            await trio.sleep(0.3)  # the socket fills up; the thread waits for it
            assert bulk.bulk_limiter().borrowed_tokens == 1
            started = trio.current_time()
            pump_scope.cancel()
            await _until(lambda: read_end.closed, within=5)
            assert trio.current_time() - started < 2.0
            stop.set()
    finally:
        stop.set()
        write_end.close()
    assert guest.socket.fileno() == -1
    assert bulk.bulk_limiter().borrowed_tokens == 0


async def test_grace_deadline_ends_a_stretch_waiting_for_the_source(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The process exited but a descendant holds the pipe and is silent: the thread waits
    for the pipe; the drain deadline must stop it at the grace, not after QUIET."""
    monkeypatch.setattr(bulk, "QUIET", 60.0)
    data = random_bytes(12 * MiB)
    read_end, write_end = make_pipe()  # write_end: the descendant's copy, held open
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    with write_end:
        async with host, trio.open_nursery() as nursery:
            nursery.start_soon(pump.run)
            nursery.start_soon(trio.to_thread.run_sync, write_blocking, write_end.fileno(), data)
            received = bytearray()
            while len(received) < len(data):
                received += await host.receive_some(MiB)
            assert bytes(received) == data
            await _until(lambda: bulk.bulk_limiter().borrowed_tokens == 1)
            started = trio.current_time()
            with caplog.at_level(logging.WARNING, logger="trinit.io._pump"):
                pump.process_exited(0.2)
                assert await host.receive_some(10) == b""
            assert 0.2 <= trio.current_time() - started < 2.0
    assert "truncated" in caplog.text
    assert pump.bulk_stretches == 1
    assert bulk.bulk_limiter().borrowed_tokens == 0


async def test_a_paused_stream_gives_its_thread_back() -> None:
    """A stream that pauses longer than QUIET returns to the loop, still open."""
    first, second = random_bytes(8 * MiB), random_bytes(6 * MiB)
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        with write_end:
            nursery.start_soon(trio.to_thread.run_sync, write_blocking, write_end.fileno(), first)
            received = bytearray()
            while len(received) < len(first):
                received += await host.receive_some(MiB)
            # the stretch ends once the source has been quiet for QUIET seconds
            await _until(lambda: bulk.bulk_limiter().borrowed_tokens == 0)
            assert pump.bulk_stretches == 1
            assert not read_end.closed
            await trio.to_thread.run_sync(write_blocking, write_end.fileno(), second)
        received += await receive_all(host)
    assert bytes(received) == first + second


async def test_stretches_at_once_are_bounded() -> None:
    """More busy streams than bulk threads: every byte arrives, and never more than
    BULK_THREADS stretches run at once (the others stay on the event loop)."""
    streams = bulk.BULK_THREADS + 2
    payloads = [random_bytes(16 * MiB) for _ in range(streams)]
    most = 0
    results: dict[int, bytes] = {}
    async with trio.open_nursery() as nursery:

        async def sample() -> None:
            nonlocal most
            while True:
                most = max(most, bulk.bulk_limiter().borrowed_tokens)
                await trio.sleep(0.001)

        nursery.start_soon(sample)
        async with trio.open_nursery() as transfers:
            for index, payload in enumerate(payloads):
                transfers.start_soon(_transfer, index, payload, results)
        nursery.cancel_scope.cancel()
    assert results == dict(enumerate(payloads))
    assert 1 <= most <= bulk.BULK_THREADS


async def _transfer(index: int, payload: bytes, results: dict[int, bytes]) -> None:
    results[index] = (await through_output_pump(payload, f"stdout {index}")).received


async def test_host_gone_mid_stretch_ends_the_pump() -> None:
    """The host closes its socket while the thread splices: the error ends the copy."""
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    stop = threading.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                trio.to_thread.run_sync, _produce_until, stop, write_end.fileno(), b"y" * MiB
            )
            nursery.start_soon(pump.run)
            received = 0
            with trio.fail_after(10):
                while received < 12 * MiB:
                    received += len(await host.receive_some(MiB))
            await host.aclose()
            await _until(lambda: read_end.closed, within=5)
            stop.set()
    finally:
        stop.set()
        write_end.close()
    assert bulk.bulk_limiter().borrowed_tokens == 0


def test_wake_without_a_stretch_is_a_no_op() -> None:
    bulk.BulkMove().wake()


async def test_no_thread_when_every_token_is_taken() -> None:
    """``run`` returns None at once, without a thread, when the limiter is exhausted."""
    limiter = bulk.bulk_limiter()
    borrowers = [object() for _ in range(bulk.BULK_THREADS)]
    for borrower in borrowers:
        limiter.acquire_on_behalf_of_nowait(borrower)
    try:
        read_end, write_end = make_pipe()
        with read_end, write_end:
            other_r, other_w = make_pipe()
            with other_r, other_w:
                moved = await bulk.BulkMove().run(
                    read_end.fileno(), other_w.fileno(), lambda count: None
                )
        assert moved is None
    finally:
        for borrower in borrowers:
            limiter.release_on_behalf_of(borrower)
