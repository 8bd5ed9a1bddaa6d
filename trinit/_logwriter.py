"""A logging handler that never blocks its caller on the console: a bounded queue drained by
one writer thread.

Why: trinit's log goes to its stderr, which is the VM console (a serial port or hvc0 that
may be slow, or a pipe nobody reads). A synchronous write there from the trio thread
blocks PID 1's whole event loop, every RPC and stdio pump, for as long as the console
stalls. :class:`QueuedFdHandler` formats each record in the caller's thread, appends it to
a queue of at most ``max_bytes`` and returns; a daemon thread writes the queue to the fd in
order. When the queue is full the record is dropped and counted; the next record that fits
is preceded by a line saying how many were dropped.

:meth:`QueuedFdHandler.flush` waits (bounded) until everything queued is written: before
PID 1 powers off (``trinit._pid1``) and at interpreter exit (``logging.shutdown``), so an
orderly stop loses nothing that fits in the queue. Fatal lines written with ``os.write``
afterwards (``trinit._pid1.die``) stay synchronous.

The writer thread is started on the first record with every signal blocked (the mask is
inherited at creation), so no signal meant for trinit's signalfd or its trio loop is ever
delivered to it.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import threading
import time

__all__ = ["QueuedFdHandler"]

DEFAULT_MAX_BYTES = 1 << 20
"""Log text queued for the console at most (about 10,000 lines)."""
DEFAULT_FLUSH_SECONDS = 5.0
"""How long a flush waits for a stuck console before giving up (at exit, at power-off)."""
_CHUNK = 64 * 1024


class QueuedFdHandler(logging.Handler):
    """Formats records in the caller, writes them to ``fd`` from a thread of its own."""

    def __init__(
        self,
        fd: int = 2,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
    ) -> None:
        super().__init__()
        self.fd = fd
        self.max_bytes = max_bytes
        self.flush_seconds = flush_seconds
        self.dropped = 0
        """Records dropped and not yet reported."""
        self.dropped_total = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes in the queue plus the chunk being written
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode(errors="replace")
        except Exception:
            self.handleError(record)
            return
        with self._changed:
            if self.dropped:
                notice = self._dropped_line(record)
                if self._queued + len(notice) + len(line) > self.max_bytes:
                    self._drop()
                    return
                self._append(notice)
                self.dropped = 0
            if self._queued + len(line) > self.max_bytes:
                self._drop()
                return
            self._append(line)
            if self._thread is None:
                self._start_writer()

    def flush(self) -> None:
        """Wait until every queued line is written, at most ``flush_seconds``."""
        deadline = time.monotonic() + self.flush_seconds
        with self._changed:
            while self._queued and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def close(self) -> None:
        self.flush()
        super().close()

    # -- inside the lock -----------------------------------------------------------------

    def _append(self, line: bytes) -> None:
        self._queue.append(line)
        self._queued += len(line)
        self._changed.notify_all()

    def _drop(self) -> None:
        self.dropped += 1
        self.dropped_total += 1

    def _dropped_line(self, record: logging.LogRecord) -> bytes:
        noun = "message" if self.dropped == 1 else "messages"
        notice = logging.LogRecord(
            record.name, logging.WARNING, __file__, 0,
            f"log: {self.dropped} {noun} dropped: the console did not keep up",
            None, None,
        )  # fmt: skip
        notice.created, notice.msecs = record.created, record.msecs
        return (self.format(notice) + "\n").encode(errors="replace")

    def _start_writer(self) -> None:
        thread = threading.Thread(target=self._write_loop, name="trinit-log", daemon=True)
        before = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            thread.start()  # inherits the mask: no signal is ever delivered to it
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        self._thread = thread

    # -- the writer thread ---------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                parts: list[bytes] = []
                size = 0
                while self._queue and size < _CHUNK:
                    part = self._queue.popleft()
                    parts.append(part)
                    size += len(part)
            self._write_all(b"".join(parts))
            with self._changed:
                self._queued -= size
                self._changed.notify_all()

    def _write_all(self, data: bytes) -> None:
        """Write ``data`` whole, waiting as long as the console needs; a console that is
        gone (EPIPE, EBADF...) loses the chunk, as a synchronous write would."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:  # someone set O_NONBLOCK on the shared file
                select.select([], [self.fd], [], 1.0)
            except OSError:
                return
