"""Bulk stretches of a splice copy: a stream that keeps moving data moves in a worker thread.

Why: on the event loop every wait for a pipe or socket is a trip through trio's scheduler
and epoll, ~50 us of Python per wake-up. A stdout pipe of 1 MiB fed by 1 MiB writes wakes
the pump about a thousand times per GiB, so the loop spent as much CPU as the kernel's own
splice work (0.10 against 0.06 CPU-s/GiB, docs/benchmarks.md). A thread that waits with
``poll(2)`` and splices costs ~5 us per wake-up: the minimal relay's cost.

When: :class:`trinit.io._copy.Copier` moves a stream on the event loop as before, and only
after :data:`BULK_AFTER` bytes without a pause hands it to :meth:`BulkMove.run`. The thread
gives the stream back (:class:`Return`) when the source has nothing for :data:`QUIET`
seconds, when the destination accepts nothing for as long (a host that stopped reading
never holds a thread), at end of file, on an I/O error (raised), or when woken. An
interactive stream (a shell, a log line now and then) never leaves the loop.

Bounds: at most :data:`BULK_THREADS` stretches run at once in one trio run, counted by
their own :class:`trio.CapacityLimiter`, never by trio's default one (which bundle and
cgroup removal use); a stream that finds none free stays on the loop, which works as
before, and tries again after another :data:`BULK_AFTER` bytes.

Ownership: the thread borrows the copier's two fds. The task that started it waits for
it to return (``abandon_on_cancel=False``) and only then can its owner close them, so no
fd is closed under the thread. To make that wait short, a cancellation of the task, or
:meth:`BulkMove.wake` (the copier's drain), writes a wake-up pipe the thread polls along
with the data fds.
"""

from __future__ import annotations

import enum
import math
import os
import select
from collections.abc import Callable

import trio

from trinit._runlimiter import RunLimiter

__all__ = ["BULK_AFTER", "BULK_THREADS", "QUIET", "BulkMove", "Return", "bulk_limiter"]

BULK_AFTER = 4 << 20
"""Bytes a copy moves on the event loop, without giving the stream back, before it asks
for a thread."""

BULK_THREADS = 4
"""Bulk stretches at once per trio run (two cores cannot use more relaying threads)."""

QUIET = 0.05
"""Seconds without progress after which a thread gives its stream back to the loop."""

_CHUNK = 1 << 20
_SPLICE_FLAGS = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE
_POLLIN, _POLLOUT = select.POLLIN, select.POLLOUT

_limiter = RunLimiter("trinit_bulk_limiter", BULK_THREADS)


def bulk_limiter() -> trio.CapacityLimiter:
    """This trio run's limiter of bulk stretches (created on first use)."""
    return _limiter.get()


class Return(enum.Enum):
    """Why a thread gave its stream back."""

    EOF = "eof"  #: the source reached end of file; everything read was delivered
    QUIET = "quiet"  #: no progress for QUIET seconds
    WOKEN = "woken"  #: cancellation or drain: the loop decides what comes next


class BulkMove:
    """Runs bulk stretches for one copy; :meth:`wake` ends the current one early, and so
    does the time set with :meth:`wake_at`."""

    __slots__ = ("_wake_deadline", "_wake_scope", "_wake_w", "stretches")

    def __init__(self) -> None:
        self._wake_w: int | None = None
        self._wake_deadline = math.inf
        self._wake_scope: trio.CancelScope | None = None
        self.stretches = 0  #: stretches started (each had a thread)

    def wake_at(self, deadline: float) -> None:
        """Wake the running stretch, and any later one, at ``deadline`` (trio clock) at the
        latest. Calling it again can only bring the time nearer."""
        self._wake_deadline = min(self._wake_deadline, deadline)
        if self._wake_scope is not None:
            self._wake_scope.deadline = self._wake_deadline

    def wake(self) -> None:
        """Make the running stretch (if any) return :attr:`Return.WOKEN` promptly."""
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # full (already woken): nothing more to say
                pass

    async def run(self, src: int, dst: int, moved: Callable[[int], None]) -> Return | None:
        """Move ``src`` -> ``dst`` (a pipe and a socket, either way round) in a worker
        thread until it gives the stream back.

        ``moved(n)`` is called (in the thread) after each splice. None without running
        anything when every bulk thread is taken. I/O errors are raised as the splice
        raised them.
        """
        limiter = bulk_limiter()
        if limiter.available_tokens < 1:
            return None
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._wake_w = wake_w
        self.stretches += 1
        failure: Exception | None = None
        result = Return.WOKEN
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wake_at_deadline_or_cancel)
                try:
                    result = await trio.to_thread.run_sync(
                        _move, src, dst, wake_r, moved, limiter=limiter
                    )
                except Exception as exc:  # raised below, not wrapped in the nursery's group
                    failure = exc
                nursery.cancel_scope.cancel()
        finally:
            self._wake_w = None
            os.close(wake_r)
            os.close(wake_w)
        if failure is not None:
            raise failure
        return result

    async def _wake_at_deadline_or_cancel(self) -> None:
        try:
            with trio.CancelScope(deadline=self._wake_deadline) as scope:
                self._wake_scope = scope
                await trio.sleep_forever()
        finally:
            self._wake_scope = None
            self.wake()


def _move(src: int, dst: int, wake: int, moved: Callable[[int], None]) -> Return:
    """The thread's loop: splice; when a splice moved less than it could, or none, poll.

    Which side to poll follows from the last poll: a splice that finds nothing to do
    (``EAGAIN``) right after the source was reported readable is waiting for the
    destination, otherwise for the source. A short splice usually emptied the source, so
    the source is polled before the next one. Each wake-up is then one ``poll`` and one
    ``splice``, where probing the pipe first would add a third call.
    """
    quiet_ms = max(1, int(QUIET * 1000))
    for_source = select.poll()
    for_source.register(src, _POLLIN)
    for_source.register(wake, _POLLIN)
    for_destination = select.poll()
    for_destination.register(dst, _POLLOUT)
    for_destination.register(wake, _POLLIN)
    source_ready = False  # the last poll reported the source readable
    while True:
        try:
            count = os.splice(src, dst, _CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            waiting = for_destination if source_ready else for_source
            source_ready = not source_ready
        else:
            if count == 0:
                return Return.EOF
            moved(count)
            if count == _CHUNK:
                source_ready = False
                continue
            waiting, source_ready = for_source, True
        woken = waiting.poll(quiet_ms)
        if not woken:
            return Return.QUIET
        if len(woken) > 1 or woken[0][0] == wake:  # two fds polled: the other is the wake
            return Return.WOKEN
