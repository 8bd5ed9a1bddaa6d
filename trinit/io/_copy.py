"""Private engine of the pumps and the relay: move bytes from one fd to another.

A :class:`Copier` borrows two fds (it never closes them; its owner does) and moves bytes from
``src`` to ``dst`` until the source reports end of file, an I/O error ends the copy, or its
owner asked it to :meth:`Copier.drain` and the source has nothing more right now.

How bytes move, in order of preference:

* ``splice(2)`` straight between a pipe and a socket (``SRC_IS_PIPE``, ``DST_IS_PIPE``): the
  kernel moves page references, no copy through Python. A stream that keeps moving data
  (:data:`trinit.io._bulk.BULK_AFTER` bytes without a pause) continues in a bounded worker
  thread until it pauses (:mod:`trinit.io._bulk`): the same splices, fewer trips through
  the event loop.
* ``splice(2)`` through a private intermediate pipe (``THROUGH_PIPE``) for socket to socket.
* A 1 MiB buffer with ``readv``/``write`` wherever splice says ``EINVAL`` (a file, a tty, a
  socket family without splice support). The buffer is the only place bytes sit in Python,
  and it is bounded.

Every fd is non-blocking (the owner arranges that) and every wait goes through
``trio.lowlevel.wait_readable``/``wait_writable``: a stalled peer parks this task only. There is
no queue in Python, so backpressure is the kernel's: while ``dst`` is full nothing is read from
``src``, ``src`` fills up and its writer blocks.

Invariant worth knowing when reading the splice loops: a splice that returns ``EAGAIN`` moved
nothing, so deciding afterwards which side to wait for (by polling the pipe side, or by the
byte count we keep for our own pipe) never loses or duplicates data. It does not by itself
say which side was missing: a source found readable after the splice may have been empty
at the splice, so only a second ``EAGAIN`` with a source already known readable means the
destination is full.
"""

from __future__ import annotations

import enum
import errno
import math
import os
import select
from dataclasses import dataclass
from typing import Protocol

import trio

from ._bulk import BULK_AFTER, QUIET, BulkMove, Return
from ._fd import make_pipe

__all__ = ["CHUNK", "Copier", "Ending", "Outcome", "SpliceMode"]

#: Largest single transfer (splice length or buffer size).
CHUNK = 1 << 20

_SPLICE_FLAGS = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE


class HasFileno(Protocol):
    def fileno(self) -> int: ...


class SpliceMode(enum.Enum):
    SRC_IS_PIPE = "src_is_pipe"
    DST_IS_PIPE = "dst_is_pipe"
    THROUGH_PIPE = "through_pipe"
    NONE = "none"


class Ending(enum.Enum):
    EOF = "eof"  #: the source reached end of file and everything read was delivered
    DRAINED = "drained"  #: drain() was requested and the source had nothing more
    FAILED = "failed"  #: an I/O error (peer gone, EPIPE, reset) or a closed fd ended the copy


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    error: BaseException | None = None


class _Fallback(Exception):
    """splice refused these fds (EINVAL): switch to the buffered copy."""


def _fd(obj: HasFileno) -> int:
    # trio sockets report -1 once closed; OwnedFd raises ClosedResourceError itself.
    number = obj.fileno()
    if number < 0:
        raise trio.ClosedResourceError("file descriptor already closed")
    return number


def _poll_now(fd: int, events: int) -> int:
    """The fd's ready events right now (no waiting)."""
    poller = select.poll()
    poller.register(fd, events)
    ready = poller.poll(0)
    return ready[0][1] if ready else 0


class Copier:
    """Moves bytes from ``src`` to ``dst``; borrows both fds and closes neither."""

    def __init__(self, src: HasFileno, dst: HasFileno, mode: SpliceMode) -> None:
        self._src = src
        self._dst = dst
        self._mode = mode
        self._draining = False
        self._drain_deadline = math.inf
        self._idle_scope: trio.CancelScope | None = None
        self._bulk = BulkMove()
        self.bytes_moved = 0
        #: "splice" or "buffered": how the bytes actually moved (after any EINVAL fallback).
        self.method = "buffered" if mode is SpliceMode.NONE else "splice"

    @property
    def bulk_stretches(self) -> int:
        """Stretches of this copy moved in a bulk thread (:mod:`trinit.io._bulk`)."""
        return self._bulk.stretches

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        """From now on, a source with nothing to read ends the copy (``DRAINED``).

        Bytes the source already holds are still delivered, waiting for ``dst`` as long as it
        takes (backpressure). A copy currently parked waiting for the source wakes up.
        """
        self._draining = True
        if self._idle_scope is not None:
            self._idle_scope.cancel()
        self._bulk.wake()

    def drain_at(self, deadline: float) -> None:
        """:meth:`drain` from ``deadline`` (trio clock) on: a source with nothing to read
        ends the copy once that time has come. Until the source runs dry the copy goes on,
        however long ``dst`` makes it wait. Calling it again can only bring the time nearer.
        """
        self._drain_deadline = min(self._drain_deadline, deadline)
        if self._idle_scope is not None:
            self._idle_scope.deadline = min(self._idle_scope.deadline, deadline)
        # a bulk thread waits for the source by itself: it comes back to the loop then
        self._bulk.wake_at(deadline)

    def _drain_due(self) -> bool:
        if self._draining:
            return True
        deadline = self._drain_deadline
        return deadline != math.inf and trio.current_time() >= deadline

    async def run(self) -> Outcome:
        """Copy until EOF, drain or error; never raises for I/O errors (they end the copy).

        Cancellation stops the copy at its current wait. With splice nothing is lost in
        Python; in buffered mode up to one buffer of bytes already read is dropped.
        """
        try:
            try:
                if self._mode is SpliceMode.THROUGH_PIPE:
                    return await self._splice_through_pipe()
                if self._mode is not SpliceMode.NONE:
                    return await self._splice_direct()
            except _Fallback:
                self.method = "buffered"
            return await self._buffered()
        except (OSError, trio.ClosedResourceError, trio.BusyResourceError) as exc:
            return Outcome(Ending.FAILED, exc)

    async def _wait_source(self, src: int) -> bool:
        """Wait until the source may have data; False if draining (the copy should end)."""
        if self._drain_due():
            return False
        with trio.CancelScope(deadline=self._drain_deadline) as scope:
            self._idle_scope = scope
            try:
                await trio.lowlevel.wait_readable(src)
            finally:
                self._idle_scope = None
        return True

    def _add_moved(self, count: int) -> None:
        self.bytes_moved += count

    async def _splice_direct(self) -> Outcome:
        unpaused = 0  # bytes moved on the loop since the source last paused (QUIET)
        source_had_data = False  # the source was seen readable before this splice
        while True:
            src, dst = _fd(self._src), _fd(self._dst)
            try:
                moved = os.splice(src, dst, CHUNK, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                # Which side was it? Ask the source: its data can only go by our own reads.
                # (Asking the pipe whether it has room would race with its reader: a pipe
                # that was full at the splice may have room a moment later, and a drain
                # would then end the copy with the socket's bytes undelivered.)
                if source_had_data:  # it still has (only we read it): the destination is full
                    await trio.lowlevel.wait_writable(dst)
                    continue
                readable = select.POLLIN | select.POLLHUP | select.POLLERR
                if _poll_now(src, select.POLLIN) & readable:
                    # The data may have come after the splice found the source empty; the
                    # destination may have room that poll does not call writable (a unix
                    # socket is writable below a quarter of its buffer). Splice again.
                    source_had_data = True
                    continue
                waited_from = trio.current_time()
                if not await self._wait_source(src):
                    return Outcome(Ending.DRAINED)
                if trio.current_time() - waited_from >= QUIET:
                    unpaused = 0  # the stream paused: not a bulk transfer (yet)
                continue
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    raise _Fallback from exc
                raise
            if moved == 0:
                return Outcome(Ending.EOF)
            source_had_data = False
            self.bytes_moved += moved
            unpaused += moved
            if unpaused >= BULK_AFTER and not self._drain_due():
                unpaused = 0
                # None: every bulk thread is taken, so the stream stays on the loop
                returned = await self._bulk.run(src, dst, self._add_moved)
                if returned is Return.EOF:
                    return Outcome(Ending.EOF)
            await trio.lowlevel.checkpoint()

    async def _splice_through_pipe(self) -> Outcome:
        pipe_read, pipe_write = make_pipe()
        # Bytes sitting in our pipe. We are its only reader and writer, so this count is exact
        # and tells which side a failed splice was waiting for.
        pending = 0
        source_done = False
        try:
            for end in (pipe_read, pipe_write):
                os.set_blocking(end.fileno(), False)
            while True:
                progressed = False
                src, dst = _fd(self._src), _fd(self._dst)
                if not source_done:
                    try:
                        moved = os.splice(src, pipe_write.fileno(), CHUNK, flags=_SPLICE_FLAGS)
                    except BlockingIOError:
                        pass  # source empty, or our pipe full: flushing below sorts it out
                    except OSError as exc:
                        if exc.errno == errno.EINVAL and pending == 0:
                            raise _Fallback from exc
                        raise
                    else:
                        if moved == 0:
                            source_done = True
                        else:
                            pending += moved
                            progressed = True
                if pending:
                    try:
                        moved = os.splice(pipe_read.fileno(), dst, pending, flags=_SPLICE_FLAGS)
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        await self._write_all_from(pipe_read.fileno(), pending)
                        raise _Fallback from exc
                    else:
                        pending -= moved
                        self.bytes_moved += moved
                        progressed = True
                if source_done and pending == 0:
                    return Outcome(Ending.EOF)
                if progressed:
                    await trio.lowlevel.checkpoint()
                elif pending:
                    await trio.lowlevel.wait_writable(dst)
                elif not await self._wait_source(src):
                    return Outcome(Ending.DRAINED)
        finally:
            pipe_read.close()
            pipe_write.close()

    async def _write_all_from(self, pipe: int, count: int) -> None:
        """Move ``count`` bytes our own pipe holds to dst by plain read/write."""
        while count:
            data = os.read(pipe, min(count, CHUNK))
            count -= len(data)
            await self._write_all(memoryview(data))

    async def _buffered(self) -> Outcome:
        view = memoryview(bytearray(CHUNK))
        while True:
            src = _fd(self._src)
            try:
                count = os.readv(src, [view])
            except BlockingIOError:
                if not await self._wait_source(src):
                    return Outcome(Ending.DRAINED)
                continue
            if count == 0:
                return Outcome(Ending.EOF)
            await self._write_all(view[:count])
            await trio.lowlevel.checkpoint()

    async def _write_all(self, data: memoryview) -> None:
        while data:
            dst = _fd(self._dst)
            try:
                written = os.write(dst, data)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(dst)
                continue
            data = data[written:]
            self.bytes_moved += written
