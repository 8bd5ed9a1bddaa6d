"""trinit._logwriter: the console log handler never blocks its caller, bounds its queue,
reports what it dropped, and loses nothing a reader takes in time. Real pipes, in-process.

The end-to-end check (a real agent whose stderr nobody reads) is
``tests/test_agent_log_sink.py``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from trinit._log import ConsoleFormatter
from trinit._logwriter import QueuedFdHandler


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(ConsoleFormatter())
    logger = logging.getLogger(f"trinit.test.{name}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


class _Reader:
    """Reads a pipe to EOF in a thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while chunk := os.read(self.fd, 65536):
            self.data += chunk

    def finish(self) -> bytes:
        self.thread.join(10)
        assert not self.thread.is_alive()
        return bytes(self.data)


def test_an_unread_pipe_never_blocks_and_drops_are_reported(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    handler = QueuedFdHandler(write_end, max_bytes=8192, flush_seconds=0.2)
    log = _logger(handler, "unread")
    started = time.monotonic()
    for n in range(2000):  # ~170 KiB of lines: 4 KiB fit the pipe, 8 KiB the queue
        log.debug("line %d %s", n, "x" * 20)
    assert time.monotonic() - started < 5  # a blocking write would hang here for good
    assert handler.dropped_total > 1500
    flushed = time.monotonic()
    handler.flush()  # the reader is stuck: gives up after flush_seconds
    assert 0.15 < time.monotonic() - flushed < 3
    # the console starts reading: the queue drains, the next line reports the drops (the
    # flushes from here on wait for an empty queue; a loaded machine may take over 0.2 s)
    reader = _Reader(read_end)
    handler.flush_seconds = 30
    handler.flush()  # (a line logged while the queue is still full would be dropped too)
    dropped = handler.dropped_total
    log.info("after the stall")
    handler.flush()
    os.close(write_end)
    text = reader.finish().decode()
    lines = text.splitlines()
    assert lines[0].endswith("line 0 " + "x" * 20)  # the oldest lines were kept, whole
    numbers = [int(line.split()[4]) for line in lines if " line " in line]
    # in order; gaps wherever the queue was full (the writer thread may move a few lines
    # into the pipe meanwhile, making room for later ones); every line kept or counted
    assert numbers == sorted(set(numbers))
    assert len(numbers) + dropped == 2000
    # each report counts the drops since the one before (a line that fitted mid-burst
    # brought an early one); together they account for every drop, the last right before
    # the first line logged after the stall
    reports = [re.search(r"warning trinit: log: (\d+) messages? dropped", line) for line in lines]
    counts = [int(match.group(1)) for match in reports if match]
    assert sum(counts) == dropped and counts
    assert reports[-2] is not None
    assert handler.dropped_total == dropped
    assert lines[-1].endswith("info trinit: after the stall")
    assert handler.dropped == 0


def test_a_reader_that_keeps_up_gets_every_line(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    reader = _Reader(read_end)
    handler = QueuedFdHandler(write_end, max_bytes=1 << 20)
    log = _logger(handler, "read")
    for n in range(5000):
        log.info("line %d", n)
    handler.flush()
    os.close(write_end)
    lines = reader.finish().decode().splitlines()
    assert [int(line.rsplit(maxsplit=1)[1]) for line in lines] == list(range(5000))
    assert handler.dropped_total == 0


def test_the_writer_thread_blocks_every_signal(pipe: tuple[int, int]) -> None:
    """A process-directed SIGTERM/SIGINT must reach trinit's signalfd, never this thread."""
    handler = QueuedFdHandler(pipe[1])
    _logger(handler, "signals").info("start the thread")
    handler.flush()
    thread = handler._thread
    assert thread is not None and thread.native_id is not None
    with open(f"/proc/self/task/{thread.native_id}/status") as status:
        blocked = next(int(line.split()[1], 16) for line in status if line.startswith("SigBlk"))
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        assert blocked & (1 << (signum - 1))
    # and the caller's own mask is as it was
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
