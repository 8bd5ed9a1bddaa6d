"""The reaper: the one and only caller of ``waitpid`` in trinit.

Theory of operation. SIGCHLD coalesces, so on every wakeup the reaper calls
``waitpid(-1, WNOHANG)`` until nothing is left and hands each status to whoever registered
that pid. Everything else in trinit learns exit statuses from here; nobody else may wait
(``subprocess`` and ``trio.run_process`` would race us and read a reaped child as status 0).

Fast exits are never lost: owners register a pid before the child can run (the exec
helper's ack pipe guarantees this), and a status that arrives for a pid nobody registered
yet is kept in a bounded table, so a late ``register`` still receives it. Statuses of pids
nobody ever claims (zygotes killed by ``Kill(-1)``, helper intermediates, orphans
re-parented to PID 1) stay in that table until it overflows, oldest first, so a kept status
may be far older than a process that got the same pid after the pid counter wrapped:
``register`` hands a kept status over only while no process holds that pid (a live process
or an unreaped zombie with the pid means the kept status belonged to an earlier one). The
reaper task never runs between that check and the hand-over: both happen in one step.

The reaper is an object created in ``main`` (tests build their own); it is driven either by
:meth:`run` (a SIGCHLD-driven task) or, in tests with a simulated backend, by calling
:meth:`deliver` directly.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

log = logging.getLogger("trinit.reaper")

_UNCLAIMED_LIMIT = 4096


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended, as vminitd reports it (docs/protocol.md §5.6)."""

    pid: int
    raw: int
    exited_at: float  # wall clock, seconds since the epoch

    @property
    def exit_code(self) -> int:
        """Exit status for a normal exit, 128 + signal when killed, else the raw status."""
        if os.WIFEXITED(self.raw):
            return os.WEXITSTATUS(self.raw)
        if os.WIFSIGNALED(self.raw):
            return 128 + os.WTERMSIG(self.raw)
        return self.raw


@dataclass(eq=False)
class ExitWatch:
    """A registration for one pid; :meth:`wait` returns its status (any number of times).

    :meth:`on_status` callbacks run synchronously when the reaper delivers the status, so an
    owner's state says "reaped" before any other task runs and nothing can signal a pid
    that may already belong to another process.
    """

    pid: int
    _event: trio.Event = field(default_factory=trio.Event)
    _status: ExitStatus | None = None
    _callbacks: list[Callable[[ExitStatus], None]] = field(default_factory=list)

    @property
    def status(self) -> ExitStatus | None:
        return self._status

    def on_status(self, callback: Callable[[ExitStatus], None]) -> None:
        """Call ``callback(status)`` when the status arrives (at once if it has)."""
        if self._status is not None:
            callback(self._status)
        else:
            self._callbacks.append(callback)

    def _set(self, status: ExitStatus) -> None:
        self._status = status
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(status)

    async def wait(self) -> ExitStatus:
        await self._event.wait()
        assert self._status is not None
        return self._status


def pid_in_use(pid: int) -> bool:
    """Whether some process (running, or a zombie nobody reaped yet) has ``pid`` now."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, we may just not signal it
    return True


class Reaper:
    def __init__(self, pid_in_use: Callable[[int], bool] = pid_in_use) -> None:
        """``pid_in_use`` is the liveness check of :meth:`register` (tests with simulated
        pids pass their own)."""
        self._watches: dict[int, ExitWatch] = {}
        self._unclaimed: collections.OrderedDict[int, ExitStatus] = collections.OrderedDict()
        self._pid_in_use = pid_in_use

    def register(self, pid: int) -> ExitWatch:
        """Watch ``pid``. Call before the process can exit unobserved (i.e. before the next
        await after learning the pid, or before releasing the child)."""
        existing = self._watches.get(pid)
        if existing is not None and existing.status is None:
            return existing
        watch = ExitWatch(pid)
        early = self._unclaimed.pop(pid, None)
        if early is not None and not self._pid_in_use(pid):
            watch._set(early)
        else:
            self._watches[pid] = watch
        return watch

    def forget(self, pid: int) -> None:
        """Drop interest in ``pid`` (its status, if it comes, is discarded)."""
        self._watches.pop(pid, None)

    def deliver(self, pid: int, raw_status: int) -> None:
        """Record that ``pid`` ended with ``raw_status`` and wake its watcher."""
        status = ExitStatus(pid, raw_status, time.time())
        watch = self._watches.pop(pid, None)
        if watch is not None:
            watch._set(status)
            return
        self._unclaimed.pop(pid, None)  # a newer status for a reused pid goes to the back
        self._unclaimed[pid] = status
        while len(self._unclaimed) > _UNCLAIMED_LIMIT:
            self._unclaimed.popitem(last=False)

    def reap_all(self) -> int:
        """Reap every exited child now (non-blocking); returns how many were reaped."""
        count = 0
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return count
            except InterruptedError:
                continue
            if pid == 0:
                return count
            count += 1
            self.deliver(pid, raw)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reap on every SIGCHLD until cancelled. Must run in the main thread."""
        with trio.open_signal_receiver(signal.SIGCHLD) as signals:
            self.reap_all()
            task_status.started()
            async for _ in signals:
                self.reap_all()
