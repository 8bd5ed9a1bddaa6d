"""Container: one container's nursery, its init, its execs, its bundle.

Ownership. A Container runs as a task in the agent's root nursery (``nursery.start``), and
every process it owns runs in the container's own nursery. DeleteProcess of the container
stops every process (SIGKILL, reaped with a bounded wait, fds closed), ends that nursery,
then removes the bundle and the cgroup. Nothing the container started outlives it.

Init death. The moment the reaper reports the init (its state becomes REAPED, before its
output has drained), running execs get SIGKILL (the kernel does this anyway when the
container has its own PID namespace; we do it for containers that share one) and execs
that were never started are ABANDONED. The init's output still drains (bounded) before its
WaitProcess returns. The container then stays registered, with its exit statuses, until
DeleteProcess.

Fault boundary. An unexpected exception in any of the container's tasks (a pump, a relay,
the init watcher) ends this container only: every process is killed and reaped, the
traceback is logged once at error level, waiters of unsettled processes get INTERNAL with
one line, and DeleteProcess still cleans up. The agent and the other containers never see
the exception.

Operations on one container are serialised by its own lock; nothing is global.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import trio

from trinit import errors
from trinit._log import fields
from trinit._mountinfo import mounts_under
from trinit._runlimiter import RunLimiter
from trinit.exec import State

from ._process import ManagedProcess

_INIT_ALIVE = frozenset({State.CREATED, State.STARTING, State.RUNNING})

log = logging.getLogger("trinit.container")

BUNDLE_ROOT = "/run/container"

#: How many bundle removals run at once. Each is an rmtree: kernel-bound work that gains
#: nothing from more threads on a VM with a few CPUs, while every extra runnable thread
#: takes CPU time (and GIL hand-overs) from the event loop thread. A DeleteProcess storm
#: with trio's default 40 threads stretched single loop steps tenfold; this keeps the
#: loop responsive and removals as fast.
CLEANUP_THREADS = 4
_cleanup_limiter = RunLimiter("trinit_cleanup_limiter", CLEANUP_THREADS)


def cleanup_limiter() -> trio.CapacityLimiter:
    """The limiter for bundle removal threads, one per trio run."""
    return _cleanup_limiter.get()


class CgroupHooks:
    """What a container needs from cgroup management; the default does nothing.

    The real implementation (``trinit.cgroup``) creates the container's cgroup before the
    init runs, places execs in the init's cgroup, and removes it on delete.

    Blocking: the synchronous hooks (``prepare``, ``remember_events``) touch cgroupfs and
    are called from worker threads only; the async hooks keep their own file system work
    off the event loop.
    """

    def prepare(self, container_id: str, spec: dict[str, Any]) -> None:
        return None

    async def exec_args(self) -> list[str]:
        """Extra arguments for the exec helper's ``exec``: where it finds the init's cgroup
        to place the exec in (it does so before it reports the pid)."""
        return []

    async def remove(self, container_id: str, spec: dict[str, Any], *, tried: bool = False) -> None:
        """Remove the container's cgroup. ``tried``: :meth:`try_remove` ran first and found
        processes still exiting; go on with the retries."""
        return None

    def try_remove(self, container_id: str, spec: dict[str, Any]) -> bool:
        """One attempt at what :meth:`remove` does, blocking (a worker thread): True when
        nothing is left to remove."""
        return True

    def helper_args(self) -> list[str]:
        """Extra arguments for the exec helper's ``run`` (where to place the init)."""
        return []

    def directory(self, spec: dict[str, Any]) -> str | None:
        """The container's cgroup directory, or None when cgroups are off."""
        return None

    def remember_events(self, container_id: str, spec: dict[str, Any]) -> dict[str, int]:
        """Read (and keep) the container's memory.events; the last known counts."""
        return {}


class Container:
    def __init__(
        self,
        container_id: str,
        spec: dict[str, Any],
        bundle: Path,
        init: ManagedProcess,
        cgroups: CgroupHooks,
    ) -> None:
        self.container_id = container_id
        self.spec = spec
        self.bundle = bundle
        self.init = init
        self.execs: dict[str, ManagedProcess] = {}
        self.exec_files: set[str] = set()
        """Execs whose process went to the helper as ``execs/<id>/process.json``; the others
        (most) went inline (``--process-json``), with nothing on disk to remove."""
        self.lock = trio.Lock()
        """Held by every RPC that changes the container's set of processes; an exec's start
        holds it only to begin (see :meth:`begin_exec_start`)."""
        self._exec_starts: dict[str, trio.Event] = {}  # process id -> set when it is done
        self._exec_starts_idle = trio.Event()
        self._exec_starts_idle.set()
        self.fault: str | None = None  # one line, once the container has failed
        self._cgroups = cgroups
        self._nursery: trio.Nursery | None = None
        self._deleted = trio.Event()
        self._stopped = trio.Event()

    # --------------------------------------------------------------- lookup
    def process(self, process_id: str) -> ManagedProcess:
        if process_id == self.container_id:
            return self.init
        proc = self.execs.get(process_id)
        if proc is None:
            raise errors.ExecNotFound(process_id, self.container_id)
        return proc

    def processes(self) -> list[ManagedProcess]:
        return [self.init, *self.execs.values()]

    # ----------------------------------------------------------------- tree
    async def run(
        self, *, task_status: trio.TaskStatus[Container] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the container's processes until :meth:`delete` (or cancellation).

        This is the fault boundary: after it has reported started, an exception from any
        task beneath ends this container (see the module docstring) and is not re-raised.
        """
        started = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.init.run)
                nursery.start_soon(self._watch_init)
                task_status.started(self)
                started = True
                await self._deleted.wait()
                nursery.cancel_scope.cancel()
        except* Exception as group:
            if not started:
                raise
            self._failed(group)
        finally:
            self._nursery = None
            self._stopped.set()

    def _failed(self, group: BaseExceptionGroup[Exception]) -> None:
        self.fault = f"container {self.container_id} failed: {errors.describe(_first(group))}"
        log.error(self.fault, exc_info=group, extra=fields(container=self.container_id))
        for proc in self.processes():
            proc.fault(self.fault)

    async def _watch_init(self) -> None:
        """Init reaped (or never to run) -> kill the running execs, abandon the others."""
        await self.init.wait_state(lambda state: state not in _INIT_ALIVE)
        for proc in self.execs.values():
            if proc.running:
                proc.kill(signal.SIGKILL)
            else:
                proc.abandon_if_unstarted()
        log.info("container init exited", extra=fields(container=self.container_id))

    def _init_alive(self) -> bool:
        return self.init.state in _INIT_ALIVE

    async def adopt(self, proc: ManagedProcess) -> None:
        """Start supervising a new exec (its stdio is already connected)."""
        if self._nursery is None:
            raise errors.FailedPrecondition(
                self.fault or f"container {self.container_id} is being deleted"
            )
        old = self.execs.get(proc.process_id)
        if old is not None:
            # vminitd silently replaced the entry and leaked the old process; we refuse.
            raise errors.AlreadyExists(
                f"exec {proc.process_id} already exists in container {self.container_id}"
            )
        await self._nursery.start(proc.run)
        self.execs[proc.process_id] = proc
        if not self._init_alive():
            proc.abandon_if_unstarted()

    def begin_exec_start(self, process_id: str) -> None:
        """An exec's StartProcess is under way (called with :attr:`lock` held).

        An exec's launch (helper, namespaces, cgroup placement, ~10-50 ms) runs *without*
        the lock, so that execs of one container start concurrently (holding it made every
        StartProcess of a container wait for the one before: ~20 execs/s at any
        concurrency). Whoever must not overlap a starting exec takes the lock, so no new
        start begins, and then waits: DeleteProcess of an exec for that exec's start only
        (:meth:`exec_start_done`; waiting for every start stalled each delete, and with
        it every new start, until a moment when none was under way), DeleteProcess of the
        container for all of them (:meth:`exec_starts_done`). Two starts of the same exec
        cannot overlap: ``ManagedProcess.start`` moves it out of CREATED before its first
        await.
        """
        self._exec_starts[process_id] = trio.Event()
        self._exec_starts_idle = trio.Event()

    def end_exec_start(self, process_id: str) -> None:
        self._exec_starts.pop(process_id).set()
        if not self._exec_starts:
            self._exec_starts_idle.set()

    async def exec_start_done(self, process_id: str) -> None:
        """Return once this exec's start is not under way (call with :attr:`lock` held)."""
        started = self._exec_starts.get(process_id)
        if started is not None:
            await started.wait()

    async def exec_starts_done(self) -> None:
        """Return once no exec start is under way (call with :attr:`lock` held)."""
        await self._exec_starts_idle.wait()

    async def start(self, proc: ManagedProcess) -> int:
        if proc is self.init:
            return await proc.start()
        if self.init.state is not State.RUNNING:
            if self.init.state in (State.CREATED, State.STARTING):
                reason = "is not started"
            else:
                reason = "has exited"
            raise errors.FailedPrecondition(
                f"container {self.container_id} init {reason}; cannot start exec"
            )
        # the helper places the exec in the init's cgroup before it reports the pid
        pid = await proc.start(extra_args=await self._cgroups.exec_args())
        if not self._init_alive():  # the init died while this exec started
            proc.kill(signal.SIGKILL)
        return pid

    async def delete_exec(self, process_id: str) -> None:
        """Forget an exec: it is killed if still running (vminitd left it running)."""
        proc = self.process(process_id)
        if proc is self.init:
            raise errors.Internal("delete_exec called for init")
        proc.stop()
        await proc.join()
        proc.forget()
        del self.execs[process_id]
        if process_id in self.exec_files:  # a process.json too large to pass inline
            self.exec_files.discard(process_id)
            await trio.to_thread.run_sync(
                functools.partial(
                    shutil.rmtree, self.bundle / "execs" / process_id, ignore_errors=True
                ),
                limiter=cleanup_limiter(),
            )

    async def delete(self, stop_grace: float = 0.0) -> None:
        """Stop every process, end the container's nursery, then remove the bundle and the
        cgroup. Raises (and stays registered) if the bundle or cgroup cannot be removed.
        DeleteProcess kills at once (``stop_grace`` 0, as vminitd's cgroup.kill); an agent
        shutdown gives running processes SIGTERM and ``stop_grace`` seconds first."""
        for proc in self.processes():
            proc.stop(stop_grace)
        self._deleted.set()
        with trio.CancelScope(shield=True):
            # each process bounds its own kill-and-reap wait, so this ends
            await self._stopped.wait()
        for proc in self.processes():
            proc.forget()
        # One worker thread does the bundle and the first attempt at the cgroup: each trip
        # to a thread and back costs ~0.25 ms of a delete's wall time. A removal already
        # running completes even if this task is cancelled meanwhile.
        if not await trio.to_thread.run_sync(self._tear_down, limiter=cleanup_limiter()):
            await self._cgroups.remove(self.container_id, self.spec, tried=True)

    def _tear_down(self) -> bool:
        """Blocking: remove the bundle (raises, leaving the cgroup, if an unmount fails),
        then try once to remove the cgroup; True when that is done too."""
        remove_bundle(self.bundle)
        return self._cgroups.try_remove(self.container_id, self.spec)


def _first(group: BaseException) -> BaseException:
    """The first leaf exception of a (nested) exception group."""
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temp + rename), creating parents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def remove_bundle(bundle: Path) -> None:
    """Unmount whatever is still mounted in the bundle (the rootfs normally), then delete it.

    Never deletes through a mount: if an unmount fails, the error is raised and the bundle
    stays, so DeleteProcess fails and the container stays registered (docs/protocol.md §4.20).
    """
    from trinit._linux import umount2

    if not bundle.exists():
        return
    for point in mounts_under(str(bundle)):
        try:
            umount2(point, 0)
        except OSError as exc:
            raise errors.Internal(f"failed to unmount {point}: {exc.strerror or exc}") from exc
    shutil.rmtree(bundle, ignore_errors=True)
