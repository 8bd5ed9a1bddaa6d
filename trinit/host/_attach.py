"""An interactive session with one container process: what ``trinit run -t`` is made of.

:func:`attach` connects a process to this program's own file descriptors: stdin → the
process (a terminal's input raw, byte for byte, so ^C and arrow keys reach the program
inside), the process's output → stdout/stderr, the caller's window size → ResizeProcess at
start and on every SIGWINCH, and forwarded signals → KillProcess. It returns the exit code.

Why a relay thread and a pipe: gRPC calls must not be made from a signal handler (the main
thread may be inside another gRPC call), and a thread blocked in ``read(stdin)`` could not
be stopped when the process exits (it would swallow the caller's next keystroke). So the
handlers only write the signal number to a pipe, and one thread waits on that pipe and on
stdin together (``select``), makes the calls, and stops when told to through the same pipe.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import termios
import threading
import tty
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from ._client import Process

#: what a docker-style CLI forwards to the process it runs (SIGINT only arrives as a signal
#: when the terminal is not raw, i.e. without ``-t``)
FORWARDED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

_STOP = 0  # "stop the relay" on the wake-up pipe; signal numbers are never 0


def fd_sink(fd: int) -> Callable[[bytes], None]:
    """A stdout/stderr sink writing every byte to ``fd`` (waits out a non-blocking fd)."""

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                select.select([], [fd], [])
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    return  # the reader went away: drop the output, keep the process going
                raise

    return write


def attach(
    proc: Process,
    *,
    stdin_fd: int | None = 0,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
    signals: Iterable[int] = FORWARDED_SIGNALS,
    raw: bool = True,
) -> int:
    """Run ``proc`` attached to the given fds until it exits; returns its exit code.

    A process not created yet is created here with its output going to ``stdout_fd`` and
    ``stderr_fd`` and a stdin connection when ``stdin_fd`` is not None; a process created
    by the caller keeps its own sinks (create it with ``stdin=True`` to forward input). It
    is then started (unless it was), and for a terminal process (``process.terminal``) the
    caller's terminal is put in raw mode (``raw``) and its size sent before the start and on
    every SIGWINCH. End of input closes a pipe stdin (the program reads EOF); a terminal
    gets no EOF (docs/protocol.md §5.4). When ``stdin_fd`` is a terminal that hangs up, the
    process is killed (SIGKILL): nothing could reach it any more. Signal forwarding and
    SIGWINCH need the main thread; elsewhere they are skipped. The terminal mode and signal
    handlers are restored and the relay thread stopped before this returns or raises. The
    process is not deleted.
    """
    if proc.pid is None and not proc.created:
        proc.stdin = stdin_fd is not None
        if proc.stdout_sink is None:
            proc.stdout_sink = fd_sink(stdout_fd)
        if proc.stderr_sink is None:
            proc.stderr_sink = fd_sink(stderr_fd)
        proc.create()
    forward_input = stdin_fd is not None and proc.stdin
    terminal_fd = _terminal_fd(stdin_fd, stdout_fd) if proc.terminal else None
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        wanted = set(signals)
        if terminal_fd is not None:
            wanted.add(signal.SIGWINCH)
            if proc.pid is None:
                _send_size(proc, terminal_fd)  # before the start: right from the first byte
        with _handlers(wanted, wake_w), _raw_mode(stdin_fd if raw and proc.terminal else None):
            relay = _Relay(proc, stdin_fd if forward_input else None, wake_r, terminal_fd)
            relay.start()
            try:
                if proc.pid is None:
                    proc.start()
                code = proc.wait()
                proc.join_output()
            finally:
                os.write(wake_w, bytes([_STOP]))
                relay.join()
        return code
    finally:
        os.close(wake_r)
        os.close(wake_w)


def _terminal_fd(*fds: int | None) -> int | None:
    """The first of ``fds`` that is a terminal: where the window size is read from."""
    return next((fd for fd in fds if fd is not None and os.isatty(fd)), None)


def _send_size(proc: Process, terminal_fd: int) -> None:
    try:
        size = os.get_terminal_size(terminal_fd)
    except OSError:
        return
    if size.lines and size.columns:
        proc.resize(size.lines, size.columns)


@contextlib.contextmanager
def _handlers(signals: set[int], wake_w: int) -> Iterator[None]:
    """Handlers that only write the signal number to the wake-up pipe (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: the relay is busy anyway
            os.write(wake_w, bytes([signum]))

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _raw_mode(fd: int | None) -> Iterator[None]:
    """The caller's terminal in raw mode for the session (no-op for a non-terminal)."""
    if fd is None or not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):  # a terminal that hung up has no mode
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class _Relay(threading.Thread):
    """stdin → process, wake-up pipe → resize / kill / stop. Never blocks outside select."""

    def __init__(
        self, proc: Process, stdin_fd: int | None, wake_r: int, terminal_fd: int | None
    ) -> None:
        super().__init__(name="attach-relay", daemon=True)
        self._proc = proc
        self._stdin_fd = stdin_fd
        self._wake_r = wake_r
        self._terminal_fd = terminal_fd
        # decided now: a terminal that has hung up is no longer one for isatty()
        self._stdin_is_tty = stdin_fd is not None and os.isatty(stdin_fd)

    def run(self) -> None:
        while True:
            watched = [self._wake_r] + ([self._stdin_fd] if self._stdin_fd is not None else [])
            ready, _, _ = select.select(watched, [], [])
            if self._wake_r in ready and not self._on_wake():
                return
            if self._stdin_fd is not None and self._stdin_fd in ready:
                self._on_input()

    def _on_wake(self) -> bool:
        """Handle queued signals; False once told to stop."""
        try:
            data = os.read(self._wake_r, 256)
        except BlockingIOError:
            return True
        for signum in data:
            if signum == _STOP:
                return False
            with contextlib.suppress(grpc.RpcError):  # exited meanwhile: nothing to do
                if signum == signal.SIGWINCH and self._terminal_fd is not None:
                    _send_size(self._proc, self._terminal_fd)
                elif signum != signal.SIGWINCH:
                    self._proc.kill(signum)
        return True

    def _on_input(self) -> None:
        assert self._stdin_fd is not None
        try:
            data = os.read(self._stdin_fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # a hung-up terminal: end of input
        if data:
            try:
                self._proc.write(data)
                return
            except OSError:
                pass  # the process's side is gone: stop forwarding
        hangup = self._stdin_is_tty  # raw mode: ^D is a byte, so this is a hangup
        self._stdin_fd = None
        with contextlib.suppress(grpc.RpcError):
            if hangup:
                # the caller's terminal is gone: end the session as a hangup ends a login
                # shell (a container init would ignore the SIGHUP the kernel sent here)
                self._proc.kill(signal.SIGKILL)
            elif not self._proc.terminal:
                self._proc.close_stdin()
