"""The supervision tree's invariants (docs/architecture.md, "Invariants"), on a simulated
process backend.

Processes here are fake: the backend hands out pids and the test decides when they "exit"
by delivering a status to the reaper, exactly as the SIGCHLD path would. Time-dependent
behaviour (drain grace, bounded kill waits) runs under MockClock with exact virtual times.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import termios
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from trinit import errors
from trinit.exec import State
from trinit.nursery import (
    NEVER_RAN_EXIT_CODE,
    CgroupHooks,
    ContainerRegistry,
    Launched,
    ManagedProcess,
    Reaper,
)
from trinit.nursery._process import StdioPorts


class FakeBackend:
    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper
        self.next_pid = 1000
        self.live: set[int] = set()
        self.signals: list[tuple[float, int, int]] = []
        self.immortal: set[int] = set()
        self.held_fds: list[int] = []
        self.hold_stdout = False
        self.output = b""  # what each "child" writes to its stdout before the launch returns
        self.pty_masters = False  # terminal processes get a real PTY master
        self.launched = trio.Event()

    async def launch(
        self,
        helper_args: Sequence[str],
        *,
        stdio: tuple[int, int, int],
        terminal: bool,
        on_pid: Callable[[int], None],
        before_ack: Callable[[int], Awaitable[None]] | None = None,
        on_console: Callable[[int], None] | None = None,
    ) -> Launched:
        helper = self.next_pid
        pid = self.next_pid + 1
        self.next_pid += 2
        on_pid(helper)
        self.reaper.deliver(helper, 0)
        on_pid(pid)
        if before_ack is not None:
            await before_ack(pid)
        if self.hold_stdout:  # a "descendant" that keeps the stdout pipe open
            self.held_fds.append(os.dup(stdio[1]))
        if "nosuchprog" in helper_args:
            self.reaper.deliver(pid, 127 << 8)
            raise errors.Internal("vmexec error: failed to find target executable nosuchprog")
        if self.output:
            os.write(stdio[1], self.output)
        self.live.add(pid)
        self.launched.set()
        if terminal and self.pty_masters:
            master, slave = os.openpty()
            self.held_fds.append(slave)
            if on_console is not None:
                on_console(master)
            return Launched(pid, master)
        return Launched(pid, None)

    def kill(self, pid: int, sig: int) -> None:
        self.signals.append((trio.current_time(), pid, sig))
        if pid not in self.live:
            raise ProcessLookupError(pid)
        if sig == signal.SIGKILL and pid not in self.immortal:
            self.exit(pid, signal.SIGKILL)

    def exit(self, pid: int, raw: int) -> None:
        self.live.discard(pid)
        self.reaper.deliver(pid, raw)

    def close(self) -> None:
        for fd in self.held_fds:
            os.close(fd)


def spec(rootfs: Path, *args: str) -> bytes:
    import json

    return json.dumps(
        {
            "ociVersion": "",
            "process": {
                "args": list(args) or ["true"],
                "cwd": "/",
                "env": [],
                "user": {"uid": 0, "gid": 0},
            },
            "root": {"path": str(rootfs)},
            "linux": {},
        }
    ).encode()


class HostSide:
    """Socket pairs standing in for the host's stdio listeners."""

    def __init__(self) -> None:
        self.peers: dict[int, socket.socket] = {}

    async def dial(self, port: int) -> trio.SocketStream:
        ours, theirs = socket.socketpair()
        self.peers[port] = theirs
        return trio.SocketStream(trio.socket.from_stdlib_socket(ours))

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    return tmp_path / "rootfs"


async def _registry(
    nursery: trio.Nursery,
    tmp_path: Path,
    backend_factory: Callable[[Reaper], FakeBackend] = FakeBackend,
    drain_grace: float = 2.0,
    cgroups: CgroupHooks | None = None,
) -> tuple[ContainerRegistry, FakeBackend, HostSide]:
    reaper = Reaper()
    backend = backend_factory(reaper)
    hostside = HostSide()
    registry = ContainerRegistry(
        nursery,
        reaper=reaper,
        backend=backend,
        dial=hostside.dial,
        bundle_root=str(tmp_path / "bundles"),
        drain_grace=drain_grace,
        cgroups=cgroups,
    )
    return registry, backend, hostside


# ------------------------------------------------------------------ reaper
def _no_process_has(pid: int) -> bool:
    return False  # simulated pids: never look them up on the real machine


def test_reaper_keeps_status_that_arrives_before_registration() -> None:
    reaper = Reaper(pid_in_use=_no_process_has)
    reaper.deliver(42, 3 << 8)
    watch = reaper.register(42)
    assert watch.status is not None and watch.status.exit_code == 3


def test_kept_status_is_not_handed_to_a_new_process_with_the_same_pid() -> None:
    """A status nobody claimed (a zygote killed by Kill(-1), say) must not end a process
    that got the same pid after the pid counter wrapped around."""
    running: set[int] = set()
    reaper = Reaper(pid_in_use=running.__contains__)
    reaper.deliver(42, 9)  # the old pid 42, never registered
    running.add(42)  # a new process got pid 42
    watch = reaper.register(42)
    assert watch.status is None
    running.discard(42)
    reaper.deliver(42, 5 << 8)  # the new one's own exit
    assert watch.status is not None and watch.status.exit_code == 5


async def test_kept_status_is_checked_against_real_pids() -> None:
    """With the default check: a status kept for a pid is dropped while a live process has
    that pid, and handed over for a pid no process has."""
    reaper = Reaper()
    live = os.posix_spawn("/bin/sleep", ["sleep", "1000"], os.environ)  # noqa: ASYNC221
    try:
        reaper.deliver(live, 3 << 8)  # stale: "an earlier process" with this pid
        watch = reaper.register(live)
        assert watch.status is None
    finally:
        os.kill(live, signal.SIGKILL)
        os.waitpid(live, 0)  # noqa: ASYNC222  (this test's own child; no reaper task runs)
    reaper.forget(live)
    reaper.deliver(live, 4 << 8)  # now no process has that pid: kept, then claimed
    status = reaper.register(live).status
    assert status is not None and status.exit_code == 4


def test_unclaimed_statuses_are_bounded() -> None:
    reaper = Reaper(pid_in_use=_no_process_has)
    for pid in range(10_000):
        reaper.deliver(pid, 0)
    assert len(reaper._unclaimed) <= 4096
    assert reaper.register(9_999).status is not None


async def test_reaper_reaps_real_children() -> None:
    reaper = Reaper()
    async with trio.open_nursery() as nursery:
        await nursery.start(reaper.run)
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 3"], os.environ)  # noqa: ASYNC221
        watch = reaper.register(pid)
        with trio.fail_after(10):
            status = await watch.wait()
        assert status.exit_code == 3
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------- containers
async def test_wait_before_start_then_exit(tmp_path: Path, rootfs: Path) -> None:
    async with trio.open_nursery() as nursery:
        registry, backend, _ = await _registry(nursery, tmp_path)
        await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
        _, init = registry.lookup("c1", "c1")
        results: list[int] = []

        async def waiter() -> None:
            code, _ = await init.wait()
            results.append(code)

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []
        pid = await registry.start_process("c1", "c1")
        backend.exit(pid, 5 << 8)
        with trio.fail_after(5):
            while not results:
                await trio.lowlevel.checkpoint()
        assert results == [5]
        await registry.delete_process("c1", "c1")
        assert registry.containers() == []
        assert not (tmp_path / "bundles" / "c1").exists()


async def test_lookup_errors(tmp_path: Path, rootfs: Path) -> None:
    async with trio.open_nursery() as nursery:
        registry, _, _ = await _registry(nursery, tmp_path)
        with pytest.raises(errors.InvalidArgument):
            registry.lookup("x", None)
        with pytest.raises(errors.NotFound):
            registry.lookup("x", "nope")
        await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
        with pytest.raises(errors.FailedPrecondition):
            registry.lookup("e1", "c1")
        with pytest.raises(errors.AlreadyExists):
            await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
        with pytest.raises(errors.InvalidArgument):
            await registry.create_process("other", "c2", spec(rootfs), StdioPorts())
        await registry.create_process("e1", "c1", spec(rootfs), StdioPorts())
        with pytest.raises(errors.AlreadyExists):
            await registry.create_process("e1", "c1", spec(rootfs), StdioPorts())
        await registry.delete_process("c1", "c1")


async def test_init_death_kills_execs_and_returns_waits(tmp_path: Path, rootfs: Path) -> None:
    async with trio.open_nursery() as nursery:
        registry, backend, _ = await _registry(nursery, tmp_path)
        await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
        await registry.create_process("running", "c1", spec(rootfs), StdioPorts())
        await registry.create_process("unstarted", "c1", spec(rootfs), StdioPorts())
        init_pid = await registry.start_process("c1", "c1")
        exec_pid = await registry.start_process("running", "c1")
        _, running = registry.lookup("running", "c1")
        _, unstarted = registry.lookup("unstarted", "c1")
        codes: dict[str, int] = {}

        async def waiter(name: str, proc: ManagedProcess) -> None:
            codes[name] = (await proc.wait())[0]

        nursery.start_soon(waiter, "running", running)
        nursery.start_soon(waiter, "unstarted", unstarted)
        await trio.testing.wait_all_tasks_blocked()
        backend.exit(init_pid, 0)
        with trio.fail_after(5):
            while len(codes) < 2:
                await trio.lowlevel.checkpoint()
        assert codes == {"running": 137, "unstarted": NEVER_RAN_EXIT_CODE}
        assert any(pid == exec_pid and sig == signal.SIGKILL for _, pid, sig in backend.signals)
        with pytest.raises(errors.FailedPrecondition):
            await registry.create_process("late", "c1", spec(rootfs), StdioPorts())
            await registry.start_process("late", "c1")
        await registry.delete_process("c1", "c1")


async def test_delete_kills_reaps_and_leaves_nothing(tmp_path: Path, rootfs: Path) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    async with trio.open_nursery() as nursery:
        registry, backend, hostside = await _registry(nursery, tmp_path)
        await registry.create_process(
            "c1", "c1", spec(rootfs), StdioPorts(stdin=1, stdout=2, stderr=3)
        )
        await registry.create_process("e1", "c1", spec(rootfs), StdioPorts(stdout=4))
        init_pid = await registry.start_process("c1", "c1")
        exec_pid = await registry.start_process("e1", "c1")
        await registry.delete_process("c1", "c1")
        assert backend.live == set()
        killed = {pid for _, pid, sig in backend.signals if sig == signal.SIGKILL}
        assert {init_pid, exec_pid} <= killed
        await trio.testing.wait_all_tasks_blocked()
        hostside.close()
    # every pipe and host connection trinit held is closed
    assert set(os.listdir("/proc/self/fd")) <= fds_before


class _SlowCgroups(CgroupHooks):
    """Makes a container's cgroup slowly (blocks in the worker thread until released)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.made: list[str] = []
        self.removed: list[str] = []

    def prepare(self, container_id: str, spec: dict[str, Any]) -> None:
        self.made.append(container_id)
        self.entered.set()
        self.release.wait(10)

    async def remove(self, container_id: str, spec: dict[str, Any], *, tried: bool = False) -> None:
        self.removed.append(container_id)


async def test_a_create_cancelled_while_its_cgroup_is_made_removes_it(
    tmp_path: Path, rootfs: Path
) -> None:
    """The worker thread making the bundle and the cgroup is never abandoned: a cancellation
    meanwhile takes effect at the create's next checkpoint, where the create's clean-up
    removes the cgroup the thread made, and the id is free again."""
    cgroups = _SlowCgroups()
    async with trio.open_nursery() as nursery:
        registry, _, _ = await _registry(nursery, tmp_path, cgroups=cgroups)
        with trio.CancelScope() as scope:

            async def cancel_while_making() -> None:
                await trio.to_thread.run_sync(cgroups.entered.wait, 10)
                scope.cancel()
                cgroups.release.set()

            nursery.start_soon(cancel_while_making)
            await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
        assert scope.cancelled_caught
        assert cgroups.made == ["c1"]
        assert cgroups.removed == ["c1"]
        await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())  # the id is free
        await registry.delete_process("c1", "c1")


async def test_failed_start_reports_helper_text(tmp_path: Path, rootfs: Path) -> None:
    async with trio.open_nursery() as nursery:
        registry, _, _ = await _registry(nursery, tmp_path)
        await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
        _, init = registry.lookup("c1", "c1")
        init._helper_args.append("nosuchprog")
        with pytest.raises(errors.Internal, match="failed to find target executable"):
            await registry.start_process("c1", "c1")
        assert (await init.wait())[0] == 127  # the failed child's own status
        with pytest.raises(errors.TrinitError):
            await registry.start_process("c1", "c1")
        await registry.delete_process("c1", "c1")


async def _init_with_held_stdout(
    nursery: trio.Nursery, tmp_path: Path, rootfs: Path
) -> tuple[ContainerRegistry, FakeBackend, HostSide, int]:
    """Container c1 started with stdout on host port 9 and a "descendant" holding the pipe
    (drain grace 2 s): (registry, backend, hostside, init pid)."""
    registry, backend, hostside = await _registry(nursery, tmp_path, drain_grace=2.0)
    backend.hold_stdout = True
    await registry.create_process("c1", "c1", spec(rootfs), StdioPorts(stdout=9))
    pid = await registry.start_process("c1", "c1")
    return registry, backend, hostside, pid


async def test_drain_grace_bounds_exit_when_descendants_hold_stdout(
    tmp_path: Path, rootfs: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    async with trio.open_nursery() as nursery:
        registry, backend, hostside, pid = await _init_with_held_stdout(nursery, tmp_path, rootfs)
        _, init = registry.lookup("c1", "c1")
        os.write(backend.held_fds[0], b"partial output")
        start = trio.current_time()
        backend.exit(pid, 0)
        code, _ = await init.wait()
        assert code == 0
        assert trio.current_time() - start == pytest.approx(2.0)
        hostside.peers[9].settimeout(5)
        assert hostside.peers[9].recv(100) == b"partial output"
        assert hostside.peers[9].recv(100) == b""  # host connection closed after the grace
        await registry.delete_process("c1", "c1")
        backend.close()
        hostside.close()


async def test_reaped_pid_is_never_signalled_or_joined_while_output_drains(
    tmp_path: Path, rootfs: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Between the reap and the end of the drain the pid may already be another process's:
    KillProcess is a no-op and an exec cannot start into the dead init's namespaces."""
    mock_clock.autojump_threshold = 0
    async with trio.open_nursery() as nursery:
        registry, backend, hostside, pid = await _init_with_held_stdout(nursery, tmp_path, rootfs)
        await registry.create_process("e1", "c1", spec(rootfs), StdioPorts())
        _, init = registry.lookup("c1", "c1")
        backend.exit(pid, 0)
        assert init.state is State.REAPED  # the drain grace is running
        sent = len(backend.signals)
        init.kill(signal.SIGTERM)
        with pytest.raises(errors.FailedPrecondition, match="init has exited"):
            await registry.start_process("e1", "c1")
        assert len(backend.signals) == sent  # nothing sent to the reaped pid
        assert (await init.wait())[0] == 0
        await registry.delete_process("c1", "c1")
        assert len(backend.signals) == sent
        backend.close()
        hostside.close()


async def test_delete_gives_up_on_unkillable_process_after_bound(
    tmp_path: Path, rootfs: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    async with trio.open_nursery() as nursery:
        registry, backend, _ = await _registry(nursery, tmp_path)
        await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
        pid = await registry.start_process("c1", "c1")
        backend.immortal.add(pid)  # e.g. stuck in uninterruptible sleep
        start = trio.current_time()
        await registry.delete_process("c1", "c1")
        assert trio.current_time() - start == pytest.approx(5.0)
        assert backend.signals[-1][1:] == (pid, signal.SIGKILL)
        assert backend.signals[-1][0] == pytest.approx(start)


async def test_shutdown_escalates_sigterm_then_sigkill_at_the_grace(
    tmp_path: Path, rootfs: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    async with trio.open_nursery() as nursery:
        registry, backend, _ = await _registry(nursery, tmp_path)
        for cid in ("stubborn", "polite"):
            await registry.create_process(cid, cid, spec(rootfs), StdioPorts())
        stubborn = await registry.start_process("stubborn", "stubborn")
        polite = await registry.start_process("polite", "polite")
        real_kill = backend.kill

        def kill(pid: int, sig: int) -> None:
            real_kill(pid, sig)
            if pid == polite and sig == signal.SIGTERM:
                backend.exit(pid, signal.SIGTERM)  # handles SIGTERM by dying

        backend.kill = kill  # type: ignore[method-assign]
        start = trio.current_time()
        await registry.shutdown(stop_grace=3.0)
        assert registry.containers() == []
        sent = [(round(t - start, 6), pid, sig) for t, pid, sig in backend.signals]
        assert (0.0, stubborn, signal.SIGTERM) in sent
        assert (3.0, stubborn, signal.SIGKILL) in sent  # exactly at the grace
        assert (0.0, polite, signal.SIGTERM) in sent
        assert not any(pid == polite and sig == signal.SIGKILL for _, pid, sig in sent)
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_delete_process_kills_at_once(
    tmp_path: Path, rootfs: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    async with trio.open_nursery() as nursery:
        registry, backend, _ = await _registry(nursery, tmp_path)
        await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
        pid = await registry.start_process("c1", "c1")
        start = trio.current_time()
        await registry.delete_process("c1", "c1")
        assert [(sig, t - start) for t, p, sig in backend.signals if p == pid] == [
            (signal.SIGKILL, 0)
        ]


# ------------------------------------------------------------------ resize before start
class _PtyBackend:
    """Launches nothing: hands out a real PTY pair, and lets the test act at the two points
    of a terminal launch that matter for a queued resize (before AckConsole, after it)."""

    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper
        self.slave: int | None = None
        self.size_at_ack: tuple[int, int] | None = None  # what the workload would see first
        self.during_launch: Callable[[], None] = lambda: None
        self.after_console: Callable[[], None] = lambda: None

    async def launch(
        self,
        helper_args: Sequence[str],
        *,
        stdio: tuple[int, int, int],
        terminal: bool,
        on_pid: Callable[[int], None],
        before_ack: Callable[[int], Awaitable[None]] | None = None,
        on_console: Callable[[int], None] | None = None,
    ) -> Launched:
        on_pid(2000)
        self.reaper.deliver(2000, 0)
        on_pid(2001)
        self.during_launch()
        master, self.slave = os.openpty()
        if on_console is not None:
            on_console(master)
        self.size_at_ack = _winsize(self.slave)
        self.after_console()  # the workload runs from here on; the launch has not returned
        return Launched(2001, master)

    def kill(self, pid: int, sig: int) -> None:
        self.reaper.deliver(pid, sig)


def _winsize(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return rows, cols


async def test_resize_before_start_is_applied_before_the_workload_runs() -> None:
    reaper = Reaper(pid_in_use=_no_process_has)
    backend = _PtyBackend(reaper)
    proc = ManagedProcess("p", "c", ["run"], terminal=True, backend=backend, reaper=reaper)

    async def no_dial(port: int) -> trio.SocketStream:
        raise AssertionError("no ports were asked for")

    await proc.open_stdio(no_dial, StdioPorts())
    async with trio.open_nursery() as nursery:
        await nursery.start(proc.run)
        proc.resize(20, 60)  # CREATED
        backend.during_launch = lambda: proc.resize(33, 101)  # STARTING: the last one wins
        backend.after_console = lambda: proc.resize(50, 0x10000 + 70)  # STARTING, too late
        # for the first byte: applied once the relay exists
        await proc.start()
        assert backend.slave is not None
        assert backend.size_at_ack == (33, 101)
        assert _winsize(backend.slave) == (50, 70)
        proc.resize(51, 71)  # RUNNING: at once, as before
        assert _winsize(backend.slave) == (51, 71)
        reaper.deliver(2001, 0)
        await proc.wait()
        proc.resize(1, 1)  # EXITED: a no-op (the master is closed: nothing to set), no error
        os.close(backend.slave)


class GatedBackend(FakeBackend):
    """Exec launches wait at a gate, so a test can see how many are under way at once."""

    def __init__(self, reaper: Reaper) -> None:
        super().__init__(reaper)
        self.gate = trio.Event()
        self.execs_launching = 0

    async def launch(self, helper_args: Sequence[str], **kwargs: Any) -> Launched:
        if "exec" in helper_args:
            self.execs_launching += 1
            await self.gate.wait()
        return await super().launch(helper_args, **kwargs)


async def _gated_container(
    nursery: trio.Nursery, tmp_path: Path, rootfs: Path
) -> tuple[ContainerRegistry, GatedBackend, HostSide]:
    """A started container c1 with two created execs, e1 and e2, on a GatedBackend."""
    registry, backend, hostside = await _registry(nursery, tmp_path, GatedBackend)
    await registry.create_process("c1", "c1", spec(rootfs), StdioPorts())
    await registry.start_process("c1", "c1")
    for exec_id in ("e1", "e2"):
        await registry.create_process(exec_id, "c1", spec(rootfs), StdioPorts())
    assert isinstance(backend, GatedBackend)
    return registry, backend, hostside


async def test_exec_delete_waits_only_for_its_own_start(tmp_path: Path, rootfs: Path) -> None:
    """DeleteProcess of an exec waits for that exec's start only, not for every exec start
    of its container: with execs starting all the time (32 clients), waiting for a moment
    with no start under way stalled every delete and, holding the lock, every new start.
    Deleting the container still waits for them all."""
    async with trio.open_nursery() as nursery:
        registry, backend, hostside = await _gated_container(nursery, tmp_path, rootfs)
        e1_deleted = trio.Event()
        container_deleted = trio.Event()

        async def delete(process_id: str, done: trio.Event) -> None:
            await registry.delete_process(process_id, "c1")
            done.set()

        async with trio.open_nursery() as tasks:
            tasks.start_soon(registry.start_process, "e1", "c1")
            await trio.testing.wait_all_tasks_blocked()
            assert backend.execs_launching == 1
            e2_deleted = trio.Event()
            tasks.start_soon(delete, "e2", e2_deleted)
            with trio.fail_after(10):  # (it removes files in a worker thread)
                await e2_deleted.wait()  # never started: not held up by e1's start
            tasks.start_soon(delete, "e1", e1_deleted)
            tasks.start_soon(delete, "c1", container_deleted)
            await trio.testing.wait_all_tasks_blocked()
            assert not e1_deleted.is_set()  # its own start is under way
            assert not container_deleted.is_set()
            backend.gate.set()
        assert e1_deleted.is_set() and container_deleted.is_set()
        backend.close()
        hostside.close()


async def test_execs_of_one_container_start_concurrently(tmp_path: Path, rootfs: Path) -> None:
    """StartProcess of an exec holds the container lock only to begin: a second exec's
    start does not wait for the first one's launch (that capped one container at ~20
    execs/s). DeleteProcess still waits for the starts under way."""
    async with trio.open_nursery() as nursery:
        registry, backend, hostside = await _gated_container(nursery, tmp_path, rootfs)
        pids: list[int] = []
        deleted = trio.Event()

        async def start(exec_id: str) -> None:
            pids.append(await registry.start_process(exec_id, "c1"))

        async def delete() -> None:
            await registry.delete_process("e1", "c1")
            deleted.set()

        async with trio.open_nursery() as starts:
            starts.start_soon(start, "e1")
            starts.start_soon(start, "e2")
            await trio.testing.wait_all_tasks_blocked()
            assert backend.execs_launching == 2
            starts.start_soon(delete)
            await trio.testing.wait_all_tasks_blocked()
            assert not deleted.is_set()  # waits for the starts under way
            backend.gate.set()
        assert len(pids) == 2 and deleted.is_set()
        await registry.delete_process("c1", "c1")
        backend.close()
        hostside.close()
