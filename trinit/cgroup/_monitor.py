"""MemoryMonitor: watches trinit's own cgroup ``memory.events`` and logs pressure.

Theory of operation (docs/protocol.md §7.2). The kernel signals a change of ``memory.events``
as an inotify IN_MODIFY on the file. On each change the monitor re-reads the file: when the
``high`` count has risen it logs a warning (with ``memory.high`` and ``memory.current`` of
the same directory), and whenever ``oom`` or ``oom_kill`` is above zero it logs an error.
It only logs; it never acts. Without inotify (libc lacks it, or the watch is
refused) it polls once a second on the trio clock instead.

Invariants: the inotify fd is non-blocking, waited on with trio, and closed when
:meth:`MemoryMonitor.run` returns or is cancelled. Every file read (and loading libc for
inotify) happens in a worker thread: the monitor shares the event loop with every RPC, and
a read is a blocking call even on cgroupfs. Only a change of the file's counts is
reported (so polling does not repeat the same error every second), and an empty read (a
writer that truncates first, as tests do) never resets the baseline.
"""

from __future__ import annotations

import logging
import os
import struct

import trio

from trinit import _linux as linux

from . import _format

log = logging.getLogger("trinit.cgroup")

_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
POLL_INTERVAL = 1.0


class MemoryMonitor:
    """Logs memory pressure of one cgroup. ``use_inotify=False`` forces polling (tests)."""

    def __init__(self, *, use_inotify: bool = True) -> None:
        self._use_inotify = use_inotify
        self.high_count = 0
        self.events: dict[str, int] = {}

    async def run(
        self, events_path: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch ``events_path`` until cancelled (or until the watched file goes away).

        Reports started (``nursery.start``) once the baseline is read and the watch is set:
        a change after that is seen. Returns at once, after a warning and without reporting
        started, if the file does not exist (a hierarchy without the memory controller).
        Cancellation: stops at the next wait (a read already running in its thread completes
        first); closes the inotify fd.
        """
        try:
            self.events = await trio.to_thread.run_sync(_read_events, events_path)
        except FileNotFoundError:
            log.warning("memory monitor: %s does not exist; not monitoring", events_path)
            return
        self.high_count = self.events.get("high", 0)
        inotify_fd = None
        if self._use_inotify:
            inotify_fd = await trio.to_thread.run_sync(_open_inotify, events_path)
        if inotify_fd is None:
            task_status.started()
            await self._poll(events_path)
            return
        try:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(inotify_fd)
                if _drain(inotify_fd):  # non-blocking reads of the inotify fd
                    log.warning("memory monitor: watch on %s removed; stopping", events_path)
                    return
                await self._check(events_path)
        finally:
            trio.lowlevel.notify_closing(inotify_fd)
            os.close(inotify_fd)

    async def _poll(self, events_path: str) -> None:
        while True:
            await trio.sleep(POLL_INTERVAL)
            await self._check(events_path)

    async def _check(self, events_path: str) -> None:
        try:
            events = await trio.to_thread.run_sync(_read_events, events_path)
        except FileNotFoundError:
            return
        if not events or events == self.events:
            return  # truncated mid-write, or a poll that saw no change
        self.events = events
        high = events.get("high", 0)
        if high > self.high_count:
            directory = os.path.dirname(events_path)
            threshold, current = await trio.to_thread.run_sync(
                _read_values,
                os.path.join(directory, "memory.high"),
                os.path.join(directory, "memory.current"),
            )
            log.warning(
                "memory.high threshold exceeded: threshold=%s current=%s high_events=%d",
                threshold,
                current,
                high,
            )
        self.high_count = max(high, self.high_count)
        oom, oom_kill = events.get("oom", 0), events.get("oom_kill", 0)
        if oom > 0 or oom_kill > 0:
            log.error("trinit's cgroup hit OOM: oom=%d oom_kill=%d", oom, oom_kill)


def _read_events(path: str) -> dict[str, int]:
    with open(path, encoding="ascii", errors="replace") as file:
        return _format.parse_flat_keyed(file.read())


def _read_values(*paths: str) -> tuple[str, ...]:
    return tuple(_read_value(path) for path in paths)


def _read_value(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read().strip()
    except OSError:
        return "unknown"


def _open_inotify(path: str) -> int | None:
    """A non-blocking inotify fd watching ``path`` for IN_MODIFY, or None (then poll)."""
    try:
        fd = linux.inotify_init1(linux.IN_NONBLOCK | linux.IN_CLOEXEC)
    except OSError as exc:
        log.warning("memory monitor: inotify_init1: %s; polling", exc.strerror)
        return None
    try:
        linux.inotify_add_watch(fd, path, linux.IN_MODIFY)
    except OSError as exc:
        log.warning("memory monitor: inotify_add_watch %s: %s; polling", path, exc.strerror)
        os.close(fd)
        return None
    return fd


def _drain(fd: int) -> bool:
    """Read all queued inotify events; True if the watch was removed (IN_IGNORED)."""
    removed = False
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return removed
        if not data:
            return removed
        offset = 0
        while offset + _EVENT_HEADER.size <= len(data):
            _wd, mask, _cookie, name_len = _EVENT_HEADER.unpack_from(data, offset)
            if mask & linux.IN_IGNORED:  # the watch went away (file or cgroup removed)
                removed = True
            offset += _EVENT_HEADER.size + name_len
