"""Init death and fault boundaries in the supervision tree, on the simulated backend.

* Execs die the moment their container's init is reaped, not when its output has drained;
  the init's own WaitProcess still returns only once its output is delivered.
* An unexpected exception in one container's tasks ends that container only: its processes
  are killed, its waiters get INTERNAL with one line, the traceback is logged once at error
  level, DeleteProcess cleans it up, and every other container keeps its stdio, waits and
  execs. The registry's (the agent's) nursery never sees the exception.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_supervision import FakeBackend, HostSide, _registry, spec

from trinit import errors
from trinit.exec import State
from trinit.io import OutputPump, PtyRelay
from trinit.nursery import CgroupHooks, ContainerRegistry, ManagedProcess
from trinit.nursery._process import StdioPorts


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    return tmp_path / "rootfs"


def _signal_times(backend: FakeBackend, pid: int, start: float) -> list[tuple[int, float]]:
    return [(sig, round(t - start, 6)) for t, p, sig in backend.signals if p == pid]


@pytest.mark.parametrize("held", [True, False], ids=["output-still-draining", "output-done"])
async def test_execs_die_when_init_is_reaped(
    tmp_path: Path, rootfs: Path, mock_clock: trio.testing.MockClock, held: bool
) -> None:
    mock_clock.autojump_threshold = 0
    async with trio.open_nursery() as nursery:
        registry, backend, hostside = await _registry(nursery, tmp_path, drain_grace=2.0)
        backend.hold_stdout = held  # a descendant keeps the init's stdout open
        await registry.create_process("c1", "c1", spec(rootfs), StdioPorts(stdout=9))
        init_pid = await registry.start_process("c1", "c1")
        backend.hold_stdout = False
        await registry.create_process("e1", "c1", spec(rootfs), StdioPorts())
        exec_pid = await registry.start_process("e1", "c1")
        _, init = registry.lookup("c1", "c1")
        _, exec_ = registry.lookup("e1", "c1")
        start = trio.current_time()
        backend.exit(init_pid, 0)
        assert init.state is State.REAPED  # at once, from the reaper's report
        assert (await exec_.wait())[0] == 137
        assert _signal_times(backend, exec_pid, start) == [(signal.SIGKILL, 0.0)]
        assert (await init.wait())[0] == 0
        # WaitProcess on init returns when its output is delivered: at once, or at the grace
        assert trio.current_time() - start == pytest.approx(2.0 if held else 0.0)
        await registry.delete_process("c1", "c1")
        backend.close()
        hostside.close()


async def _two_containers(
    nursery: trio.Nursery,
    tmp_path: Path,
    rootfs: Path,
    cgroups: CgroupHooks | None = None,
    **create: StdioPorts,
) -> tuple[ContainerRegistry, FakeBackend, HostSide]:
    """Containers "bad" and "good", both inits started; "good" has stdout on port 20."""
    registry, backend, hostside = await _registry(nursery, tmp_path, cgroups=cgroups)
    backend.output = b"good output\n"
    await registry.create_process("bad", "bad", spec(rootfs), create.get("bad", StdioPorts()))
    await registry.create_process("good", "good", spec(rootfs), StdioPorts(stdout=20))
    await registry.start_process("bad", "bad")
    await registry.start_process("good", "good")
    return registry, backend, hostside


async def _good_container_is_untouched(
    registry: ContainerRegistry, backend: FakeBackend, hostside: HostSide
) -> None:
    """Its stdio, waits and execs work as if nothing happened."""
    _, good = registry.lookup("good", "good")
    assert good.state is State.RUNNING
    await registry.create_process("ge", "good", spec(rootfs=Path("/")), StdioPorts())
    exec_pid = await registry.start_process("ge", "good")
    backend.exit(exec_pid, 3 << 8)
    _, good_exec = registry.lookup("ge", "good")
    assert (await good_exec.wait())[0] == 3
    assert good.pid is not None
    backend.exit(good.pid, 0)
    assert (await good.wait())[0] == 0
    peer = hostside.peers[20]
    peer.setblocking(True)
    assert peer.recv(100) == b"good output\n"
    assert peer.recv(100) == b""  # complete, then closed
    await registry.delete_process("good", "good")


async def _bad_container_failed_cleanly(
    registry: ContainerRegistry, backend: FakeBackend, caplog: pytest.LogCaptureFixture, what: str
) -> None:
    _, bad = registry.lookup("bad", "bad")
    with pytest.raises(errors.Internal) as info:
        await bad.wait()
    assert info.value.message == f"container bad failed: RuntimeError: {what}"
    assert "\n" not in info.value.message
    assert bad.pid not in backend.live  # killed and reaped
    errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) == 1 and errors_logged[0].exc_info is not None
    with pytest.raises(errors.FailedPrecondition, match="container bad failed"):
        await registry.create_process("late", "bad", spec(Path("/")), StdioPorts())
    await registry.delete_process("bad", "bad")  # still cleans up
    assert [c.container_id for c in registry.containers()] == ["good"]


async def test_a_pump_failure_ends_only_its_container(
    tmp_path: Path,
    rootfs: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail = trio.Event()
    real = ManagedProcess._run_pump

    async def run_pump(self: ManagedProcess, pump: OutputPump, done: trio.Event) -> None:
        if self.container_id == "bad":
            await fail.wait()
            raise RuntimeError("injected pump failure")
        await real(self, pump, done)

    monkeypatch.setattr(ManagedProcess, "_run_pump", run_pump)
    async with trio.open_nursery() as nursery:
        registry, backend, hostside = await _two_containers(
            nursery, tmp_path, rootfs, bad=StdioPorts(stdout=10)
        )
        with caplog.at_level(logging.ERROR, logger="trinit"):
            fail.set()
            await _bad_container_failed_cleanly(registry, backend, caplog, "injected pump failure")
        await _good_container_is_untouched(registry, backend, hostside)
        backend.close()


async def test_a_relay_failure_ends_only_its_container(
    tmp_path: Path,
    rootfs: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run_relay(self: ManagedProcess, relay: PtyRelay, done: trio.Event) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("injected relay failure")

    monkeypatch.setattr(ManagedProcess, "_run_relay", run_relay)
    terminal = spec(tmp_path / "rootfs").replace(b'"cwd"', b'"terminal": true, "cwd"')
    async with trio.open_nursery() as nursery:
        registry, backend, hostside = await _registry(nursery, tmp_path)
        backend.pty_masters = True
        backend.output = b"good output\n"
        await registry.create_process("good", "good", spec(rootfs), StdioPorts(stdout=20))
        await registry.start_process("good", "good")
        with caplog.at_level(logging.ERROR, logger="trinit"):
            await registry.create_process("bad", "bad", terminal, StdioPorts(stdout=10))
            await registry.start_process("bad", "bad")
            await _bad_container_failed_cleanly(registry, backend, caplog, "injected relay failure")
        await _good_container_is_untouched(registry, backend, hostside)
        backend.close()


class _FailingCgroups(CgroupHooks):
    """Cgroup writes that fail while ``failing`` is set."""

    failing = False

    def prepare(self, container_id: str, spec: dict[str, Any]) -> None:
        if self.failing:
            raise OSError(28, "No space left on device", "cgroup.subtree_control")

    async def exec_args(self) -> list[str]:
        if self.failing:
            raise OSError(5, "Input/output error", "/proc/self/mountinfo")
        return []


async def test_a_cgroup_write_failure_fails_one_rpc_and_nothing_else(
    tmp_path: Path, rootfs: Path
) -> None:
    cgroups = _FailingCgroups()
    async with trio.open_nursery() as nursery:
        registry, backend, hostside = await _two_containers(
            nursery, tmp_path, rootfs, cgroups=cgroups
        )
        cgroups.failing = True
        # raw here; the RPC layer turns it into INTERNAL "createProcess: ...: OSError: ..."
        with pytest.raises(OSError, match="No space left on device"):
            await registry.create_process("nocg", "nocg", spec(rootfs), StdioPorts())
        with pytest.raises(errors.NotFound):
            registry.lookup("nocg", "nocg")
        assert [c.container_id for c in registry.containers()] == ["bad", "good"]
        await registry.create_process("e1", "bad", spec(rootfs), StdioPorts())
        with pytest.raises(OSError, match="Input/output error"):
            await registry.start_process("e1", "bad")
        _, failed_exec = registry.lookup("e1", "bad")
        assert failed_exec.state is State.CREATED  # nothing was launched: it may be retried
        _, bad = registry.lookup("bad", "bad")
        assert bad.state is State.RUNNING  # its init is untouched
        cgroups.failing = False
        await _good_container_is_untouched(registry, backend, hostside)
        await registry.delete_process("bad", "bad")
        backend.close()
