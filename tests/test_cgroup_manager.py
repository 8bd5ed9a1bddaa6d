"""CgroupManager against a temporary directory tree shaped like cgroupfs.

A plain directory is not cgroupfs: interface files exist only where the test creates them
and ``rmdir`` refuses non-empty directories, so removal tests inject an ``rmdir`` that
deletes the plain files first (and, for the retry schedule, fails with EBUSY on demand).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from trinit.cgroup import OWN_MEMORY_HIGH, OWN_MEMORY_LOW, CgroupManager, setup_own_cgroup
from trinit.errors import Internal, InvalidArgument, NotFound

ROOT_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n"
TOGGLED = "+cpuset +cpu +io +memory +hugetlb +pids"


def make_cgroup_dir(path: Path, *files: str) -> Path:
    """A fake cgroup directory holding empty interface files."""
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text("")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    cg_root = make_cgroup_dir(tmp_path / "cgroup", "cgroup.subtree_control", "cgroup.procs")
    (cg_root / "cgroup.controllers").write_text(ROOT_CONTROLLERS)
    return cg_root


def start_sleepers(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "100"]) for _ in range(count)]


def removing_rmdir(path: str) -> None:
    """rmdir for a fake tree: drop the plain interface files, then the directory."""
    for entry in os.scandir(path):
        if not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
    os.rmdir(path)


# -- paths ---------------------------------------------------------------------------


def test_container_path_normalises(root: Path) -> None:
    manager = CgroupManager(str(root) + "/")
    assert manager.container_path("/container/c1") == f"{root}/container/c1"
    assert manager.container_path("container//c1/./") == f"{root}/container/c1"


@pytest.mark.parametrize("bad", ["", "/", "/./", "/container/../..", "../x", "/a/..", "/a\0b"])
def test_container_path_refuses_escapes_and_root(root: Path, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        CgroupManager(str(root)).container_path(bad)


# -- create --------------------------------------------------------------------------


def test_create_enables_controllers_on_root_and_ancestors_only(root: Path) -> None:
    for name in ("container", "container/pod", "container/pod/p1"):
        make_cgroup_dir(root / name, "cgroup.subtree_control")
    manager = CgroupManager(str(root))

    leaf = manager.create("/container/pod/p1/c1")

    assert leaf == f"{root}/container/pod/p1/c1"
    assert stat.S_IMODE(os.stat(leaf).st_mode) == 0o755 & ~_umask()
    ancestors = [root, *(root / a for a in ("container", "container/pod", "container/pod/p1"))]
    for ancestor in ancestors:
        assert (ancestor / "cgroup.subtree_control").read_text() == TOGGLED
    assert not (root / "container/pod/p1/c1/cgroup.subtree_control").exists()


def test_create_keeps_controller_file_order_and_filters(root: Path) -> None:
    (root / "cgroup.controllers").write_text("misc hugetlb pids rdma memory\n")
    manager = CgroupManager(str(root))
    manager.create("/c1")
    assert (root / "cgroup.subtree_control").read_text() == "+hugetlb +pids +memory"


def test_create_without_controllers_writes_nothing_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trinit.cgroup")
    manager = CgroupManager(str(tmp_path))  # no cgroup.controllers: a tmpfs, not cgroupfs
    assert manager.create("/container/a") == f"{tmp_path}/container/a"
    assert manager.create("/container/b") == f"{tmp_path}/container/b"
    assert sorted(os.listdir(tmp_path / "container")) == ["a", "b"]
    assert sorted(os.listdir(tmp_path)) == ["container"]
    assert len([r for r in caplog.records if "cgroup.controllers" in r.getMessage()]) == 1


def test_create_failure_removes_new_leaf(root: Path) -> None:
    # /container has no cgroup.subtree_control: enabling there fails.
    manager = CgroupManager(str(root))
    with pytest.raises(Internal, match="enable controllers"):
        manager.create("/container/c1")
    assert not (root / "container/c1").exists()
    assert (root / "container").is_dir()  # ancestors stay


# -- resources -----------------------------------------------------------------------


def test_apply_resources_writes_limits(root: Path) -> None:
    leaf = make_cgroup_dir(root / "c1", "memory.max", "cpu.max", "pids.max")
    manager = CgroupManager(str(root))
    manager.apply_resources(
        str(leaf),
        {
            "memory": {"limit": 268435456},
            "cpu": {"quota": 200000, "period": 100000},
            "pids": {"limit": 100},
            "devices": [],
        },
    )
    assert (leaf / "memory.max").read_text() == "268435456"
    assert (leaf / "cpu.max").read_text() == "200000 100000"
    assert (leaf / "pids.max").read_text() == "100"


def test_apply_resources_negative_means_max(root: Path) -> None:
    leaf = make_cgroup_dir(root / "c1", "memory.max", "cpu.max", "pids.max")
    CgroupManager(str(root)).apply_resources(
        str(leaf),
        {"memory": {"limit": -1}, "cpu": {"quota": -1, "period": 50000}, "pids": {"limit": -1}},
    )
    assert (leaf / "memory.max").read_text() == "max"
    assert (leaf / "cpu.max").read_text() == "max 50000"
    assert (leaf / "pids.max").read_text() == "max"


def test_apply_resources_cpu_needs_quota_and_period(root: Path) -> None:
    leaf = make_cgroup_dir(root / "c1", "cpu.max")
    manager = CgroupManager(str(root))
    manager.apply_resources(str(leaf), {"cpu": {"quota": 100000}})
    manager.apply_resources(str(leaf), {"cpu": {"period": 100000, "shares": 5}})
    manager.apply_resources(str(leaf), None)
    manager.apply_resources(str(leaf), {})
    assert (leaf / "cpu.max").read_text() == ""


def test_apply_resources_missing_controllers_warn_once_each(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trinit.cgroup")
    leaf = make_cgroup_dir(root / "c1")
    manager = CgroupManager(str(root))
    resources = {
        "memory": {"limit": 1 << 20},
        "cpu": {"quota": 1, "period": 2},
        "pids": {"limit": 5},
    }
    manager.apply_resources(str(leaf), resources)
    manager.apply_resources(str(leaf), resources)
    warned = sorted(
        str(r.args[0])  # type: ignore[index]
        for r in caplog.records
        if r.name == "trinit.cgroup"
    )
    assert warned == ["cpu", "memory", "pids"]
    assert os.listdir(leaf) == []  # nothing invented


def test_apply_resources_other_errors_raise(root: Path) -> None:
    leaf = make_cgroup_dir(root / "c1")
    (leaf / "memory.max").mkdir()  # EISDIR on open for writing
    with pytest.raises(Internal, match=r"memory\.max"):
        CgroupManager(str(root)).apply_resources(str(leaf), {"memory": {"limit": 1}})


# -- membership ----------------------------------------------------------------------


def test_add_process_writes_cgroup_procs(root: Path) -> None:
    leaf = make_cgroup_dir(root / "c1", "cgroup.procs")
    CgroupManager(str(root)).add_process(str(leaf), 4242)
    assert (leaf / "cgroup.procs").read_text() == "4242"


def test_add_process_tolerates_non_cgroupfs_but_not_missing_dir(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trinit.cgroup")
    manager = CgroupManager(str(root))
    leaf = make_cgroup_dir(root / "plain")
    manager.add_process(str(leaf), 1)
    assert any("cgroup.procs" in r.getMessage() for r in caplog.records)
    with pytest.raises(Internal):
        manager.add_process(str(root / "missing"), 1)


def test_cgroup_of_reads_proc(root: Path) -> None:
    manager = CgroupManager(str(root))
    with open("/proc/self/cgroup") as file:
        line = next(entry for entry in file if entry.startswith("0::"))
    expected = os.path.normpath(str(root) + "/" + line[3:].strip())
    assert manager.cgroup_of(os.getpid()) == expected
    with pytest.raises(NotFound):
        manager.cgroup_of(2**22 + 1)  # above pid_max's ceiling: never exists


def test_cgroup_of_reads_mountinfo_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mountinfo grows with every container's mounts; cgroup_of (two calls per exec) reads
    it once per manager."""
    from trinit import _mountinfo
    from trinit.cgroup import _manager

    calls: list[str] = []
    real = _mountinfo.mount_containing  # the function _manager imported

    def counting(path: str) -> object:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(_manager, "mount_containing", counting)
    manager = CgroupManager(str(root))
    first = manager.cgroup_of(os.getpid())
    assert manager.cgroup_of(os.getpid()) == first
    assert calls == [str(root)]


def test_read_memory_events(root: Path) -> None:
    leaf = make_cgroup_dir(root / "c1")
    manager = CgroupManager(str(root))
    assert manager.read_memory_events(str(leaf)) == {}
    (leaf / "memory.events").write_text("low 0\nhigh 3\nmax 2\noom 1\noom_kill 1\n")
    assert manager.read_memory_events(str(leaf)) == {
        "low": 0,
        "high": 3,
        "max": 2,
        "oom": 1,
        "oom_kill": 1,
    }


def test_setup_own_cgroup(root: Path) -> None:
    make_cgroup_dir(root / "trinit", "memory.high", "memory.low", "cgroup.procs")
    own = setup_own_cgroup(CgroupManager(str(root)))
    assert own == f"{root}/trinit"
    assert (root / "trinit/memory.high").read_text() == str(OWN_MEMORY_HIGH) == "83886080"
    assert (root / "trinit/memory.low").read_text() == str(OWN_MEMORY_LOW) == "52428800"
    assert (root / "trinit/cgroup.procs").read_text() == str(os.getpid())
    assert (root / "cgroup.subtree_control").read_text() == TOGGLED


def test_setup_own_cgroup_without_controllers(tmp_path: Path) -> None:
    assert setup_own_cgroup(CgroupManager(str(tmp_path)), "x") == f"{tmp_path}/x"


# -- removal -------------------------------------------------------------------------


async def test_remove_kills_and_removes_subtree(root: Path) -> None:
    make_cgroup_dir(root / "container", "cgroup.subtree_control")
    leaf = make_cgroup_dir(root / "container/c1", "cgroup.kill", "cgroup.procs")
    make_cgroup_dir(leaf / "sub/deeper", "cgroup.procs")
    removed: list[str] = []

    def rmdir(path: str) -> None:
        kill_file = os.path.join(path, "cgroup.kill")
        if os.path.exists(kill_file):
            assert Path(kill_file).read_text() == "1"
        removed.append(os.path.relpath(path, root))
        removing_rmdir(path)

    await CgroupManager(str(root), rmdir=rmdir).remove(str(leaf))
    assert removed == ["container/c1/sub/deeper", "container/c1/sub", "container/c1"]
    assert (root / "container").is_dir()


async def test_remove_without_cgroup_kill_sigkills_every_member(root: Path) -> None:
    leaf = make_cgroup_dir(root / "c1")
    make_cgroup_dir(leaf / "child")
    sleepers = start_sleepers(2)
    try:
        (leaf / "cgroup.procs").write_text(f"{sleepers[0].pid}\n")
        (leaf / "child/cgroup.procs").write_text(f"{sleepers[1].pid}\n")
        await CgroupManager(str(root), rmdir=removing_rmdir).remove(str(leaf))
        for sleeper in sleepers:
            assert sleeper.wait(timeout=5) == -signal.SIGKILL
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    assert not leaf.exists()


async def test_remove_missing_dir_is_success(root: Path) -> None:
    calls: list[str] = []
    manager = CgroupManager(str(root), rmdir=calls.append)
    await manager.remove(str(root / "never/created"))
    assert calls == []


@pytest.mark.parametrize("path", ["", ".", "..", "/elsewhere"])
async def test_remove_refuses_root_and_outsiders(root: Path, path: str) -> None:
    manager = CgroupManager(str(root), rmdir=lambda p: pytest.fail(f"rmdir {p}"))
    target = os.path.join(root, path) if not path.startswith("/") else path
    with pytest.raises(InvalidArgument):
        await manager.remove(target)


def failing_rmdir(
    times: list[float], failures: int, err: int = errno.EBUSY
) -> Callable[[str], None]:
    def rmdir(path: str) -> None:
        # removal runs in a worker thread: ask the trio thread for its clock
        times.append(trio.from_thread.run_sync(trio.current_time))
        if len(times) <= failures:
            raise OSError(err, os.strerror(err), path)
        removing_rmdir(path)

    return rmdir


@pytest.mark.parametrize("err", [errno.EBUSY, errno.EAGAIN])
async def test_remove_retries_on_schedule(
    root: Path, autojump_clock: trio.testing.MockClock, err: int
) -> None:
    leaf = make_cgroup_dir(root / "c1", "cgroup.kill")
    times: list[float] = []
    start = trio.current_time()
    await CgroupManager(str(root), rmdir=failing_rmdir(times, 3, err)).remove(str(leaf))
    assert [round(t - start, 6) for t in times] == [0.0, 0.01, 0.03, 0.07]
    assert not leaf.exists()


async def test_remove_gives_up_after_five_attempts(
    root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    leaf = make_cgroup_dir(root / "c1", "cgroup.kill")
    times: list[float] = []
    start = trio.current_time()
    with pytest.raises(Internal) as info:
        await CgroupManager(str(root), rmdir=failing_rmdir(times, 99)).remove(str(leaf))
    assert info.value.message == "cgroups: unable to remove cgroup after 5 retries"
    assert [round(t - start, 6) for t in times] == [0.0, 0.01, 0.03, 0.07, 0.15]
    assert round(trio.current_time() - start, 6) == 0.15
    assert leaf.exists()


async def test_a_first_attempt_made_in_a_thread_counts_towards_the_five(
    root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Container.delete makes the first attempt in the thread that removed the bundle
    (``try_remove``), then ``remove(tried=True)`` goes on with the same schedule."""
    leaf = make_cgroup_dir(root / "c1", "cgroup.kill")
    times: list[float] = []
    manager = CgroupManager(str(root), rmdir=failing_rmdir(times, 99))
    start = trio.current_time()
    assert await trio.to_thread.run_sync(manager.try_remove, str(leaf)) is False
    with pytest.raises(Internal, match="after 5 retries"):
        await manager.remove(str(leaf), tried=True)
    assert [round(t - start, 6) for t in times] == [0.0, 0.01, 0.03, 0.07, 0.15]


async def test_try_remove_removes_or_reports_a_retry_or_fails(root: Path) -> None:
    leaf = make_cgroup_dir(root / "c1", "cgroup.kill")
    times: list[float] = []
    busy_once = CgroupManager(str(root), rmdir=failing_rmdir(times, 1))
    assert await trio.to_thread.run_sync(busy_once.try_remove, str(leaf)) is False
    assert await trio.to_thread.run_sync(busy_once.try_remove, str(leaf)) is True
    assert not leaf.exists()
    assert await trio.to_thread.run_sync(busy_once.try_remove, str(leaf)) is True  # gone: done
    other = make_cgroup_dir(root / "c2", "cgroup.kill")
    denied = CgroupManager(str(root), rmdir=failing_rmdir([], 99, errno.EACCES))
    with pytest.raises(Internal, match="Permission denied"):
        await trio.to_thread.run_sync(denied.try_remove, str(other))
    with pytest.raises(InvalidArgument):
        denied.try_remove(str(root))


async def test_remove_other_errors_fail_at_once(
    root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    leaf = make_cgroup_dir(root / "c1", "cgroup.kill")
    times: list[float] = []
    with pytest.raises(Internal, match="Permission denied"):
        await CgroupManager(str(root), rmdir=failing_rmdir(times, 99, errno.EACCES)).remove(
            str(leaf)
        )
    assert len(times) == 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
