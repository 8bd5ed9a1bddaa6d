"""PtyRelay over real PTYs (os.openpty) and unix socket pairs."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import struct
import termios
import tty

import pytest
import trio
import trio.testing
from iolib import spawn_python, stream_pair, write_blocking

from trinit.errors import Internal
from trinit.io import OwnedFd, PtyRelay

KiB = 1024

pytestmark = pytest.mark.usefixtures("no_fd_leak")


class Pty:
    """A raw-mode PTY pair; the test owns the slave, the relay gets the master."""

    def __init__(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation, no signals: bytes stay bytes
        self.master = OwnedFd(master)
        self.slave = OwnedFd(slave)
        self.slave_path = os.ttyname(slave)


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        assert chunk, "unexpected EOF"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


async def _receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    chunks = []
    while size:
        chunk = await stream.receive_some(size)
        assert chunk, "unexpected EOF"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


async def test_bytes_both_ways_and_close_at_exit() -> None:
    pty = Pty()
    host_in, guest_in = stream_pair()
    host_out, guest_out = stream_pair()
    relay = PtyRelay(pty.master, guest_in, guest_out)
    to_program = os.urandom(128 * KiB)
    from_program = os.urandom(128 * KiB)
    async with host_in, host_out, trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        with pty.slave:

            async def program_reads() -> None:
                got = await trio.to_thread.run_sync(
                    _read_exactly, pty.slave.fileno(), len(to_program)
                )
                assert got == to_program

            async def program_writes() -> None:
                await trio.to_thread.run_sync(write_blocking, pty.slave.fileno(), from_program)

            async with trio.open_nursery() as program:
                program.start_soon(program_reads)
                program.start_soon(program_writes)
                program.start_soon(host_in.send_all, to_program)
                assert await _receive_exactly(host_out, len(from_program)) == from_program
        relay.process_exited(5.0)
        assert await host_out.receive_some(10) == b""
    assert pty.master.closed
    assert relay.bytes_in == len(to_program)
    assert relay.bytes_out == len(from_program)


async def test_resize_visible_on_slave() -> None:
    pty = Pty()
    relay = PtyRelay(pty.master, None, None)
    with pty.slave:
        relay.resize(48, 160)
        winsize = fcntl.ioctl(pty.slave.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        assert struct.unpack("HHHH", winsize)[:2] == (48, 160)
        relay.resize(65536 + 24, 65536 * 3 + 80)  # truncated to uint16
        winsize = fcntl.ioctl(pty.slave.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        assert struct.unpack("HHHH", winsize)[:2] == (24, 80)
        relay.process_exited(0)
        await relay.run()
    with pytest.raises(Internal):
        relay.resize(10, 10)


async def test_eio_is_not_eof_until_the_process_exits() -> None:
    """The slave closes (EIO on the master); a program opening it again is still relayed."""
    pty = Pty()
    host_out, guest_out = stream_pair()
    relay = PtyRelay(pty.master, None, guest_out)
    run_done = trio.Event()
    async with host_out, trio.open_nursery() as nursery:

        async def run() -> None:
            await relay.run()
            run_done.set()

        nursery.start_soon(run)
        os.write(pty.slave.fileno(), b"first")
        pty.slave.close()
        assert await _receive_exactly(host_out, 5) == b"first"
        await relay._slave_closed.wait()
        assert not run_done.is_set()
        with OwnedFd(os.open(pty.slave_path, os.O_RDWR | os.O_NOCTTY)) as reopened:
            tty.setraw(reopened.fileno())
            os.write(reopened.fileno(), b"second")
            assert await _receive_exactly(host_out, 6) == b"second"
        assert not run_done.is_set()
        relay.process_exited(1.0)
        await run_done.wait()
        assert await host_out.receive_some(10) == b""


async def test_drain_on_exit_gets_everything_a_child_wrote() -> None:
    size = 256 * KiB
    pty = Pty()
    host_out, guest_out = stream_pair()
    relay = PtyRelay(pty.master, None, guest_out)
    script = (
        "import os\n"
        f"v = memoryview(bytes(i % 253 for i in range({size})))\n"
        "while v: v = v[os.write(1, v):]\n"
    )
    async with host_out, trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        with pty.slave:
            child = await trio.to_thread.run_sync(spawn_python, script, pty.slave.fileno())
        received: list[bytes] = []

        async def host_reads() -> None:
            while chunk := await host_out.receive_some(65536):
                received.append(chunk)

        nursery.start_soon(host_reads)
        assert await trio.to_thread.run_sync(child.wait) == 0
        relay.process_exited(5.0)
    assert b"".join(received) == bytes(i % 253 for i in range(size))


async def test_close_stdin_keeps_the_master_open() -> None:
    pty = Pty()
    host_in, guest_in = stream_pair()
    host_out, guest_out = stream_pair()
    relay = PtyRelay(pty.master, guest_in, guest_out)
    async with host_in, host_out, trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        with pty.slave:
            await host_in.send_all(b"typed")
            await relay.close_stdin()
            assert guest_in.socket.fileno() == -1
            assert not pty.master.closed
            assert os.read(pty.slave.fileno(), 10) == b"typed"
            await relay.close_stdin()  # idempotent
            os.write(pty.slave.fileno(), b"still relayed")
            assert await _receive_exactly(host_out, 13) == b"still relayed"
        relay.process_exited(1.0)


async def test_close_stdin_before_run_still_delivers() -> None:
    pty = Pty()
    host_in, guest_in = stream_pair()
    relay = PtyRelay(pty.master, guest_in, None)
    async with host_in:
        with pty.slave:
            await host_in.send_all(b"early")
            await relay.close_stdin()
            assert guest_in.socket.fileno() == -1
            assert _read_exactly(pty.slave.fileno(), 5) == b"early"
            relay.process_exited(0)
            await relay.run()
    assert pty.master.closed


async def test_cancel_closes_everything() -> None:
    pty = Pty()
    host_in, guest_in = stream_pair()
    host_out, guest_out = stream_pair()
    relay = PtyRelay(pty.master, guest_in, guest_out)
    async with host_in, host_out:
        with pty.slave, trio.move_on_after(0.01):
            await relay.run()
        assert pty.master.closed
        assert guest_in.socket.fileno() == -1
        assert guest_out.socket.fileno() == -1


async def test_drain_stops_after_grace_when_host_does_not_read(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    pty = Pty()
    host_out, guest_out = stream_pair()
    relay = PtyRelay(pty.master, None, guest_out)  # (this enlarges the send buffer)
    # The host never reads and its socket is already full.
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(guest_out.socket.fileno(), b"f" * 65536)
    os.write(pty.slave.fileno(), b"output nobody reads")
    master_poll = select.poll()
    master_poll.register(pty.master.fileno(), select.POLLIN)
    assert master_poll.poll(5000), "the pty never moved the bytes to the master"
    finished_at: list[float] = []
    async with host_out, trio.open_nursery() as nursery:

        async def run() -> None:
            await relay.run()
            finished_at.append(trio.current_time())

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()  # the relay now waits for the host
        exited_at = trio.current_time()
        with pty.slave, caplog.at_level(logging.WARNING, logger="trinit.io._pty"):
            relay.process_exited(3.0)
            await trio.sleep(10)
    assert finished_at == [exited_at + 3.0]
    assert "grace" in caplog.text


async def test_slave_closed_waits_with_backoff_not_spinning(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pty = Pty()
    host_out, guest_out = stream_pair()
    relay = PtyRelay(pty.master, None, guest_out)
    reads = 0
    real_read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        nonlocal reads
        if fd == pty.master.fileno():
            reads += 1
        return real_read(fd, size)

    finished_at: list[float] = []
    async with host_out, trio.open_nursery() as nursery:
        pty.slave.close()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "read", counting_read)

            async def run() -> None:
                await relay.run()
                finished_at.append(trio.current_time())

            nursery.start_soon(run)
            await trio.sleep(60)
            # 10 ms doubling to 0.5 s: about 125 reads in a virtual minute, not millions.
            assert 100 < reads < 150
            exited_at = trio.current_time()
            relay.process_exited(1.0)
            await trio.testing.wait_all_tasks_blocked()
    assert finished_at == [exited_at]  # no waiting out a backoff once the process exited


async def test_host_reader_gone_stops_reading_the_master(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once the host's stdout socket fails the relay stops reading (the program blocks on a
    full terminal, as on a pipe nobody reads) instead of reading and discarding forever."""
    pty = Pty()
    host_out, guest_out = stream_pair()
    relay = PtyRelay(pty.master, None, guest_out)
    reads = 0
    real_read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        nonlocal reads
        if fd == pty.master.fileno():
            reads += 1
        return real_read(fd, size)

    master_poll = select.poll()
    master_poll.register(pty.master.fileno(), select.POLLIN)
    finished_at: list[float] = []
    with pytest.MonkeyPatch.context() as patch, pty.slave:
        patch.setattr(os, "read", counting_read)
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                await relay.run()
                finished_at.append(trio.current_time())

            nursery.start_soon(run)
            await host_out.aclose()  # the host's reader goes away
            os.write(pty.slave.fileno(), b"first")
            assert master_poll.poll(5000)
            await trio.testing.wait_all_tasks_blocked()  # read, failed to send
            reads_when_gone = reads
            os.write(pty.slave.fileno(), b"more output nobody can read")
            assert master_poll.poll(5000)
            await trio.sleep(60)
            assert reads == reads_when_gone  # not read, not discarded
            assert master_poll.poll(0)  # still waiting in the terminal
            exited_at = trio.current_time()
            relay.process_exited(5.0)
    assert finished_at == [exited_at]  # nothing to drain to: done at once
