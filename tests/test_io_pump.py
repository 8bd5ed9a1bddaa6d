"""Stdio pumps over real pipes, sockets and child processes."""

from __future__ import annotations

import fcntl
import logging
import os
import select
import socket

import pytest
import trio
import trio.testing
from iolib import (
    random_bytes,
    read_blocking,
    receive_all,
    spawn_python,
    stream_pair,
    through_output_pump,
    write_blocking,
)

from trinit.io import InputPump, OutputPump, OwnedFd, make_pipe
from trinit.io import _copy as copy_module
from trinit.io._copy import Copier, Ending, SpliceMode

KiB = 1024
MiB = 1024 * KiB

pytestmark = pytest.mark.usefixtures("no_fd_leak")


# -- OutputPump -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 128 * KiB, 10 * MiB])
async def test_output_exact_bytes(size: int) -> None:
    data = random_bytes(size)
    pumped = await through_output_pump(data)
    assert pumped.received == data
    assert pumped.pump.bytes_moved == size
    assert pumped.pump._copier.method == "splice"
    assert pumped.read_end.closed
    assert pumped.socket.socket.fileno() == -1


async def test_writer_that_exits_at_once_loses_nothing() -> None:
    """A process writes 1 MiB and exits before anyone reads: the pipe holds it all."""
    size = MiB
    read_end, write_end = make_pipe()
    script = (
        "import os\n"
        f"data = bytes(i % 251 for i in range({size}))\n"
        "v = memoryview(data)\n"
        "while v: v = v[os.write(1, v):]\n"
    )
    with write_end:
        child = await trio.to_thread.run_sync(spawn_python, script, write_end.fileno())
    assert await trio.to_thread.run_sync(child.wait) == 0
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        assert await receive_all(host) == bytes(i % 251 for i in range(size))


async def test_output_backpressure_bounds_what_is_accepted() -> None:
    """A host that does not read stops the writer; nothing piles up in trinit."""
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    os.set_blocking(write_end.fileno(), False)
    chunk = random_bytes(64 * KiB)
    written: list[bytes] = []
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        # Fill until the pipe stays full even after the pump had every chance to move data.
        while True:
            progressed = False
            while True:
                try:
                    count = os.write(write_end.fileno(), chunk)
                except BlockingIOError:
                    break
                written.append(chunk[:count])
                progressed = True
            await trio.testing.wait_all_tasks_blocked()
            if not progressed:
                break
            assert sum(map(len, written)) < 64 * MiB, "writer never blocked"
        accepted = sum(map(len, written))
        print(f"accepted {accepted} moved {pump.bytes_moved}")
        # Pipe (1 MiB) plus the socket's buffers; the pump itself holds nothing.
        assert accepted <= PIPE_AND_SOCKET_LIMIT
        assert pump.bytes_moved <= accepted
        write_end.close()
        assert await receive_all(host) == b"".join(written)


PIPE_AND_SOCKET_LIMIT = 16 * MiB  # splice fills pipe slots with up to 32 KiB each


async def test_output_host_gone_ends_pump_and_closes_pipe() -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    await host.aclose()
    with write_end:
        os.write(write_end.fileno(), b"nobody listens")
        await pump.run()
        assert read_end.closed
        with pytest.raises(BrokenPipeError):
            os.write(write_end.fileno(), b"x")


async def test_output_cancel_closes_both() -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    async with host:
        with write_end, trio.move_on_after(0.01):
            await pump.run()
        assert read_end.closed
        assert guest.socket.fileno() == -1
        assert await host.receive_some(10) == b""


async def test_output_grace_stops_a_pipe_held_open(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A descendant holds the write end and never writes: the pump stops at exactly grace."""
    read_end, write_end = make_pipe()  # write_end plays the descendant's inherited copy
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    finished_at: list[float] = []
    with write_end:
        os.write(write_end.fileno(), b"before exit")
        async with host, trio.open_nursery() as nursery:

            async def run() -> None:
                await pump.run()
                finished_at.append(trio.current_time())

            nursery.start_soon(run)
            assert await host.receive_some(100) == b"before exit"
            await trio.testing.wait_all_tasks_blocked()
            exited_at = trio.current_time()
            with caplog.at_level(logging.WARNING, logger="trinit.io._pump"):
                pump.process_exited(2.5)
                assert await host.receive_some(100) == b""
        assert finished_at == [exited_at + 2.5]
        assert "truncated" in caplog.text
        pump.process_exited(1.0)  # after the end: no effect, no error


async def test_output_grace_never_drops_what_the_pipe_holds(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The process exited with more output than the host has taken yet, and the host reads
    nothing for longer than the grace: every byte still arrives, then EOF. The grace bounds
    only the wait for a pipe that is empty but still held open (a descendant). It was a
    deadline on the whole copy, and an audit measured 974,848 bytes lost after a 4 s stall of
    the host's reader (exit code 0, no error anywhere)."""
    read_end, write_end = make_pipe()
    fcntl.fcntl(write_end.fileno(), fcntl.F_SETPIPE_SZ, MiB)
    host, guest = stream_pair()
    pump = OutputPump("stdout", read_end, guest)
    # a small socket buffer, so most of the output waits in the pipe for the host
    guest.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KiB)
    payload = random_bytes(768 * KiB)
    assert os.write(write_end.fileno(), payload) == len(payload)
    write_end.close()  # the process exited; nothing else holds the pipe
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        await trio.testing.wait_all_tasks_blocked()  # the socket is full, the pipe is not
        assert pump.bytes_moved < len(payload) // 2
        with caplog.at_level(logging.WARNING, logger="trinit.io._pump"):
            pump.process_exited(2.0)
            await trio.sleep(10)  # the host reads nothing for 5 graces
            assert await receive_all(host) == payload
    assert "truncated" not in caplog.text


async def test_output_grace_not_used_when_pipe_closes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = OutputPump("stderr", read_end, guest)
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        pump.process_exited(10.0)
        os.write(write_end.fileno(), b"last words")
        write_end.close()
        assert await receive_all(host) == b"last words"
    assert trio.current_time() == start
    assert "truncated" not in caplog.text


async def test_output_falls_back_when_splice_refuses() -> None:
    """Not a pipe (a socket as the 'pipe'): splice says EINVAL, the buffered path moves it."""
    data = random_bytes(3 * MiB)
    source_writer, source_reader = socket.socketpair()
    host, guest = stream_pair()
    pump = OutputPump("stdout", OwnedFd(source_reader.detach()), guest)
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)

        def feed() -> None:
            with source_writer:
                source_writer.sendall(data)

        nursery.start_soon(trio.to_thread.run_sync, feed)
        assert await receive_all(host) == data
    assert pump._copier.method == "buffered"


async def test_copier_buffered_mode_exact() -> None:
    data = random_bytes(10 * MiB)
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    os.set_blocking(read_end.fileno(), False)
    copier = Copier(read_end, guest.socket, SpliceMode.NONE)
    async with host, trio.open_nursery() as nursery:

        async def copy() -> None:
            with read_end:
                assert (await copier.run()).ending is Ending.EOF
            await guest.aclose()

        nursery.start_soon(copy)

        async def writer() -> None:
            with write_end:
                await trio.to_thread.run_sync(write_blocking, write_end.fileno(), data)

        nursery.start_soon(writer)
        assert await receive_all(host) == data
    assert copier.bytes_moved == len(data)


async def test_copier_splices_again_when_data_arrives_after_a_failed_splice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A splice finds the pipe empty (EAGAIN) and the writer fills it before the copier asks
    which side was missing. The socket still has room, but poll does not call it writable
    (a unix socket is writable only below a quarter of its send buffer), so waiting for it
    would stall until the host drained it: the copier must splice again instead.

    Seen as a hang of test_a_paused_stream_gives_its_thread_back, whose host reads nothing
    while the second burst is written."""
    read_end, write_end = make_pipe()
    host, guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    queued = random_bytes(96 * KiB)
    late = random_bytes(4 * KiB)
    with read_end, host, guest:
        guest.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * KiB)
        guest.sendall(queued)  # room left, but above a quarter of the buffer
        guest.setblocking(False)
        assert not copy_module._poll_now(guest.fileno(), select.POLLOUT)
        os.set_blocking(read_end.fileno(), False)
        real_poll_now = copy_module._poll_now

        def data_arrives_first(fd: int, events: int) -> int:
            if not write_end.closed:  # the first failed splice: the writer gets in
                with write_end:
                    os.write(write_end.fileno(), late)
            return real_poll_now(fd, events)

        monkeypatch.setattr(copy_module, "_poll_now", data_arrives_first)
        copier = Copier(read_end, guest, SpliceMode.SRC_IS_PIPE)
        with trio.fail_after(10):  # a bound for the hang, not a timing check
            outcome = await copier.run()
        assert outcome.ending is Ending.EOF
        assert write_end.closed  # the splice did fail first
        guest.shutdown(socket.SHUT_WR)
        assert read_blocking(host.fileno()) == queued + late


# -- InputPump ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 128 * KiB, 10 * MiB])
async def test_input_exact_bytes(size: int) -> None:
    data = random_bytes(size)
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    received: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)

        async def reader() -> None:
            with read_end:
                received.append(await trio.to_thread.run_sync(read_blocking, read_end.fileno()))

        nursery.start_soon(reader)
        async with host:
            await host.send_all(data)
            await host.send_eof()
            # The pump closes its socket after EOF: the host sees it close too.
            assert await host.receive_some(10) == b""
    assert received == [data]
    assert pump.bytes_moved == size
    assert pump._copier.method == "splice"
    assert write_end.closed


async def test_close_stdin_delivers_everything_already_sent_then_eof() -> None:
    """The host writes, never closes its side, and calls CloseProcessStdin at once."""
    data = random_bytes(3 * MiB)  # more than the pipe holds: delivery must wait for the reader
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    received: list[bytes] = []
    run_returned = trio.Event()
    async with host, trio.open_nursery() as nursery:

        async def run() -> None:
            await pump.run()
            run_returned.set()

        nursery.start_soon(run)

        async def reader() -> None:
            with read_end:
                received.append(await trio.to_thread.run_sync(read_blocking, read_end.fileno()))

        nursery.start_soon(reader)
        await host.send_all(data)
        await host.send_all(b"sent just before")
        await pump.close_stdin()
        assert write_end.closed
        await run_returned.wait()
        await pump.close_stdin()  # idempotent
    assert received == [data + b"sent just before"]


async def test_close_stdin_delivers_what_waits_behind_a_full_pipe_the_child_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A splice that finds the pipe full, with the child reading before the pump looks
    again, is not an empty socket: CloseProcessStdin still delivers every byte the host
    sent. (The child's read is made to fall exactly in that gap.)"""
    read_end, write_end = make_pipe()
    os.set_blocking(write_end.fileno(), False)
    filler = bytearray()
    while True:  # the child has not read yet: the pipe is full
        try:
            filler += b"f" * os.write(write_end.fileno(), b"f" * 65536)
        except BlockingIOError:
            break
    data = random_bytes(64 * KiB)
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    child_read = bytearray()
    real_poll_now = copy_module._poll_now

    def child_reads_first(fd: int, events: int) -> int:
        # the pump's first look after a splice that found no room: the child reads now
        if not child_read:
            child_read.extend(os.read(read_end.fileno(), 64 * KiB))
        return real_poll_now(fd, events)

    monkeypatch.setattr(copy_module, "_poll_now", child_reads_first)
    async with host:
        await host.send_all(data)
        with read_end:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump.close_stdin)
                rest = await trio.to_thread.run_sync(read_blocking, read_end.fileno())
    assert child_read  # the gap was hit
    assert bytes(child_read) + rest == bytes(filler) + data


async def test_close_stdin_before_run_and_after_end() -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    async with host:
        await host.send_all(b"early bytes")
        await pump.close_stdin()  # run() never started: close_stdin does the delivery
        with read_end:
            assert read_blocking(read_end.fileno()) == b"early bytes"
        await pump.run()  # returns at once
        await pump.close_stdin()


async def test_close_stdin_with_nothing_buffered_wakes_idle_run() -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    async with host, trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        await trio.testing.wait_all_tasks_blocked()
        await pump.close_stdin()
    with read_end:
        assert os.read(read_end.fileno(), 10) == b""


async def test_input_backpressure_when_child_does_not_read() -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    raw_host = host.socket
    chunk = random_bytes(64 * KiB)
    sent = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        while True:
            progressed = False
            while True:
                try:
                    sent += os.write(raw_host.fileno(), chunk)
                except BlockingIOError:
                    break
                progressed = True
            await trio.testing.wait_all_tasks_blocked()
            if not progressed:
                break
            assert sent < 64 * MiB, "host was never blocked"
        print(f"sent {sent} moved {pump.bytes_moved}")
        assert sent <= PIPE_AND_SOCKET_LIMIT
        with read_end:
            # The child starts reading: everything arrives, in order.
            await host.send_eof()
            got = await trio.to_thread.run_sync(read_blocking, read_end.fileno())
        assert len(got) == sent
        await host.aclose()


async def test_input_reader_gone_epipe() -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    read_end.close()
    async with host:
        await host.send_all(b"to nobody")
        await pump.run()  # EPIPE ends it quietly
        assert write_end.closed
        assert guest.socket.fileno() == -1
        await pump.close_stdin()


async def test_input_cancel_closes_both() -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    pump = InputPump("stdin", guest, write_end)
    async with host:
        with read_end, trio.move_on_after(0.01):
            await pump.run()
        assert write_end.closed
        assert guest.socket.fileno() == -1


def test_child_end_stays_blocking() -> None:
    read_end, write_end = make_pipe()
    host, guest = stream_pair()
    with read_end, write_end, host.socket, guest.socket:
        OutputPump("stdout", read_end, guest)
        assert not os.get_blocking(read_end.fileno())
        assert not fcntl.fcntl(write_end.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
