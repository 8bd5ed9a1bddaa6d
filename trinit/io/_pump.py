"""Stdio pumps: one direction of one standard stream between a child's pipe and the host.

Each pump owns two things, the pipe end trinit keeps and the host socket for that stream, and
closes both when it ends, whatever ends it (EOF, an error, cancellation). The bytes themselves
move in :mod:`trinit.io._copy` (splice, or a bounded buffer), so a pump holds no data of its
own and backpressure is the pipe's: a host that reads slowly blocks only this process's writes.

:class:`OutputPump` (stdout/stderr): pipe read end -> host socket. It runs until every writer of
the pipe is gone, which is what makes output complete: bytes a process wrote just before
exiting are still in the pipe and are moved before the host sees EOF. The owner must close its
own copy of the child's write end after spawning, or EOF never comes. When the process exits
but descendants keep the pipe open, :meth:`OutputPump.process_exited` bounds the wait for the
pipe: once the grace is over, the pump ends the first time the pipe is empty. A host that is
slow to read never makes it drop a byte the pipe holds.

:class:`InputPump` (stdin): host socket -> pipe write end. It runs until the host closes the
connection; CloseProcessStdin (:meth:`InputPump.close_stdin`) ends it early after delivering
every byte the host had already sent, because the host never closes its side
(docs/protocol.md §5.4).

Only trinit's ends are made non-blocking: :func:`make_pipe` gives the two ends separate file
descriptions, so the child's end keeps ordinary blocking semantics.
"""

from __future__ import annotations

import logging
import os

import trio

from ._copy import Copier, Ending, SpliceMode
from ._fd import OwnedFd, enlarge_send_buffer, make_pipe

__all__ = ["InputPump", "OutputPump", "make_pipe"]

log = logging.getLogger(__name__)


def _close_stream(sock: trio.SocketStream) -> None:
    # trio's socket close wakes anyone waiting on it (notify_closing) and forgets the fd.
    sock.socket.close()


class OutputPump:
    """Moves a child's stdout or stderr from the pipe's read end to a host socket."""

    def __init__(self, name: str, pipe: OwnedFd, sock: trio.SocketStream) -> None:
        """Take ownership of ``pipe`` (trinit's read end) and ``sock`` (the host connection)."""
        self.name = name
        self._pipe = pipe
        self._sock = sock
        os.set_blocking(pipe.fileno(), False)
        enlarge_send_buffer(sock.socket)
        self._copier = Copier(pipe, sock.socket, SpliceMode.SRC_IS_PIPE)
        self._grace = 0.0
        self._done = False

    @property
    def bytes_moved(self) -> int:
        return self._copier.bytes_moved

    @property
    def bulk_stretches(self) -> int:
        """Stretches of this stream moved in a bulk thread (``trinit.io._bulk``)."""
        return self._copier.bulk_stretches

    def process_exited(self, grace: float) -> None:
        """The process exited: keep moving until pipe EOF, or until the pipe is empty once
        ``grace`` seconds (trio clock) have passed.

        Descendants that inherited the pipe can keep it open forever; the pump then stops,
        closes both ends and logs the truncation at warning. What the pipe holds is moved
        first, however long the host takes to read it: those are bytes the process wrote.
        Calling it again can only bring the end nearer.
        """
        if self._done:
            return
        self._grace = grace
        self._copier.drain_at(trio.current_time() + grace)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move bytes until pipe EOF, a host error or an empty pipe after the grace; close both.

        Reports started at once (for ``nursery.start``). Closing the socket is how the host
        learns the stream is complete. On cancellation both are closed immediately; bytes
        still in the pipe are lost.
        """
        task_status.started()
        if self._done:
            return
        try:
            outcome = await self._copier.run()
            if outcome.ending is Ending.DRAINED:
                log.warning(
                    "%s: process exited but the pipe is still held open (a descendant?); "
                    "stopped after %.3gs grace, output truncated after %d bytes",
                    self.name,
                    self._grace,
                    self.bytes_moved,
                )
            elif outcome.ending is Ending.FAILED:
                log.info("%s: host stream ended early: %s", self.name, outcome.error)
        finally:
            self._done = True
            self._pipe.close()
            _close_stream(self._sock)


class InputPump:
    """Moves the host's stdin bytes from a socket to the write end of a child's pipe."""

    def __init__(self, name: str, sock: trio.SocketStream, pipe: OwnedFd) -> None:
        """Take ownership of ``sock`` (the host connection) and ``pipe`` (trinit's write end)."""
        self.name = name
        self._sock = sock
        self._pipe = pipe
        os.set_blocking(pipe.fileno(), False)
        self._copier = Copier(sock.socket, pipe, SpliceMode.DST_IS_PIPE)
        self._started = False
        self._done = trio.Event()

    @property
    def bytes_moved(self) -> int:
        return self._copier.bytes_moved

    @property
    def bulk_stretches(self) -> int:
        """Stretches of this stream moved in a bulk thread (``trinit.io._bulk``)."""
        return self._copier.bulk_stretches

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move bytes until the host closes (or breaks) the connection or stdin is closed.

        Then the pipe is closed (the child reads EOF) and the socket too. A reader that went
        away (EPIPE) just ends the pump. On cancellation both are closed immediately.
        If :meth:`close_stdin` already took over, this waits for it to finish. Reports
        started at once (for ``nursery.start``).
        """
        task_status.started()
        if self._started:
            await self._done.wait()
            return
        self._started = True
        await self._move_and_close()

    async def close_stdin(self) -> None:
        """CloseProcessStdin: deliver what the host already sent, then close pipe and socket.

        Reads the socket until it has nothing more right now, writes all of it (waiting for
        the child to read when the pipe is full), then closes both; :meth:`run` returns.
        Idempotent, and a no-op once the pump has ended. If this call is cancelled while the
        child is not reading, the delivery goes on in :meth:`run` and closes on its own.
        """
        if self._done.is_set():
            return
        self._copier.drain()
        if self._started:
            await self._done.wait()
            return
        self._started = True
        await self._move_and_close()

    async def _move_and_close(self) -> None:
        try:
            outcome = await self._copier.run()
            if outcome.ending is Ending.FAILED:
                log.info("%s: stdin ended: %s", self.name, outcome.error)
        finally:
            self._pipe.close()
            _close_stream(self._sock)
            self._done.set()
