"""ManagedProcess: one container process (init or exec) and everything it owns.

Ownership. A ManagedProcess owns its host stdio connections, the pipes between them and the
child, the pumps or PTY relay moving the bytes, and the child's pid once started. All of
its tasks run in its own nursery (started by the container with ``nursery.start(proc.run)``),
so stopping it (DeleteProcess, its container's teardown, agent shutdown) kills the child,
waits for the reaper to report it (bounded), and closes every fd.

State. The lifecycle table in ``trinit.exec`` decides every state; this class only feeds it
events and keeps the data that goes with them (pid, exit status, fault text). Tasks wait for
states (:meth:`wait_state`), never for private flags. The reaper's report applies REAPED
synchronously (an ``ExitWatch`` callback), so from that instant nothing signals the pid.

Exit reporting. Once reaped, the output pumps drain what the pipes hold (bounded by
``drain_grace`` when descendants keep them open) and close the host connections; only then
is the exit published (EXITED), so a host that sees WaitProcess return already has every
byte (docs/architecture.md, "Invariants").
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from trinit import errors
from trinit._log import fields
from trinit.exec import LIVE, SETTLED, Event, Lifecycle, State
from trinit.io import InputPump, OutputPump, OwnedFd, PtyRelay, make_pipe

from ._backend import ProcessBackend
from ._reaper import ExitStatus, ExitWatch, Reaper
from ._watched import Watched

log = logging.getLogger("trinit.process")

Dial = Callable[[int], Awaitable[trio.SocketStream]]

#: Exit code reported for a process that can never run (its start failed, or its
#: container's init exited before it was started). vminitd would block WaitProcess forever.
NEVER_RAN_EXIT_CODE = 255


def _settled_or_deleted(state: State) -> bool:
    return state in SETTLED or state is State.DELETED


@dataclass(frozen=True)
class StdioPorts:
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


class ManagedProcess:
    def __init__(
        self,
        process_id: str,
        container_id: str,
        helper_args: Sequence[str],
        *,
        terminal: bool,
        backend: ProcessBackend,
        reaper: Reaper,
        drain_grace: float = 2.0,
        kill_wait: float = 5.0,
    ) -> None:
        self.process_id = process_id
        self.container_id = container_id
        self.terminal = terminal
        self._helper_args = list(helper_args)
        self._backend = backend
        self._reaper = reaper
        self._drain_grace = drain_grace
        self._kill_wait = kill_wait
        self._state: Watched[State] = Watched(State.CREATED)
        self._lifecycle = Lifecycle(on_change=self._state.set)
        self.pid: int | None = None
        self._watch: ExitWatch | None = None
        # data of the settled states: (exit code, exited at) for EXITED/ABANDONED, the
        # one-line reason for FAULTED
        self._exit: tuple[int, float] | None = None
        self._fault: str | None = None
        # a stop was asked for, with this SIGTERM grace (None: any teardown is a fault's or
        # the agent's, and the owner settles the state)
        self._stop_grace: float | None = None
        self._nursery: trio.Nursery | None = None
        self._task_done = trio.Event()  # run() has returned: a task join, not process state
        # stdio
        self._child_fds: list[OwnedFd] = []
        self._child_stdio: tuple[int, int, int] | None = None
        self._output_pumps: list[OutputPump] = []
        self._stdin_pump: InputPump | None = None
        self._stdin_scope = trio.CancelScope()
        self._pty_sockets: tuple[trio.SocketStream | None, trio.SocketStream | None] = (None, None)
        self._pty: PtyRelay | None = None
        # a ResizeProcess before the relay exists (CREATED/STARTING): applied at start, the
        # last one wins (rows, columns)
        self._pending_size: tuple[int, int] | None = None
        self._pumps_done: list[trio.Event] = []  # output task joins

    # ----------------------------------------------------------------- state
    @property
    def state(self) -> State:
        return self._lifecycle.state

    async def wait_state(self, predicate: Callable[[State], bool]) -> State:
        """The first state (the current one included) for which ``predicate`` holds."""
        return await self._state.wait_value(predicate)

    @property
    def running(self) -> bool:
        """It has a pid that the reaper has not reported: signalling it is safe."""
        return self.state is State.RUNNING

    def _fields(self, **more: object) -> dict[str, object]:
        return fields(container=self.container_id, process=self.process_id, pid=self.pid, **more)

    def set_parent_pid(self, pid: int) -> None:
        """Execs join the init's namespaces; the helper needs the init's pid."""
        if "--parent-pid" not in self._helper_args:
            self._helper_args += ["--parent-pid", str(pid)]

    # ----------------------------------------------------------------- stdio
    async def open_stdio(self, dial: Dial, ports: StdioPorts) -> None:
        """Connect to the host's stdio ports now (the host accepts during CreateProcess).

        On failure or cancellation every connection and pipe opened so far is closed.
        """
        opened: list[trio.SocketStream] = []
        try:
            null = OwnedFd(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
            self._child_fds.append(null)
            slots = [null.fileno(), null.fileno(), null.fileno()]

            async def connect(port: int, what: str) -> trio.SocketStream:
                try:
                    stream = await dial(port)
                except errors.Unavailable as exc:  # the host never listened on the port
                    raise errors.Unavailable(f"failed to connect {what}: {exc.message}") from exc
                except OSError as exc:
                    raise errors.Internal(
                        f"failed to connect {what} to host port {port}: {exc.strerror or exc}"
                    ) from exc
                opened.append(stream)
                return stream

            if self.terminal:
                stdin = await connect(ports.stdin, "stdin") if ports.stdin is not None else None
                stdout = await connect(ports.stdout, "stdout") if ports.stdout is not None else None
                self._pty_sockets = (stdin, stdout)
            else:
                if ports.stdin is not None:
                    sock = await connect(ports.stdin, "stdin")
                    read_end, write_end = make_pipe()
                    self._child_fds.append(read_end)
                    slots[0] = read_end.fileno()
                    self._stdin_pump = InputPump("stdin", sock, write_end)
                for index, port, name in ((1, ports.stdout, "stdout"), (2, ports.stderr, "stderr")):
                    if port is None:
                        continue
                    sock = await connect(port, name)
                    read_end, write_end = make_pipe()
                    self._child_fds.append(write_end)
                    slots[index] = write_end.fileno()
                    self._output_pumps.append(OutputPump(name, read_end, sock))
            self._child_stdio = (slots[0], slots[1], slots[2])
        except BaseException:
            with trio.CancelScope(shield=True):
                for stream in opened:
                    await stream.aclose()
            self._close_child_fds()
            raise

    def _close_child_fds(self) -> None:
        for fd in self._child_fds:
            fd.close()
        self._child_fds.clear()

    # ------------------------------------------------------------------ tree
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own this process's tasks until it has settled, or until stopped or cancelled.

        On the way out: a child that still runs is stopped (SIGTERM and the stop grace if
        one was asked for, then SIGKILL) and waited for (shielded, bounded), and every fd this
        process owns is closed. After a :meth:`stop` the state is settled too (the exit, or
        ABANDONED if it never started); after any other cancellation the owner settles it.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for pump in self._output_pumps:
                    done = trio.Event()
                    self._pumps_done.append(done)
                    nursery.start_soon(self._run_pump, pump, done)
                if self._stdin_pump is not None:
                    nursery.start_soon(self._run_stdin, self._stdin_pump)
                task_status.started()
                await self._state.wait_value(_settled_or_deleted)
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            await self._teardown()
            self._close_child_fds()
            self._task_done.set()

    async def _run_pump(self, pump: OutputPump, done: trio.Event) -> None:
        try:
            await pump.run()
        finally:
            done.set()

    async def _run_stdin(self, pump: InputPump) -> None:
        with self._stdin_scope:
            await pump.run()

    async def _teardown(self) -> None:
        if self.state is State.RUNNING:
            await self._kill_and_reap()
        if self._stop_grace is None:
            return
        if self.state is State.REAPED:
            self._settle_exit()  # its output pumps are gone: nothing more will drain
        elif self.state is State.CREATED:
            self._abandon(Event.ABANDON)

    async def _kill_and_reap(self) -> None:
        """Stop a child that may still run: SIGTERM and up to the stop grace (when one was
        asked for), then SIGKILL and up to ``kill_wait`` seconds for the reaper. Shielded and
        bounded, so teardown always ends; a child that never dies is logged."""
        watch = self._watch
        if self.pid is None or watch is None or watch.status is not None:
            return
        grace = self._stop_grace or 0.0
        with trio.CancelScope(shield=True):
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, self._kill_wait)):
                if wait <= 0 and sig == signal.SIGTERM:
                    continue
                try:
                    self._backend.kill(self.pid, sig)
                except ProcessLookupError:
                    pass
                with trio.move_on_after(wait):
                    await watch.wait()
                    return
            log.error("process did not exit after SIGKILL", extra=self._fields())

    # ----------------------------------------------------------------- start
    async def start(self, extra_args: Sequence[str] = ()) -> int:
        """Launch the process; returns its pid (as seen by trinit). ``extra_args`` follow
        the helper arguments given at creation (what only the start knows).

        Raises FailedPrecondition when not startable, Internal with the helper's text when
        the launch fails (the process is then ABANDONED). The child's ends of the stdio pipes
        are closed either way.
        """
        if self._nursery is None:
            raise errors.FailedPrecondition("process is not supervised (container gone?)")
        if self.state is not State.CREATED:
            raise errors.Internal(f"process {self.process_id} is {self.state.value}, cannot start")
        self._lifecycle.apply(Event.START_REQUESTED)
        assert self._child_stdio is not None
        pids: list[int] = []

        def on_pid(pid: int) -> None:
            pids.append(pid)
            watch = self._reaper.register(pid)
            if len(pids) == 2:
                self._watch = watch
                self.pid = pid

        def apply_pending_size(master: int) -> None:
            # a resize queued before start, the last one; over the spec's consoleSize (the
            # helper set that earlier). A failure is logged, never a reason to fail the start.
            size, self._pending_size = self._pending_size, None
            if size is not None:
                try:
                    PtyRelay.set_window_size(master, *size)
                except errors.Internal as exc:
                    log.warning(f"queued resize not applied: {exc.message}", extra=self._fields())

        try:
            launched = await self._backend.launch(
                [*self._helper_args, *extra_args],
                stdio=self._child_stdio,
                terminal=self.terminal,
                on_pid=on_pid,
                on_console=apply_pending_size,  # before the workload execs
            )
        except BaseException as exc:
            self._close_child_fds()
            await self._kill_and_reap()
            # the failed child's own status when it has one (vmexec's 127 for a missing
            # program), else NEVER_RAN_EXIT_CODE
            self._abandon(Event.START_FAILED, self._watch.status if self._watch else None)
            if isinstance(exc, errors.TrinitError):
                raise
            if isinstance(exc, Exception):
                raise errors.Internal(errors.describe(exc)) from exc
            raise
        finally:
            # the helper's status is of no interest, unless the helper was the process
            # itself (the fork server forks a container's init directly: the same pid twice)
            if pids and pids[0] not in pids[1:]:
                self._reaper.forget(pids[0])
        self._close_child_fds()
        self.pid = launched.pid
        if self._watch is None or self._watch.pid != launched.pid:
            self._watch = self._reaper.register(launched.pid)
        self._lifecycle.apply(Event.STARTED_OK)
        # REAPED now if it already exited during the launch, else the moment it does
        self._watch.on_status(self._on_reaped)
        nursery = self._nursery
        if nursery is None:  # torn down while launching (its container failed or stopped)
            await self._kill_and_reap()
            if self.state is State.REAPED:
                self._settle_exit()
            if launched.pty_master is not None:
                os.close(launched.pty_master)
            raise errors.FailedPrecondition(
                f"process {self.process_id} was stopped while it started"
            )
        if self.terminal:
            if launched.pty_master is None:
                raise errors.Internal("terminal process started without a PTY master")
            stdin, stdout = self._pty_sockets
            self._pty = PtyRelay(OwnedFd(launched.pty_master), stdin, stdout)
            apply_pending_size(launched.pty_master)  # a resize while the launch ran on
            done = trio.Event()
            self._pumps_done.append(done)
            nursery.start_soon(self._run_relay, self._pty, done)
        elif launched.pty_master is not None:
            os.close(launched.pty_master)
        nursery.start_soon(self._supervise)
        log.info("started process", extra=self._fields())
        return launched.pid

    async def _run_relay(self, relay: PtyRelay, done: trio.Event) -> None:
        try:
            await relay.run()
        finally:
            done.set()

    def _on_reaped(self, status: ExitStatus) -> None:
        if self.state is State.RUNNING:
            self._lifecycle.apply(Event.REAPED)

    async def _supervise(self) -> None:
        """Reaped -> let the output drain (bounded) -> publish the exit."""
        if await self._state.wait_value(lambda s: s is not State.RUNNING) is not State.REAPED:
            return
        if self._pty is not None:
            self._pty.process_exited(self._drain_grace)
        for pump in self._output_pumps:
            pump.process_exited(self._drain_grace)
        for done in self._pumps_done:
            await done.wait()
        self._stdin_scope.cancel()
        if self.state is State.REAPED:
            self._settle_exit()

    def _settle_exit(self) -> None:
        assert self._watch is not None and self._watch.status is not None
        status = self._watch.status
        self._exit = (status.exit_code, status.exited_at)
        self._lifecycle.apply(Event.DRAINED)
        log.info("process exited", extra=self._fields(status=status.exit_code))

    def _abandon(self, event: Event, status: ExitStatus | None = None) -> None:
        """This process will never run: report ``status`` (if its child got that far) or
        NEVER_RAN_EXIT_CODE; its tree then releases its stdio."""
        if status is None:
            self._exit = (NEVER_RAN_EXIT_CODE, time.time())
        else:
            self._exit = (status.exit_code, status.exited_at)
        self._lifecycle.apply(event)
        log.info("process abandoned", extra=self._fields(status=self._exit[0]))

    def abandon_if_unstarted(self) -> None:
        """Its container's init is gone: a process that was never started never will be."""
        if self.state is State.CREATED:
            self._abandon(Event.ABANDON)

    def fault(self, reason: str) -> None:
        """Its container failed: waiters get INTERNAL with ``reason`` (unless it settled)."""
        if self._lifecycle.can_apply(Event.FAULT):
            self._fault = reason
            self._lifecycle.apply(Event.FAULT)

    # ---------------------------------------------------------------- control
    async def wait(self) -> tuple[int, float]:
        """Block until the process has settled; (exit_code, exited_at).

        Raises Internal if its container failed, FailedPrecondition if it was deleted
        without an exit.
        """
        if not _settled_or_deleted(self.state):
            log.debug("waiting for exit", extra=self._fields())
        state = await self._state.wait_value(_settled_or_deleted)
        if state is State.FAULTED:
            raise errors.Internal(self._fault or "container failed")
        if self._exit is None:
            raise errors.FailedPrecondition(
                f"process {self.process_id} was deleted before it exited"
            )
        return self._exit

    def kill(self, sig: int) -> None:
        if self.pid is None:
            raise errors.FailedPrecondition("process PID is required")
        watch = self._watch
        if self.state not in LIVE or watch is None or watch.status is not None:
            return  # reaped (its pid may be reused by now): a no-op, as vminitd
        try:
            self._backend.kill(self.pid, sig)
        except ProcessLookupError:
            return
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise errors.InvalidArgument(f"invalid signal {sig}") from exc
            raise errors.Internal(exc.strerror or str(exc)) from exc
        except (ValueError, OverflowError) as exc:
            raise errors.InvalidArgument(f"invalid signal {sig}") from exc

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal size. Before start it is kept (the last one wins) and applied when
        the PTY exists, before the workload execs (vminitd drops it); after exit a no-op."""
        if not self.terminal:
            raise errors.Unimplemented("resize not supported")
        if self.state in (State.CREATED, State.STARTING):
            self._pending_size = (rows & 0xFFFF, cols & 0xFFFF)  # applied by start()
            return
        if self.state not in LIVE or self._pty is None:
            return
        self._pty.resize(rows & 0xFFFF, cols & 0xFFFF)

    async def close_stdin(self) -> None:
        if self.terminal:
            if self._pty is not None:
                await self._pty.close_stdin()
            else:
                stdin, _ = self._pty_sockets
                if stdin is not None:
                    await stdin.aclose()
            return
        if self._stdin_pump is not None:
            await self._stdin_pump.close_stdin()

    def stop(self, grace: float = 0.0) -> None:
        """Tear this process down via its nursery (kill, reap, close fds) and settle it: with
        a ``grace`` a running child gets SIGTERM and that long before SIGKILL. It stays
        known (with its exit) until :meth:`forget`."""
        self._stop_grace = grace if self._stop_grace is None else min(grace, self._stop_grace)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def join(self) -> None:
        """Wait until this process's tasks have ended (after :meth:`stop` or its exit)."""
        await self._task_done.wait()

    async def discard(self) -> None:
        """Close everything of a process nobody will supervise (its container refused it):
        runs its tree just long enough to stop it. Shielded; ends at once (never started)."""
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                await nursery.start(self.run)
                self.stop()

    def forget(self) -> None:
        """DELETED: its container no longer knows it (call after :meth:`join`)."""
        if self._lifecycle.can_apply(Event.DELETE):
            self._lifecycle.apply(Event.DELETE)
        else:
            log.warning(f"deleting a process that is {self.state.value}", extra=self._fields())
