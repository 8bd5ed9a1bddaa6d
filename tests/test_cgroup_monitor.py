"""MemoryMonitor on a plain memory.events file: inotify for real, polling under MockClock."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from trinit.cgroup import MemoryMonitor


class LogWaiter(logging.Handler):
    """Collects trinit.cgroup records with their trio time; lets a test await one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int, str, float]] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage(), trio.current_time()))
        self._changed.set()

    async def wait_for(self, level: int, count: int = 1) -> list[tuple[int, str, float]]:
        while len(matching := [r for r in self.records if r[0] == level]) < count:
            self._changed = trio.Event()
            await self._changed.wait()
        return matching


@pytest.fixture
def logs() -> Iterator[LogWaiter]:
    handler = LogWaiter()
    logger = logging.getLogger("trinit.cgroup")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    (tmp_path / "memory.high").write_text("83886080\n")
    (tmp_path / "memory.current").write_text("90000000\n")
    path = tmp_path / "memory.events"
    path.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    return path


def rewrite(path: Path, text: str) -> None:
    """Replace the file's content (truncate + write: two IN_MODIFY events, as tests expect)."""
    path.write_text(text)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_inotify_warns_on_high_and_errors_on_oom(events_file: Path, logs: LogWaiter) -> None:
    before = open_fds()
    monitor = MemoryMonitor()
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run, str(events_file))
        rewrite(events_file, "low 0\nhigh 1\nmax 0\noom 0\noom_kill 0\n")
        (warning,) = await logs.wait_for(logging.WARNING)
        assert "threshold=83886080" in warning[1]
        assert "current=90000000" in warning[1]
        assert "high_events=1" in warning[1]
        # Same count again: no new warning. Then an OOM kill: an error.
        rewrite(events_file, "low 0\nhigh 1\nmax 0\noom 1\noom_kill 1\n")
        (error,) = await logs.wait_for(logging.ERROR)
        assert "oom=1 oom_kill=1" in error[1]
        assert len([r for r in logs.records if r[0] == logging.WARNING]) == 1
        assert monitor.events["oom_kill"] == 1
        nursery.cancel_scope.cancel()
    assert open_fds() == before


async def test_inotify_stops_when_file_goes_away(events_file: Path, logs: LogWaiter) -> None:
    before = open_fds()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(MemoryMonitor().run, str(events_file))
            os.unlink(str(events_file))  # the monitor returns on IN_IGNORED; the nursery then ends
    assert any("removed" in message for _, message, _ in logs.records)
    assert open_fds() == before


async def test_missing_file_returns_at_once(tmp_path: Path, logs: LogWaiter) -> None:
    await MemoryMonitor().run(str(tmp_path / "memory.events"))
    assert [level for level, _, _ in logs.records] == [logging.WARNING]


async def test_polling_checks_once_a_second(
    events_file: Path, logs: LogWaiter, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(MemoryMonitor(use_inotify=False).run, str(events_file))
        await trio.sleep(0.5)
        rewrite(events_file, "high 3\n")
        (warning,) = await logs.wait_for(logging.WARNING)
        assert warning[2] - start == pytest.approx(1.0)
        await trio.sleep(0.6)  # t = 1.6 (after the wait returned at 1.0)
        rewrite(events_file, "high 3\noom 1\n")
        (error,) = await logs.wait_for(logging.ERROR)
        assert error[2] - start == pytest.approx(2.0)
        await trio.sleep(5)
        # Unchanged counts are not reported again.
        assert [r[0] for r in logs.records] == [logging.WARNING, logging.ERROR]
        rewrite(events_file, "high 4\noom 1\n")
        await logs.wait_for(logging.ERROR, count=2)
        assert [r[0] for r in logs.records][2:] == [logging.WARNING, logging.ERROR]
        nursery.cancel_scope.cancel()
