"""ManagedProcess: one container process (init or exec) and everything it owns.

Ownership. A ManagedProcess owns its host stdio connections, the pipes between them and the
child, the pumps or PTY relay moving the bytes, and the child's pid once started. All of
its tasks run in its own nursery (started by the container with ``nursery.start(proc.run)``),
so cancelling it (DeleteProcess, container teardown, agent shutdown) kills the child, waits
for the reaper to report it (bounded), and closes every fd.

Exit reporting. The reaper tells us the pid exited; we then let the output pumps drain what
the pipes hold (bounded by ``drain_grace`` when descendants keep them open), close the host
connections, and only then publish the exit status, so a host that sees WaitProcess return
already has every byte (spec 6.4, design "stdout/stderr are complete").

Lifecycle transitions go through the pure state machine in ``trinit.exec``.
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
from trinit.exec import Event, Lifecycle, State
from trinit.io import InputPump, OutputPump, OwnedFd, PtyRelay, make_pipe

from ._backend import ProcessBackend
from ._reaper import ExitStatus, ExitWatch, Reaper

log = logging.getLogger("trinit.process")

Dial = Callable[[int], Awaitable[trio.SocketStream]]

#: Exit code reported for a process that can never run (its start failed, or its
#: container's init exited before it was started). vminitd would block WaitProcess forever.
NEVER_RAN_EXIT_CODE = 255


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
        self._stop_grace = 0.0
        self._lifecycle = Lifecycle()
        self.pid: int | None = None
        self._watch: ExitWatch | None = None
        self._exit: ExitStatus | None = None
        self._exit_code: int | None = None
        self._exited_at: float | None = None
        self._exited = trio.Event()
        self._finished = trio.Event()
        self._run_done = trio.Event()
        self._exited_or_gone = trio.Event()
        self._nursery: trio.Nursery | None = None
        # stdio
        self._child_fds: list[OwnedFd] = []
        self._child_stdio: tuple[int, int, int] | None = None
        self._output_pumps: list[OutputPump] = []
        self._stdin_pump: InputPump | None = None
        self._stdin_scope = trio.CancelScope()
        self._pty_sockets: tuple[trio.SocketStream | None, trio.SocketStream | None] = (None, None)
        self._pty: PtyRelay | None = None
        self._pumps_done: list[trio.Event] = []
        self.on_exit: Callable[[ManagedProcess], None] | None = None

    # ----------------------------------------------------------------- state
    @property
    def state(self) -> State:
        return self._lifecycle.state

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    @property
    def reaped(self) -> bool:
        """The reaper has its exit status: the pid may already belong to another process.

        Becomes true before :attr:`exited` (which waits for the output to drain); nothing
        may signal or join ``pid`` from then on.
        """
        return self._watch is not None and self._watch.status is not None

    @property
    def running(self) -> bool:
        return self.pid is not None and not self._exited.is_set() and not self.reaped

    def _fields(self, **more: object) -> dict[str, object]:
        return fields(container=self.container_id, process=self.process_id, pid=self.pid, **more)

    def set_parent_pid(self, pid: int) -> None:
        """Execs join the init's namespaces; the helper needs the init's pid (spec 6.3)."""
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
        """Own this process's tasks until it has exited and drained, or until cancelled.

        Cancelled: SIGKILL the child if it runs, wait (shielded, bounded) for the reaper to
        report it, and close every fd this process owns.
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
                await self._finished.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            await self._reap_on_teardown()
            self._close_child_fds()
            self._run_done.set()
            self._exited_or_gone.set()

    async def _run_pump(self, pump: OutputPump, done: trio.Event) -> None:
        try:
            await pump.run()
        finally:
            done.set()

    async def _run_stdin(self, pump: InputPump) -> None:
        with self._stdin_scope:
            await pump.run()

    async def _reap_on_teardown(self) -> None:
        """Stop a still-running child: SIGTERM and up to ``stop_grace`` seconds (when a grace
        was asked for), then SIGKILL and up to ``kill_wait`` seconds for the reaper. Shielded
        and bounded, so teardown always ends."""
        if self.pid is None or self._exited.is_set() or self._watch is None:
            return
        watch = self._watch
        if watch.status is not None:  # reaped, still draining: nothing left to signal
            self._publish(watch.status.exit_code, watch.status.exited_at)
            return
        with trio.CancelScope(shield=True):
            for sig, wait in (
                (signal.SIGTERM, self._stop_grace),
                (signal.SIGKILL, self._kill_wait),
            ):
                if wait <= 0 and sig == signal.SIGTERM:
                    continue
                try:
                    self._backend.kill(self.pid, sig)
                except ProcessLookupError:
                    pass
                with trio.move_on_after(wait):
                    status = await watch.wait()
                    self._publish(status.exit_code, status.exited_at)
                    return
            log.error("process did not exit after SIGKILL", extra=self._fields())

    # ----------------------------------------------------------------- start
    async def start(self, before_ack: Callable[[int], Awaitable[None]] | None = None) -> int:
        """Launch the process; returns its pid (as seen by trinit).

        Raises FailedPrecondition when not startable, Internal with the helper's text when
        the launch fails. The child's ends of the stdio pipes are closed either way.
        """
        if self._nursery is None:
            raise errors.FailedPrecondition("process is not supervised (container gone?)")
        if self.state is not State.CREATED:
            raise errors.Internal(
                f"process {self.process_id} is {self.state.name.lower()}, cannot start"
            )
        self._lifecycle.apply(Event.START_REQUESTED)
        assert self._child_stdio is not None
        pids: list[int] = []

        def on_pid(pid: int) -> None:
            pids.append(pid)
            watch = self._reaper.register(pid)
            if len(pids) == 2:
                self._watch = watch
                self.pid = pid

        try:
            launched = await self._backend.launch(
                self._helper_args,
                stdio=self._child_stdio,
                terminal=self.terminal,
                on_pid=on_pid,
                before_ack=before_ack,
            )
        except BaseException as exc:
            self._lifecycle.apply(Event.START_FAILED)
            self._close_child_fds()
            if self.pid is not None and self._watch is not None:
                await self._reap_on_teardown()
            self._abandon()
            if isinstance(exc, errors.TrinitError):
                raise
            if isinstance(exc, Exception):
                raise errors.Internal(errors.describe(exc)) from exc
            raise
        finally:
            if pids:
                self._reaper.forget(pids[0])
        self._close_child_fds()
        self.pid = launched.pid
        if self._watch is None or self._watch.pid != launched.pid:
            self._watch = self._reaper.register(launched.pid)
        self._lifecycle.apply(Event.STARTED_OK)
        nursery = self._nursery
        if self.terminal:
            if launched.pty_master is None:
                raise errors.Internal("terminal process started without a PTY master")
            stdin, stdout = self._pty_sockets
            self._pty = PtyRelay(OwnedFd(launched.pty_master), stdin, stdout)
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

    async def _supervise(self) -> None:
        assert self._watch is not None
        status = await self._watch.wait()
        if self._pty is not None:
            self._pty.process_exited(self._drain_grace)
        for pump in self._output_pumps:
            pump.process_exited(self._drain_grace)
        for done in self._pumps_done:
            await done.wait()
        self._stdin_scope.cancel()
        self._publish(status.exit_code, status.exited_at)

    def _publish(self, exit_code: int, exited_at: float) -> None:
        if self._exited.is_set():
            return
        self._exit_code = exit_code
        self._exited_at = exited_at
        if self.state is State.STARTED:
            self._lifecycle.apply(Event.EXITED)
        self._exited.set()
        self._exited_or_gone.set()
        self._finished.set()
        log.info("process exited", extra=self._fields(status=exit_code))
        if self.on_exit is not None:
            self.on_exit(self)

    def _abandon(self) -> None:
        """This process will never run: report NEVER_RAN_EXIT_CODE and release its stdio."""
        self._publish(NEVER_RAN_EXIT_CODE, time.time())

    def abandon_if_unstarted(self) -> None:
        if self.pid is None and self.state is State.CREATED:
            self._abandon()

    # ---------------------------------------------------------------- control
    async def wait(self) -> tuple[int, float]:
        """Block until the process has exited and drained; (exit_code, exited_at).

        Raises FailedPrecondition if the process is torn down without a reaped exit.
        """
        if not self._exited_or_gone.is_set():
            log.debug("waiting for exit", extra=self._fields())
        await self._exited_or_gone.wait()
        if not self._exited.is_set():
            raise errors.FailedPrecondition(
                f"process {self.process_id} was deleted before it exited"
            )
        assert self._exit_code is not None and self._exited_at is not None
        return self._exit_code, self._exited_at

    def kill(self, sig: int) -> None:
        if self.pid is None:
            raise errors.FailedPrecondition("process PID is required")
        if self._exited.is_set() or self.reaped:
            return  # already exited (its pid may be reused by now): a no-op, as vminitd
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
        if not self.terminal:
            raise errors.Unimplemented("resize not supported")
        if self._exited.is_set() or self._pty is None:
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

    def cancel(self, stop_grace: float = 0.0) -> None:
        """Tear this process down (kill, reap, close fds) via its nursery; with a
        ``stop_grace`` it gets SIGTERM and that long to exit before SIGKILL."""
        self._stop_grace = stop_grace
        self._finished.set()

    async def join(self) -> None:
        """Wait until this process's tasks have ended (after :meth:`cancel` or exit)."""
        await self._run_done.wait()
