"""PtyRelay: owns a terminal process's PTY master and relays it to the host.

Two directions run in one task group: host stdin socket -> master, and master -> host stdout
socket. The relay owns the master and both sockets and closes all of them when it ends (after
:meth:`PtyRelay.process_exited` drained the master, or on cancellation).

Why it is not a pair of pumps:

* ``EIO`` from the master means "no slave is open right now", not end of file: a program may
  close its terminal and another may open it again. The relay keeps going until the process
  exits (docs/protocol.md §5.4). While no slave is open the master polls as hung up, which a
  level-triggered wait reports at once, so the relay re-checks with a backoff (10 ms doubling
  to 0.5 s) instead of spinning, and wakes at once when the process exits.
* Closing stdin closes only the host socket; the master stays open and the program sees no
  EOF (vminitd's behaviour, kept: docs/compat.md).
* A host whose stdout reader is gone (the socket failed) is treated like a pipe nobody reads:
  the relay stops reading the master, so a program that keeps writing blocks once the
  terminal's buffer is full, at no cost to trinit (reading and discarding cost 0.6 CPU-s/s).
  It can still be killed, and its exit ends the relay at once: there is nobody to drain to.
  Without a stdout port at all the relay reads and discards, so the program never blocks.

Raw ``os.read``/``os.write`` on a non-blocking master only: a buffered file object drops what
it holds when the read after it fails with EIO.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import termios

import trio

from trinit.errors import Internal

from ._fd import OwnedFd, enlarge_send_buffer

__all__ = ["PtyRelay"]

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 16
_BACKOFF_MIN = 0.01
_BACKOFF_MAX = 0.5


class PtyRelay:
    """Relays a PTY master to the host's stdin/stdout sockets (either may be absent)."""

    def __init__(
        self,
        master: OwnedFd,
        stdin: trio.SocketStream | None,
        stdout: trio.SocketStream | None,
    ) -> None:
        """Take ownership of ``master`` and of both sockets."""
        self._master = master
        self._stdin = stdin
        self._stdout = stdout
        if stdout is not None:
            enlarge_send_buffer(stdout.socket)
        os.set_blocking(master.fileno(), False)
        self._exited = trio.Event()
        self._grace = 0.0
        self._drain_scope = trio.CancelScope()
        self._stdin_idle: trio.CancelScope | None = None
        self._stdin_draining = False
        self._stdin_running = False
        self._stdin_done = trio.Event()
        self._stdout_idle: trio.CancelScope | None = None
        self._host_stdout_ok = stdout is not None
        self._slave_closed = trio.Event()  # set the first time the master says EIO (tests)
        self._started = False
        self._done = trio.Event()
        self.bytes_out = 0  # master -> host
        self.bytes_in = 0  # host -> master

    # -- public -------------------------------------------------------------------------------

    def process_exited(self, grace: float) -> None:
        """The process exited: drain what the master holds, then close stdout and master.

        The drain reads until the master has nothing more (EAGAIN or EIO) and stops after
        ``grace`` seconds (trio clock) at most, logging the truncation, so a host that does
        not read or a descendant that keeps writing cannot hold the relay open.
        """
        if self._exited.is_set():
            return
        self._grace = grace
        self._drain_scope.deadline = trio.current_time() + grace
        self._exited.set()
        if self._stdout_idle is not None:
            self._stdout_idle.cancel()

    def resize(self, rows: int, cols: int) -> None:
        """TIOCSWINSZ on the master; values truncated to uint16. Raises Internal on failure."""
        try:
            self.set_window_size(self._master.fileno(), rows, cols)
        except trio.ClosedResourceError as exc:
            raise Internal("resize: terminal closed") from exc

    @staticmethod
    def set_window_size(master: int, rows: int, cols: int) -> None:
        """TIOCSWINSZ on the PTY master fd ``master``; values truncated to uint16.

        Also for a master no relay owns yet: a resize queued before start is applied while the
        launch still holds the master, before the workload execs. Raises Internal on failure.
        """
        winsize = struct.pack("HHHH", rows & 0xFFFF, cols & 0xFFFF, 0, 0)
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
        except OSError as exc:
            raise Internal(f"resize: {exc}") from exc

    async def close_stdin(self) -> None:
        """Deliver what the host already sent, then close only the host stdin socket.

        Reads the socket until it has nothing more right now and writes all of it to the
        master (waiting while the terminal's input buffer is full), then closes the socket.
        The master stays open, so the program does not see EOF (vminitd's behaviour, kept).
        Idempotent; a no-op without a stdin socket. Cancelling this call leaves the delivery
        to :meth:`run` (or, before run started, closes the socket).
        """
        if self._stdin is None or self._stdin_done.is_set():
            return
        self._stdin_draining = True
        if self._stdin_idle is not None:
            self._stdin_idle.cancel()
        if self._stdin_running:
            await self._stdin_done.wait()
        else:
            await self._host_to_master()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay both ways until the process exited and the master is drained.

        Reports started (for ``nursery.start``) once both directions are set up. Closes the
        sockets and the master at the end and on cancellation.
        """
        if self._started:
            task_status.started()
            await self._done.wait()
            return
        self._started = True
        try:
            async with trio.open_nursery() as nursery:
                if self._stdin is not None and not self._stdin_running:
                    nursery.start_soon(self._host_to_master)
                task_status.started()
                with self._drain_scope:
                    await self._master_to_host()
                if self._drain_scope.cancelled_caught:
                    log.warning(
                        "pty: output drain stopped after %.3gs grace, output may be truncated",
                        self._grace,
                    )
                nursery.cancel_scope.cancel()
        finally:
            self._close_stdin_socket()
            if self._stdout is not None:
                self._stdout.socket.close()
            self._master.close()
            self._done.set()

    # -- master -> host -----------------------------------------------------------------------

    async def _master_to_host(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            if self._stdout is not None and not self._host_stdout_ok:
                await self._exited.wait()  # the host reader is gone: see the module docstring
                return
            try:
                data = os.read(self._master.fileno(), _READ_SIZE)
            except BlockingIOError:
                if self._exited.is_set():
                    return
                await self._wait_master_readable()
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    log.warning("pty: reading the master failed: %s", exc)
                    return
                data = b""
            if not data:
                # EIO (or a 0-byte read): no slave open at the moment. Not EOF: wait for the
                # process to exit, re-checking in case the terminal is opened again.
                self._slave_closed.set()
                if self._exited.is_set():
                    return
                with trio.move_on_after(backoff):
                    await self._exited.wait()
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_MIN
            await self._send_to_host(memoryview(data))

    async def _wait_master_readable(self) -> None:
        with trio.CancelScope() as scope:
            self._stdout_idle = scope
            try:
                await trio.lowlevel.wait_readable(self._master.fileno())
            finally:
                self._stdout_idle = None

    async def _send_to_host(self, data: memoryview) -> None:
        sock = self._stdout
        while data and self._host_stdout_ok and sock is not None:
            try:
                sent = os.write(sock.socket.fileno(), data)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock.socket)
                continue
            except OSError as exc:
                log.info("pty: host stdout ended (%s); discarding further output", exc)
                self._host_stdout_ok = False
                sock.socket.close()
                return
            data = data[sent:]
            self.bytes_out += sent

    # -- host -> master -----------------------------------------------------------------------

    async def _host_to_master(self) -> None:
        assert self._stdin is not None
        self._stdin_running = True
        sock = self._stdin.socket
        view = memoryview(bytearray(_READ_SIZE))
        try:
            while True:
                try:
                    count = os.readv(sock.fileno(), [view])
                except BlockingIOError:
                    if self._stdin_draining:
                        return
                    with trio.CancelScope() as scope:
                        self._stdin_idle = scope
                        try:
                            await trio.lowlevel.wait_readable(sock)
                        finally:
                            self._stdin_idle = None
                    continue
                except OSError as exc:
                    log.info("pty: host stdin ended: %s", exc)
                    return
                if count == 0:
                    return
                await self._write_to_master(view[:count])
        except (OSError, trio.ClosedResourceError) as exc:
            log.warning("pty: writing to the master failed: %s", exc)
        finally:
            self._close_stdin_socket()

    async def _write_to_master(self, data: memoryview) -> None:
        backoff = _BACKOFF_MIN
        while data:
            try:
                written = os.write(self._master.fileno(), data)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._master.fileno())
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                # No slave open: keep the bytes for when one is (or drop them at exit).
                await trio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            data = data[written:]
            self.bytes_in += written

    def _close_stdin_socket(self) -> None:
        if self._stdin is not None:
            self._stdin.socket.close()
        self._stdin_done.set()
