"""Warm exec helpers: a launch's helper is forked from a fork server that is already running.

Starting a container process used to pay a whole Python start-up (~15 ms of interpreter and
imports) inside every StartProcess. :class:`HelperPool` keeps one *fork server* (the
"zygote") instead: the exec helper spawned exactly like a fresh one (``posix_spawn``,
default signals, empty mask, trinit's cgroup and namespaces), except that its only extra fd
is one end of a ``SOCK_SEQPACKET`` socketpair on fd 3 and it runs ``_child.zygote_entry``,
which imports everything, freezes the garbage collector's view of those objects and serves
requests.

The server sends one byte when its imports are done. A launch sends it one message: the
helper argv tail, trinit's environment *as of this launch* (Setenv may have changed it since
the server started) and the six fds for its 0..5 (SCM_RIGHTS). The server forks the helper
as its sibling (``clone3`` with ``CLONE_PARENT``, so the helper is trinit's child like a
spawned one; on kernels without ``clone3`` through an intermediate child that exits at
once) and answers its pid; from then on that helper follows the same pipe
protocol as a fresh one (:func:`trinit.exec._launch.launch_via`). Its pid is the helper pid
given to ``on_pid``. Because every helper is forked from the same process, the interpreter's
pages are shared copy-on-write between the server, every helper and every in-process
container init (``trinit.exec._selfexec``): a helper costs only the pages it writes.

Invariants:
* One request at a time: a lock covers sending a request and reading its answer, so an
  answer is never read by another launch. A fork takes about a millisecond, so concurrent
  launches queue for that long only; none spawns a fresh helper because another launch
  holds the server.
* The server starts in the background (a worker thread), under SCHED_IDLE: its ~15 ms of
  start-up CPU then runs on CPU nobody else wants. The first hand-off gives it trinit's
  scheduling policy back, so every helper it forks (and the container) runs exactly as a
  freshly spawned helper's would.
* A dead or hung server never fails a launch. Any host ``Kill(-1, SIGKILL)`` kills it; the
  hand-off then fails (EPIPE, ECONNRESET, EOF, or no answer within
  :data:`HANDOFF_TIMEOUT`), the launch spawns a fresh helper with the same pipes, and a new
  server is started. A cancelled hand-off kills the server (it may have forked a helper
  whose pid nobody will learn; that helper finds its pipes closed and exits). The server
  is never waited for by trinit except through the agent's reaper, whose table of
  unclaimed pids takes its status; the server itself waits for nothing (except, on
  kernels without ``clone3``, its own short-lived intermediates).
* Nothing outlives the owner. :meth:`HelperPool.aclose` SIGKILLs the server (through a
  pidfd, so a recycled pid is never hit) and waits until it is dead; a server spawned after
  that is killed on arrival. If trinit itself dies, the kernel closes trinit's socket end
  and the server's ``recvmsg`` returns EOF, so it exits by itself (the reason there is no
  PR_SET_PDEATHSIG: that fires when the *thread* that spawned it exits, and spawns happen in
  short-lived worker threads).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping

import outcome
import trio

from trinit.exec._launch import ZYGOTE_BOOTSTRAP, LaunchResult, launch_via, spawn_python

log = logging.getLogger("trinit.exec")

CONTROL_FD = 3  # as _child.ZYGOTE_CONTROL_FD
MAX_REQUEST = 1 << 20  # as _child.ZYGOTE_MAX_REQUEST
REFUSED = b"\x00"  # as _child.ZYGOTE_REFUSED: this request was not served
READY = b"\x02"  # as _child.ZYGOTE_READY: sent once its imports are done
PID_SIZE = 4  # an accepted request is answered with the helper's pid (native int32)
CLOSE_GRACE = 2.0
"""Seconds :meth:`HelperPool.aclose` waits for a killed server to be dead (or in flight)."""
HANDOFF_TIMEOUT = 10.0
"""Seconds a hand-off waits for the server's answer before it counts the server as hung.

A fork takes a millisecond here and tens of milliseconds under emulation; a server that has
not answered after this long (stopped, or starved) is killed and the launch spawns afresh."""


def encode_request(argv_tail: list[str], env: Mapping[str, str]) -> bytes:
    """The server's request: ``argc, argv..., KEY=VALUE...`` separated by NUL.

    Raises ValueError for what ``posix_spawn`` would refuse too (a NUL anywhere, ``=`` in a
    key); the caller then spawns a fresh helper, which reports it the usual way.
    """
    fields = [str(len(argv_tail)).encode(), *(os.fsencode(arg) for arg in argv_tail)]
    if env is os.environ:
        # the agent's own environment (nearly every launch): its bytes as they are, where
        # going through os.environ decodes every variable only to encode it again
        raw_items: Iterable[tuple[bytes, bytes]] = os.environb.items()
    else:
        raw_items = ((os.fsencode(key), os.fsencode(value)) for key, value in env.items())
    for raw_key, raw_value in raw_items:
        if not raw_key or b"=" in raw_key:
            raise ValueError(f"illegal environment variable name {os.fsdecode(raw_key)!r}")
        fields.append(raw_key + b"=" + raw_value)
    if any(b"\0" in field for field in fields):
        raise ValueError("embedded null byte")
    return b"\0".join(fields)


class _ForkServer:
    """The running fork server: its pid, a pidfd to kill it safely, trinit's socket end."""

    def __init__(
        self, pid: int, pidfd: int, control: socket.socket, python: str, idle: bool
    ) -> None:
        self.pid = pid
        self.python = python
        self.served = 0  # helpers forked for launches
        self._idle = idle
        self._pidfd: int | None = pidfd
        self._control: socket.socket | None = control
        self._ready = False
        self._lock = trio.Lock()  # one request and its answer at a time

    @classmethod
    def spawn(cls, python: str, env: Mapping[str, str], idle: bool) -> _ForkServer:
        """Start one (blocking: vfork + exec; run it in a worker thread).

        ``idle``: under SCHED_IDLE, so its start-up only uses CPU nobody else wants;
        :meth:`hand_off` gives it trinit's policy back before it serves a launch.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with theirs:
                # stdio: trinit's own (start-up errors reach its log); a helper gets its own
                fds = {CONTROL_FD: theirs.fileno()}
                pid = spawn_python(python, ["-c", ZYGOTE_BOOTSTRAP], fds, env)
            if idle:  # (posix_spawn's own scheduler attribute refuses SCHED_IDLE)
                try:
                    os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
                except OSError:
                    pass  # dead already: the hand-off fails and the launch spawns afresh
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                # Already dead and reaped: never kill by pid (it may be recycled).
                # It cannot serve anyway (its socket end is closed): hand-off fails fast.
                pidfd = -1
            ours.setblocking(False)
        except BaseException:
            ours.close()
            raise
        return cls(pid, pidfd, ours, python, idle)

    @property
    def alive(self) -> bool:
        """False once it has been discarded (dead, hung, or closed by the pool)."""
        return self._control is not None

    def kill(self) -> None:
        """SIGKILL it, unless it is dead already."""
        if self._pidfd is not None and self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass  # already dead

    def discard(self) -> None:
        """:meth:`kill` and close trinit's fds for it. Idempotent."""
        self.kill()
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._pidfd is not None:
            if self._pidfd >= 0:
                os.close(self._pidfd)
            self._pidfd = None

    def _check_alive(self) -> None:
        """Raise ProcessLookupError once it has been reaped (the reaper runs in this thread,
        so it cannot be reaped between this check and the caller's next await)."""
        if self._pidfd is None or self._pidfd < 0:
            raise ProcessLookupError(errno.ESRCH, "exec fork server already reaped")
        signal.pidfd_send_signal(self._pidfd, 0)

    async def wait_ready(self) -> None:
        """Return once it has done its imports (or died: then the hand-off will fail)."""
        async with self._lock:  # never read an answer meant for a hand-off
            control = self._control
            while control is not None and not self._ready:
                try:
                    control.recv(1)  # READY (the only thing it sends unasked) or EOF
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(control)
                    continue
                except OSError:
                    pass
                self._ready = True

    async def wait_dead(self) -> None:
        """Return once the process has exited (its pidfd turns readable)."""
        if self._pidfd is not None and self._pidfd >= 0:
            await trio.lowlevel.wait_readable(self._pidfd)

    async def hand_off(
        self, argv_tail: list[str], env: Mapping[str, str], fds: tuple[int, ...]
    ) -> int | None:
        """Have it fork this launch's helper; the helper's pid, or None if it did not.

        ``fds`` are borrowed (the kernel duplicates them into the message). None means
        nothing was started: the caller spawns a fresh helper. A dead, broken or hung
        server is discarded (:attr:`alive` turns False); on cancellation it is killed.
        """
        try:
            request = encode_request(argv_tail, env)
        except ValueError:
            return None  # the request's fault, not the server's: a fresh helper reports it
        if len(request) > MAX_REQUEST:
            return None
        async with self._lock:
            control = self._control
            if control is None:
                return None
            try:
                answer = b""
                with trio.move_on_after(HANDOFF_TIMEOUT):
                    answer = await self._exchange(control, request, fds)
            except BaseException:
                self.discard()
                raise
            if len(answer) == PID_SIZE:
                self.served += 1
                return int.from_bytes(answer, sys.byteorder, signed=True)
            if answer != REFUSED:  # EOF, an error or no answer: unusable from now on
                log.debug("exec fork server %d unusable", self.pid)
                self.discard()
            return None

    async def _exchange(
        self, control: socket.socket, request: bytes, fds: tuple[int, ...]
    ) -> bytes:
        """Send one request; its answer, or b"" if the server is dead or refuses the send."""
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _pack_fds(fds))]
        try:
            if self._idle:  # helpers and containers get trinit's policy
                self._check_alive()  # not reaped, so self.pid is not recycled
                policy = os.sched_getscheduler(0)
                os.sched_setscheduler(self.pid, policy, os.sched_getparam(0))
                self._idle = False
            control.sendmsg([request], rights, socket.MSG_NOSIGNAL)
            while True:
                try:
                    message = control.recv(PID_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(control)
                    continue
                if message == READY:
                    self._ready = True
                    continue
                return message
        except OSError as exc:
            # ESRCH/EPIPE/ECONNRESET: it died; EMSGSIZE/ENOBUFS: too big for it.
            reason = errno.errorcode.get(exc.errno or 0, str(exc))
            log.debug("exec fork server %d unusable: %s", self.pid, reason)
            return b""


def _pack_fds(fds: tuple[int, ...]) -> bytes:
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)


class HelperPool:
    """Owns at most one fork server and launches through it (see the module docstring).

    Created by its owner (``trinit.nursery.HelperBackend``), closed with :meth:`aclose`.
    :meth:`launch` has :func:`trinit.exec.launch`'s signature and contract; it never fails
    because of the pool (a missing, dead or mismatched server means a fresh spawn).
    """

    def __init__(self) -> None:
        self._server: _ForkServer | None = None
        self._spawning = 0
        self._spawned = trio.Event()  # set whenever an in-flight spawn has been delivered
        self._closed = False
        self._idle = os.geteuid() == 0  # leaving SCHED_IDLE again needs CAP_SYS_NICE
        self.fresh_spawns = 0  # launches that had to spawn a helper (no usable server)

    @property
    def server_pid(self) -> int | None:
        """The fork server's pid, if one is running (or starting)."""
        return None if self._server is None else self._server.pid

    @property
    def served(self) -> int:
        """Helpers the current fork server has forked."""
        return 0 if self._server is None else self._server.served

    async def launch(
        self,
        argv_tail: list[str],
        *,
        stdio: tuple[int, int, int],
        on_pid: Callable[[int], None],
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        terminal: bool = False,
        before_ack: Callable[[int], Awaitable[None]] | None = None,
        on_console: Callable[[int], None] | None = None,
    ) -> LaunchResult:
        """:func:`trinit.exec.launch`, with the helper forked by the server if it can.

        Without a usable server the helper is spawned afresh, and a server is started in
        the background (unless the pool is closed). Cancellation otherwise behaves exactly
        as for :func:`trinit.exec.launch`.
        """
        server = self._current(python)
        if server is None:
            self._refill(python)

        async def handoff(
            argv: list[str], environment: Mapping[str, str], fds: tuple[int, ...]
        ) -> int | None:
            assert server is not None
            pid = await server.hand_off(argv, environment, fds)
            if pid is None:
                self.fresh_spawns += 1
                self._forget(server)
            return pid

        if server is None:
            self.fresh_spawns += 1
        try:
            return await launch_via(
                None if server is None else handoff,
                argv_tail, stdio=stdio, on_pid=on_pid, python=python, env=env,
                terminal=terminal, before_ack=before_ack, on_console=on_console,
            )  # fmt: skip
        finally:
            if server is not None:
                self._forget(server)

    async def prewarm(self, python: str = sys.executable, *, ready: bool = False) -> None:
        """Make sure a fork server for ``python`` is running; with ``ready``, done importing.

        Returns once one has been spawned (or the spawn has failed: then there is still no
        server, and launches spawn fresh helpers). Cancellation only stops the waiting: the
        spawn goes on and its server joins the pool.
        """
        self._current(python)
        self._refill(python)
        while self._server is None and self._spawning and not self._closed:
            await self._spawned.wait()
        if ready and self._server is not None:
            await self._server.wait_ready()

    def _current(self, python: str) -> _ForkServer | None:
        """The usable server for ``python``; a server for another interpreter is retired."""
        server = self._server
        if server is not None and (not server.alive or server.python != python):
            self._server = None
            server.discard()
            return None
        return server

    def _forget(self, server: _ForkServer) -> None:
        """Drop ``server`` if it has become unusable, and start its successor."""
        if not server.alive and self._server is server:
            self._server = None
            self._refill(server.python)

    def _refill(self, python: str) -> None:
        """Spawn a server in a worker thread unless one is running or on its way."""
        if self._closed or self._server is not None or self._spawning:
            return
        self._spawning += 1
        token = trio.lowlevel.current_trio_token()
        env = dict(os.environ)  # a snapshot: Setenv may change os.environ meanwhile
        idle = self._idle

        def spawn() -> _ForkServer | None:
            try:
                return _ForkServer.spawn(python, env, idle)
            except OSError as exc:
                log.warning("cannot start the exec fork server: %s", exc)
                return None

        def deliver(result: outcome.Outcome[_ForkServer | None]) -> None:  # worker thread
            try:
                server = result.unwrap()
            except BaseException:
                log.exception("cannot start the exec fork server")
                server = None
            try:
                token.run_sync_soon(self._arrived, server)
            except trio.RunFinishedError:
                if isinstance(server, _ForkServer):
                    server.discard()

        trio.lowlevel.start_thread_soon(spawn, deliver)

    def _arrived(self, server: _ForkServer | None) -> None:
        self._spawning -= 1
        self._spawned.set()
        self._spawned = trio.Event()
        if server is None:
            return
        if self._closed or self._server is not None:
            server.discard()
            return
        self._server = server

    async def aclose(self) -> None:
        """Kill the fork server (and any still being spawned) and close their fds.

        Returns once they are dead (zombies for the reaper), or after :data:`CLOSE_GRACE`
        seconds. Shielded: safe to await from a cancelled scope. Idempotent; launches after
        this spawn fresh helpers only.
        """
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
            while self._spawning:
                await self._spawned.wait()
            server, self._server = self._server, None
            if server is not None:
                server.kill()
                try:
                    await server.wait_dead()
                finally:
                    server.discard()
