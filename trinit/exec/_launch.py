"""Parent side of the exec helper protocol (docs/protocol.md §5.5), on trio.

:func:`launch` spawns ``trinit.exec._child`` with ``os.posix_spawn`` (never ``subprocess``:
the daemon's single reaper owns every pid), feeds the pids it learns to ``on_pid`` before
the processes can exit, acknowledges them, optionally takes over the PTY master, and reads
the helper's error pipe to EOF. It owns the three pipes for its whole duration and closes
every end before it returns or raises; the only fd that outlives it is the PTY master in
the result, which then belongs to the caller.

The helper runs as ``python -I -S -c <bootstrap> <argv_tail>``: ``-I -S`` keeps start-up
cheap and independent of the environment. The bootstrap registers ``trinit`` and
``trinit.exec`` as bare package stubs pointing at this source tree, so the helper imports
``_child``, ``_mountopts`` and ``trinit._linux`` without running a package ``__init__``
(``trinit.exec``'s imports trio).

:func:`launch_via` is the same protocol with the spawn step first offered to a warm helper
(``trinit.exec._zygote``): a helper started earlier with :data:`ZYGOTE_BOOTSTRAP` that is
handed this launch's argv, environment and fds 0..5 instead of being spawned now. Everything
after the spawn step is identical, so both kinds of helper behave the same to the caller.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from trinit import _linux as linux
from trinit.errors import Internal

ERROR_READ_GRACE = 2.0
"""Seconds to wait for the helper's error text after a failure or cancellation."""

_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


def _bootstrap(entry: str, prologue: str = "") -> str:
    return (
        prologue + "import sys\n"
        f"R={_SOURCE_ROOT!r}\n"
        "for n,p in(('trinit',R+'/trinit'),('trinit.exec',R+'/trinit/exec')):\n"
        " m=type(sys)(n);m.__path__=[p];sys.modules[n]=m\n"
        f"from trinit.exec._child import {entry}\n"
        f"{entry}()\n"
    )


BOOTSTRAP = _bootstrap("entry")
ZYGOTE_BOOTSTRAP = _bootstrap(
    "zygote_entry", "import _signal\n_signal.signal(_signal.SIGINT,_signal.SIG_IGN)\n"
)
"""The fork server (``trinit.exec._zygote``): imports, then forks a helper per request on fd 3.

It ignores SIGINT (a helper it forks restores the default): it shares the agent's process
group, so a ^C in the agent's terminal reaches it too, and the agent, which handles that
SIGINT, kills it on the way out; a KeyboardInterrupt traceback of its own would only be
noise on the agent's stderr. (``_signal`` is built in: no import cost.)"""

_FIRST_FREE_FD = 6  # the helper's fds 0..5 are targets of the file actions


def _default_signals() -> list[int]:
    # valid_signals() already leaves out glibc's internal real-time signals.
    skip = (signal.SIGKILL, signal.SIGSTOP)
    return [signum for signum in signal.valid_signals() if signum not in skip]


_DEFAULT_SIGNALS = _default_signals()


@dataclass
class LaunchResult:
    pid: int
    """The container process pid, as seen from trinit's PID namespace."""
    pty_master: int | None
    """Terminal mode: the PTY master, duplicated into trinit; owned by the caller."""


class _Fds:
    """The pipe ends trinit holds during one launch; closes each one exactly once."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def add(self, name: str, fd: int) -> int:
        self._fds[name] = fd
        return fd

    def close(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)

    def close_all(self) -> None:
        for name in list(self._fds):
            self.close(name)


async def _read_exact(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = os.read(fd, size - len(data))
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            continue
        if not chunk:
            break
        data += chunk
    return data


async def _read_to_eof(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)


def _high_dup(fd: int, temporaries: list[int]) -> int:
    """``fd`` itself, or a CLOEXEC duplicate >= 6 if it would collide with a target fd."""
    if fd >= _FIRST_FREE_FD:
        return fd
    dup = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _FIRST_FREE_FD)
    temporaries.append(dup)
    return dup


def spawn_python(
    python: str,
    args: list[str],
    fds: Mapping[int, int],
    env: Mapping[str, str],
) -> int:
    """``posix_spawn`` ``python -I -S <args>`` with ``fds`` ({target: source}, borrowed;
    targets below 6, see :func:`_high_dup`).

    Default signal dispositions and an empty mask; blocking (vfork + exec): call it from a
    worker thread. Every other fd of trinit is CLOEXEC and stays out.
    """
    temporaries: list[int] = []
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, _high_dup(source, temporaries), target)
            for target, source in fds.items()
        ]
        return os.posix_spawn(
            python,
            [python, "-I", "-S", *args],
            env,
            file_actions=actions,
            setsigdef=_DEFAULT_SIGNALS,
            setsigmask=(),
        )
    finally:
        for fd in temporaries:
            os.close(fd)


def _spawn(
    python: str,
    argv_tail: list[str],
    env: Mapping[str, str],
    stdio: tuple[int, int, int],
    helper_ends: tuple[int, int, int],
) -> int:
    fds = dict(enumerate((*stdio, *helper_ends)))
    return spawn_python(python, ["-c", BOOTSTRAP, *argv_tail], fds, env)


Handoff = Callable[[list[str], Mapping[str, str], tuple[int, ...]], Awaitable[int | None]]
"""Give a launch to a warm helper: ``(argv_tail, env, fds 0..5) -> helper pid``, or None if
that helper is gone (nothing was started: the launch spawns a fresh helper instead)."""


async def launch(
    argv_tail: list[str],
    *,
    stdio: tuple[int, int, int],
    on_pid: Callable[[int], None],
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    terminal: bool = False,
    before_ack: Callable[[int], Awaitable[None]] | None = None,
    on_console: Callable[[int], None] | None = None,
) -> LaunchResult:
    """Start one container process through the exec helper and return its pid.

    ``argv_tail`` is the helper command (``["run", "--bundle-path", DIR]`` or ``["exec",
    "--process-path", FILE, "--parent-pid", PID]``). ``stdio`` are the fds the helper gets
    as 0, 1, 2; they are borrowed (the caller closes its copies). ``on_pid`` is called
    synchronously with the helper's pid right after the spawn (its exit status is of no
    interest) and with the container pid before that process is acknowledged, so a reaper
    can register both before either can exit. ``before_ack(pid)`` runs between those two
    steps (e.g. cgroup placement of an exec). In terminal mode ``on_console(master)`` is
    called with the PTY master (still owned by this call) before ``AckConsole``, i.e. before
    the workload can exec: the place to set a terminal size it must see from its first byte.

    Raises :class:`trinit.errors.Internal` ``"vmexec error: <text>"`` when the helper
    reports a failure (or breaks off the protocol). On any other failure (e.g. from
    ``before_ack`` or ``on_pid``) or on cancellation, every pipe end is closed (so a child
    waiting for an ack gets EOF and exits), the error pipe is read for at most
    :data:`ERROR_READ_GRACE` seconds, shielded, and the original exception propagates with
    the helper's text as a note. A container pid already passed to ``on_pid`` may then
    still be alive: killing it is the caller's job. Nothing is left open except, on
    success, ``LaunchResult.pty_master``.
    """
    return await launch_via(
        None, argv_tail, stdio=stdio, on_pid=on_pid, python=python, env=env,
        terminal=terminal, before_ack=before_ack, on_console=on_console,
    )  # fmt: skip


async def launch_via(
    handoff: Handoff | None,
    argv_tail: list[str],
    *,
    stdio: tuple[int, int, int],
    on_pid: Callable[[int], None],
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    terminal: bool = False,
    before_ack: Callable[[int], Awaitable[None]] | None = None,
    on_console: Callable[[int], None] | None = None,
) -> LaunchResult:
    """:func:`launch`, but first offered to ``handoff`` (a warm helper); a fresh spawn if
    that returns None. Same contract as :func:`launch` in every other respect."""
    fds = _Fds()
    helper = _Fds()
    pty: list[int] = []  # the PTY master while this function still owns it
    try:
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        fds.add("sync", sync_r)
        helper.add("sync", sync_w)
        ack_r, ack_w = os.pipe2(os.O_CLOEXEC)
        fds.add("ack", ack_w)
        helper.add("ack", ack_r)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        fds.add("error", err_r)
        helper.add("error", err_w)
        for fd in (sync_r, ack_w, err_r):
            os.set_blocking(fd, False)
        try:
            environment = os.environ if env is None else env
            helper_pid = None
            if handoff is not None:
                helper_pid = await handoff(argv_tail, environment, (*stdio, sync_w, ack_r, err_w))
            if helper_pid is None:
                helper_pid = await trio.to_thread.run_sync(
                    _spawn, python, argv_tail, environment, stdio, (sync_w, ack_r, err_w)
                )
            on_pid(helper_pid)
            helper.close_all()
            pid = await _handshake(sync_r, ack_w, on_pid, terminal, before_ack, on_console, pty)
            fds.close("ack")
            fds.close("sync")
            text = await _read_text(err_r)
        except BaseException as exc:
            # Unblock a child waiting for an ack, then collect what it has to say.
            fds.close("ack")
            fds.close("sync")
            helper.close_all()
            with trio.CancelScope(shield=True), trio.move_on_after(ERROR_READ_GRACE):
                text = ""
                text = await _read_text(err_r)
            if isinstance(exc, _HelperFailed):
                raise Internal(f"vmexec error: {text or exc}") from None
            if text:
                exc.add_note(f"exec helper: {text}")
            raise
        if text:
            raise Internal(f"vmexec error: {text}")
        result = LaunchResult(pid=pid, pty_master=pty.pop() if pty else None)
        return result
    finally:
        fds.close_all()
        helper.close_all()
        for fd in pty:
            os.close(fd)


async def _read_text(fd: int) -> str:
    return (await _read_to_eof(fd)).decode("utf-8", "replace").strip()


async def _handshake(
    sync_r: int,
    ack_w: int,
    on_pid: Callable[[int], None],
    terminal: bool,
    before_ack: Callable[[int], Awaitable[None]] | None,
    on_console: Callable[[int], None] | None,
    pty: list[int],
) -> int:
    """Steps 2-5 of docs/protocol.md §5.5.

    Returns the container pid; appends the PTY master to ``pty``.
    """
    raw = await _read_exact(sync_r, 4)
    if len(raw) != 4:
        raise _HelperFailed("the helper exited before reporting a pid")
    pid = int.from_bytes(raw, sys.byteorder, signed=True)
    on_pid(pid)
    if before_ack is not None:
        await before_ack(pid)
    await _write_ack(ack_w, b"AckPid")
    if terminal:
        raw = await _read_exact(sync_r, 4)
        if len(raw) != 4:
            raise _HelperFailed("the helper exited before sending the console fd")
        child_fd = int.from_bytes(raw, sys.byteorder, signed=True)
        try:
            pidfd = linux.pidfd_open(pid)
            try:
                pty.append(linux.pidfd_getfd(pidfd, child_fd))
            finally:
                os.close(pidfd)
        except OSError as exc:
            raise Internal(f"failed to take the PTY master of {pid}: {exc}") from None
        if on_console is not None:
            on_console(pty[0])
        await _write_ack(ack_w, b"AckConsole")
    return pid


class _HelperFailed(Exception):
    """The protocol broke off without error text (yet)."""


async def _write_ack(ack_w: int, ack: bytes) -> None:
    """Write an ack. If the container process is gone already (killed while it waited, by
    the OOM killer say, or failed before it got to wait), the write finds no reader: that
    is a failed launch, and the process's error text, if any, is what the caller reports."""
    try:
        await _write_all(ack_w, ack)
    except BrokenPipeError:
        raise _HelperFailed(f"the helper exited before {ack.decode()}") from None
