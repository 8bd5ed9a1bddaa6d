"""CgroupManager and read_stats against the machine's real cgroup v2 hierarchy.

Only directories this test creates are touched: the manager's root is a fresh
``trinit-test-<random>`` directory under the cgroup2 mount (``/sys/fs/cgroup`` in a guest,
``/sys/fs/cgroup/unified`` on this hybrid-mode development machine), so even controller
enabling writes only to our own directories. Everything is removed in ``finally``.
What this machine allows is limited (no memory/pids/cpu controllers): missing files are
expected to be skipped, not to fail.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator

import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit.cgroup import ALL_STAT_CATEGORIES, CgroupManager, read_stats


def start_sleepers(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "100"]) for _ in range(count)]


def exists(path: str) -> bool:
    return os.path.exists(path)


def read(path: str) -> str:
    with open(path) as file:
        return file.read()


def cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as file:
        for line in file:
            fields = line.split()
            separator = fields.index("-")
            if fields[separator + 1] == "cgroup2":
                return fields[4]
    return None


def remove_leftovers(top: str) -> None:
    """Kill what is left in our test tree and rmdir it bottom-up (cleanup on failure)."""
    for directory, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            with open(os.path.join(directory, "cgroup.procs")) as procs:
                for pid in procs.read().split():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    for directory, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(directory)
        except OSError:
            pass


@pytest.fixture
def test_root() -> Iterator[str]:
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mount")
    top = os.path.join(mount, f"trinit-test-{secrets.token_hex(4)}")
    try:
        os.mkdir(top)
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {mount}: {exc}")
    try:
        yield top
    finally:
        remove_leftovers(top)
        assert not os.path.exists(top)


async def test_real_cgroup_lifecycle(test_root: str) -> None:
    manager = CgroupManager(test_root)
    leaf = manager.create("/pod/c1")
    assert leaf == os.path.join(test_root, "pod", "c1")
    assert exists(os.path.join(leaf, "cgroup.procs"))  # it is a real cgroup

    manager.apply_resources(
        leaf,
        {
            "memory": {"limit": 64 << 20},
            "cpu": {"quota": 50000, "period": 100000},
            "pids": {"limit": 64},
        },
    )
    if exists(os.path.join(leaf, "memory.max")):
        assert read(os.path.join(leaf, "memory.max")).strip() == str(64 << 20)

    (sleeper,) = start_sleepers(1)
    try:
        manager.add_process(leaf, sleeper.pid)
        mount = os.path.dirname(test_root)
        assert CgroupManager(mount).cgroup_of(sleeper.pid) == leaf
        assert manager.cgroup_of(sleeper.pid).endswith("/pod/c1")

        stats = read_stats(leaf, ALL_STAT_CATEGORIES - {pb.STAT_CATEGORY_NETWORK})
        assert stats.HasField("cpu")  # cpu.stat exists in every non-root cgroup
        assert stats.HasField("block_io") and stats.HasField("memory_events")
        if stats.HasField("process"):  # only with the pids controller
            assert stats.process.current == 1
            assert stats.process.limit == 64

        await manager.remove(leaf)  # cgroup.kill kills the sleeper
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not exists(leaf)
    assert exists(os.path.join(test_root, "pod", "cgroup.procs"))  # ancestors stay


async def test_real_remove_with_child_cgroups_and_missing_dir(test_root: str) -> None:
    manager = CgroupManager(test_root)
    leaf = manager.create("/c2")
    child = os.path.join(leaf, "inner")
    os.mkdir(child)
    sleepers = start_sleepers(2)
    try:
        manager.add_process(leaf, sleepers[0].pid)
        manager.add_process(child, sleepers[1].pid)
        await manager.remove(leaf)
        assert [s.wait(timeout=5) for s in sleepers] == [-signal.SIGKILL] * 2
        assert not exists(leaf)
        await manager.remove(leaf)  # already gone: success
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
