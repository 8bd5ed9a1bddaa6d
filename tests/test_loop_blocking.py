"""No blocking call on the event loop: a 100-container create/delete storm keeps every single
task step short.

Everything the host asks goes through one trio loop, so a blocking call in any task step
(an rmtree of a bundle, a cgroup rmdir, a mountinfo read) freezes every RPC and stdio pump
for as long as it takes. The storm runs through the real :class:`ContainerRegistry` with the
simulated process backend of ``test_supervision``, real bundles on disk (each with a few
hundred files, some with a few thousand, so an rmtree on the loop takes well over the limit)
and real cgroup hooks on a private cgroup2 root when this machine allows one.

What is measured: the longest single task step (``before_task_step`` to ``after_task_step``)
in CPU time of the loop thread (``time.thread_time()``, CLOCK_THREAD_CPUTIME_ID, which the
kernel brings up to date on every read; the schedstat file lags by up to a scheduler tick and
can charge one step with the CPU of several). Work
done on the loop, in the process or in the kernel (an rmtree burns CPU in the kernel, a
mountinfo parse in Python), counts whatever else the machine does. What does not count is
time the loop thread waits without running: for a CPU on a loaded 2-core machine, or for
the GIL while the worker threads this test creates run Python; both are load, not blocking,
and made raw wall-clock steps of 40-80 ms here with well under 1 ms of CPU. (Blocking that
sleeps rather than burns CPU, such as opening a FIFO, is covered by the tests of
tests/test_agent_inroot.py, which hold the loop and check that another RPC is answered.)
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.lowlevel
from test_cgroup_real import cgroup2_mount, remove_leftovers
from test_supervision import FakeBackend, HostSide, _registry, spec

from trinit.nursery import CgroupHooks, ContainerCgroups, ContainerRegistry
from trinit.nursery._process import StdioPorts

CONTAINERS = 100
SMALL_BUNDLE_FILES = 150  # every bundle: a measurable rmtree
BIG_BUNDLE_FILES = 10000  # every 25th bundle: an on-loop rmtree well above the limit
LIMIT = 0.050


class LongestStep(trio.abc.Instrument):
    """Records the longest single task step (in the loop thread's CPU time) and its task.

    Create and use it on the event loop thread: it reads that thread's CPU clock.
    """

    def __init__(self) -> None:
        self.longest = 0.0  # seconds of CPU
        self.wall = 0.0  # that step's wall time
        self.task = ""
        self._started: dict[trio.lowlevel.Task, tuple[float, float]] = {}

    def close(self) -> None:
        pass

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started[task] = (time.perf_counter(), time.thread_time())

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        started = self._started.pop(task, None)
        if started is None:
            return  # added in the middle of this step
        wall = time.perf_counter() - started[0]
        took = time.thread_time() - started[1]
        if took > self.longest:
            self.longest, self.wall, self.task = took, wall, task.name


@pytest.fixture
def cgroup_root() -> Iterator[str | None]:
    """A private ``trinit-storm-<random>`` cgroup under the cgroup2 mount, removed after the
    test (also when it fails); None when this machine cannot create one."""
    mount = cgroup2_mount()
    if mount is None:
        yield None
        return
    top = os.path.join(mount, f"trinit-storm-{secrets.token_hex(4)}")
    try:
        os.mkdir(top)
    except OSError:
        yield None
        return
    try:
        yield top
    finally:
        remove_leftovers(top)
        assert not os.path.exists(top)


def _fill_bundles(bundles: Path) -> None:
    """Pre-create each container's bundle with files for DeleteProcess to remove (done
    before the storm; CreateProcess keeps an existing bundle directory). Hard links of one
    file: as many directory entries to unlink, at a fraction of the set-up time."""
    bundles.mkdir()
    source = bundles.parent / "bundle-file"
    source.write_bytes(b"x" * 64)
    for index in range(CONTAINERS):
        junk = bundles / f"c{index}" / "junk"
        junk.mkdir(parents=True)
        count = BIG_BUNDLE_FILES if index % 25 == 0 else SMALL_BUNDLE_FILES
        for number in range(count):
            os.link(source, junk / f"f{number}")


def _all_exist(paths: list[str]) -> bool:
    return all(os.path.isdir(path) for path in paths)


def _any_exists(paths: list[str]) -> bool:
    return any(os.path.exists(path) for path in paths)


async def _storm(tmp_path: Path, cgroup_root: str | None) -> LongestStep:
    """One 100-container create/start/delete storm; the instrument that measured it."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    _fill_bundles(tmp_path / "bundles")
    hooks = ContainerCgroups.for_root(cgroup_root) if cgroup_root else CgroupHooks()
    # where the registry puts each container's cgroup (the default cgroupsPath)
    groups = [
        os.path.join(cgroup_root, "container", f"c{i}") if cgroup_root else ""
        for i in range(CONTAINERS)
    ]
    configuration = spec(rootfs)
    async with trio.open_nursery() as nursery:
        registry, backend, hostside = await _registry(nursery, tmp_path, cgroups=hooks)
        assert isinstance(registry, ContainerRegistry) and isinstance(backend, FakeBackend)
        assert isinstance(hostside, HostSide)
        instrument = LongestStep()
        trio.lowlevel.add_instrument(instrument)
        try:
            async with trio.open_nursery() as storm:
                for index in range(CONTAINERS):
                    cid = f"c{index}"
                    storm.start_soon(registry.create_process, cid, cid, configuration, StdioPorts())
            assert len(registry.containers()) == CONTAINERS
            if cgroup_root:  # checked in a thread: this task's steps are measured too
                assert await trio.to_thread.run_sync(_all_exist, groups)
            async with trio.open_nursery() as storm:
                for index in range(CONTAINERS):
                    storm.start_soon(registry.start_process, f"c{index}", f"c{index}")
            async with trio.open_nursery() as storm:
                for index in range(CONTAINERS):
                    storm.start_soon(registry.delete_process, f"c{index}", f"c{index}")
        finally:
            trio.lowlevel.remove_instrument(instrument)
            instrument.close()
        hostside.close()
    assert registry.containers() == []
    assert list((tmp_path / "bundles").iterdir()) == []
    if cgroup_root:
        assert not await trio.to_thread.run_sync(_any_exists, groups)
    print(
        f"longest task step {instrument.longest * 1000:.1f} ms "
        f"({instrument.wall * 1000:.1f} ms wall) in {instrument.task}"
    )
    return instrument


async def test_storm_never_blocks_the_loop_for_50ms(
    tmp_path: Path, cgroup_root: str | None
) -> None:
    """Two storms; the better one must stay under the limit. A blocking call on the loop
    shows in every storm (it is in the code path); a one-off spike (this machine is itself a
    VM, and CPU time stolen by its host counts as the loop thread's) shows in one."""
    runs = []
    for attempt in ("first", "second"):
        (tmp_path / attempt).mkdir()
        runs.append(await _storm(tmp_path / attempt, cgroup_root))
        if runs[-1].longest < LIMIT:
            break
    best = min(runs, key=lambda run: run.longest)
    assert best.longest < LIMIT, (
        f"the event loop was blocked for {best.longest * 1000:.1f} ms "
        f"({best.wall * 1000:.1f} ms wall) in one step of {best.task}"
    )
