"""Warm exec helpers: a launch hands its work to a helper that is already running.

Starting a container process used to pay a whole Python start-up (~15 ms of interpreter and
imports) inside every StartProcess. :class:`HelperPool` keeps one *zygote* waiting instead:
the exec helper spawned exactly like a fresh one (``posix_spawn``, default signals, empty
mask, trinit's cgroup and namespaces), except that its only extra fd is one end of a
``SOCK_SEQPACKET`` socketpair on fd 3 and it runs ``_child.zygote_entry``, which imports
everything and then blocks in ``recvmsg``.

The zygote sends one byte when its imports are done. A launch sends it one message: the
helper argv tail, trinit's environment *as of this launch* (Setenv may have changed it since
the zygote started) and the six fds for its 0..5 (SCM_RIGHTS). The zygote answers one byte
and from then on is that launch's helper, with the same pipe protocol as a fresh one
(:func:`trinit.exec._launch.launch_via`). Its pid is the helper pid given to ``on_pid``.

Invariants:
* A zygote serves at most one launch: it is taken out of the pool (synchronously, before
  any await) before anything is sent to it, so it is never handed fds for two launches.
  Its successor is spawned in the background as the launch begins (a worker thread, never
  awaited by the launch), under SCHED_IDLE: its ~15 ms of start-up CPU then runs on the
  core the single-threaded container set-up leaves idle, and never delays trinit, a
  helper or a workload. The hand-off gives it trinit's scheduling policy back first, so
  the helper and the container run exactly as a freshly spawned helper's would. (Measured:
  spawning it after the launch instead made the next RPCs compete with its start-up.)
* A dead zygote never fails a launch. Any host ``Kill(-1, SIGKILL)`` kills it; the hand-off
  then fails (EPIPE, ECONNRESET, or EOF instead of the answer byte), which proves the zygote
  started nothing, and the launch spawns a fresh helper with the same pipes. A zygote is
  never waited for: only the agent's reaper calls waitpid, and a dead zygote's status goes to
  its table of unclaimed pids.
* Nothing outlives the owner. :meth:`HelperPool.aclose` SIGKILLs the waiting zygote (through
  a pidfd, so a recycled pid is never hit) and waits until it is dead; a zygote spawned
  after that is killed on arrival. If trinit itself dies, the kernel closes trinit's socket
  end and the zygote's ``recvmsg`` returns EOF, so it exits by itself (the reason there is no
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
from collections.abc import Awaitable, Callable, Mapping

import outcome
import trio

from trinit.exec._launch import ZYGOTE_BOOTSTRAP, LaunchResult, launch_via, spawn_python

log = logging.getLogger("trinit.exec")

CONTROL_FD = 3  # as _child.ZYGOTE_CONTROL_FD
MAX_REQUEST = 1 << 20  # as _child.ZYGOTE_MAX_REQUEST
ACCEPTED = b"\x01"  # as _child.ZYGOTE_ACCEPTED
READY = b"\x02"  # as _child.ZYGOTE_READY: sent once its imports are done
CLOSE_GRACE = 2.0
"""Seconds :meth:`HelperPool.aclose` waits for a killed zygote to be dead (or in flight)."""


def encode_request(argv_tail: list[str], env: Mapping[str, str]) -> bytes:
    """The zygote's request: ``argc, argv..., KEY=VALUE...`` separated by NUL.

    Raises ValueError for what ``posix_spawn`` would refuse too (a NUL anywhere, ``=`` in a
    key); the caller then spawns a fresh helper, which reports it the usual way.
    """
    fields = [str(len(argv_tail)).encode(), *(os.fsencode(arg) for arg in argv_tail)]
    for key, value in env.items():
        raw_key = os.fsencode(key)
        if not raw_key or b"=" in raw_key:
            raise ValueError(f"illegal environment variable name {key!r}")
        fields.append(raw_key + b"=" + os.fsencode(value))
    if any(b"\0" in field for field in fields):
        raise ValueError("embedded null byte")
    return b"\0".join(fields)


class _Zygote:
    """One waiting helper: its pid, a pidfd to kill it safely, and trinit's socket end."""

    def __init__(
        self, pid: int, pidfd: int, control: socket.socket, python: str, idle: bool
    ) -> None:
        self.pid = pid
        self.python = python
        self._idle = idle
        self._pidfd: int | None = pidfd
        self._control: socket.socket | None = control
        self._ready = False

    @classmethod
    def spawn(cls, python: str, env: Mapping[str, str], idle: bool) -> _Zygote:
        """Start one (blocking: vfork + exec; run it in a worker thread).

        ``idle``: under SCHED_IDLE, so its start-up only uses CPU nobody else wants;
        :meth:`hand_off` gives it trinit's policy back before it serves a launch.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with theirs:
                # stdio: trinit's own until the hand-off (start-up errors reach its log)
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

    def kill(self) -> None:
        """SIGKILL it, unless it is dead or no longer ours (handed off to a launch)."""
        if self._pidfd is not None and self._pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass  # already dead

    def discard(self) -> None:
        """:meth:`kill` and close trinit's fds for it. Idempotent; a no-op once handed off."""
        self.kill()
        self._release()

    def _release(self) -> None:
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
            raise ProcessLookupError(errno.ESRCH, "exec zygote already reaped")
        signal.pidfd_send_signal(self._pidfd, 0)

    async def wait_ready(self) -> None:
        """Return once it has done its imports (or died: then the hand-off will fail)."""
        control = self._control
        while control is not None and not self._ready:
            try:
                control.recv(1)  # READY (the only thing it sends before a hand-off) or EOF
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
        """Give it this launch; its pid once it has accepted, None if it cannot serve.

        ``fds`` are borrowed (the kernel duplicates them into the message). None means
        nothing was started: the caller spawns a fresh helper. Either way the zygote is no
        longer ours afterwards; on cancellation it is killed.
        """
        control = self._control
        assert control is not None, "a zygote serves one launch"
        try:
            try:
                request = encode_request(argv_tail, env)
            except ValueError:
                self.discard()
                return None
            if len(request) > MAX_REQUEST:
                self.discard()
                return None
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _pack_fds(fds))]
            try:
                if self._idle:  # the helper and its container get trinit's policy
                    self._check_alive()  # not reaped, so self.pid is not recycled
                    policy = os.sched_getscheduler(0)
                    os.sched_setscheduler(self.pid, policy, os.sched_getparam(0))
                control.sendmsg([request], rights, socket.MSG_NOSIGNAL)
                answer = await _recv_answer(control)
            except OSError as exc:
                # ESRCH/EPIPE/ECONNRESET: it died; EMSGSIZE/ENOBUFS: too big for it.
                reason = errno.errorcode.get(exc.errno or 0, str(exc))
                log.debug("exec zygote %d unusable: %s", self.pid, reason)
                answer = b""
            if answer != ACCEPTED:
                self.discard()
                return None
        except BaseException:
            self.discard()
            raise
        self._release()  # it is a launch's helper now, watched through on_pid
        return self.pid


def _pack_fds(fds: tuple[int, ...]) -> bytes:
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)


async def _recv_answer(control: socket.socket) -> bytes:
    """The next message other than READY; b"" on EOF (one-byte messages, SOCK_SEQPACKET)."""
    while True:
        try:
            message = control.recv(1)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(control)
            continue
        if message != READY:
            return message


class HelperPool:
    """Owns at most one waiting zygote and launches through it (see the module docstring).

    Created by its owner (``trinit.nursery.HelperBackend``), closed with :meth:`aclose`.
    :meth:`launch` has :func:`trinit.exec.launch`'s signature and contract; it never fails
    because of the pool (a missing, dead or mismatched zygote means a fresh spawn).
    """

    def __init__(self) -> None:
        self._spare: _Zygote | None = None
        self._spawning = 0
        self._spawned = trio.Event()  # set whenever an in-flight spawn has been delivered
        self._closed = False
        self._idle = os.geteuid() == 0  # leaving SCHED_IDLE again needs CAP_SYS_NICE

    @property
    def spare_pid(self) -> int | None:
        """The waiting zygote's pid (the next launch's helper), if there is one."""
        return None if self._spare is None else self._spare.pid

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
        """:func:`trinit.exec.launch`, through the waiting zygote if there is a usable one.

        The zygote (if any) is consumed whatever happens (killed if it was not handed this
        launch); its successor is spawned in the background right away, unless the pool is
        closed. Cancellation otherwise behaves exactly as for :func:`trinit.exec.launch`.
        """
        zygote = self._take(python)
        self._refill(python)  # now: it starts up on the CPU the container set-up leaves idle
        try:
            return await launch_via(
                None if zygote is None else zygote.hand_off,
                argv_tail, stdio=stdio, on_pid=on_pid, python=python, env=env,
                terminal=terminal, before_ack=before_ack, on_console=on_console,
            )  # fmt: skip
        finally:
            if zygote is not None:
                zygote.discard()  # not handed off (an early failure); no-op otherwise
            self._refill(python)  # if the spawn above failed, or the spare was taken

    async def prewarm(self, python: str = sys.executable, *, ready: bool = False) -> None:
        """Make sure a zygote for ``python`` is waiting; with ``ready``, done importing too.

        Returns once one has been spawned (or the spawn has failed: then there is still no
        zygote, and launches spawn fresh helpers). Cancellation only stops the waiting: the
        spawn goes on and its zygote joins the pool.
        """
        if self._spare is not None and self._spare.python != python:
            self._take(python)
        self._refill(python)
        while self._spare is None and self._spawning and not self._closed:
            await self._spawned.wait()
        if ready and self._spare is not None:
            await self._spare.wait_ready()

    def _take(self, python: str) -> _Zygote | None:
        zygote, self._spare = self._spare, None
        if zygote is not None and zygote.python != python:
            zygote.discard()
            return None
        return zygote

    def _refill(self, python: str) -> None:
        """Spawn a successor in a worker thread unless one is waiting or on its way."""
        if self._closed or self._spare is not None or self._spawning:
            return
        self._spawning += 1
        token = trio.lowlevel.current_trio_token()
        env = dict(os.environ)  # a snapshot: Setenv may change os.environ meanwhile
        idle = self._idle

        def spawn() -> _Zygote | None:
            try:
                return _Zygote.spawn(python, env, idle)
            except OSError as exc:
                log.warning("cannot start an exec zygote: %s", exc)
                return None

        def deliver(result: outcome.Outcome[_Zygote | None]) -> None:  # in the worker thread
            try:
                zygote = result.unwrap()
            except BaseException:
                log.exception("cannot start an exec zygote")
                zygote = None
            try:
                token.run_sync_soon(self._arrived, zygote)
            except trio.RunFinishedError:
                if isinstance(zygote, _Zygote):
                    zygote.discard()

        trio.lowlevel.start_thread_soon(spawn, deliver)

    def _arrived(self, zygote: _Zygote | None) -> None:
        self._spawning -= 1
        self._spawned.set()
        self._spawned = trio.Event()
        if zygote is None:
            return
        if self._closed or self._spare is not None:
            zygote.discard()
            return
        self._spare = zygote

    async def aclose(self) -> None:
        """Kill the waiting zygote (and any still being spawned) and close their fds.

        Returns once they are dead (zombies for the reaper), or after :data:`CLOSE_GRACE`
        seconds. Shielded: safe to await from a cancelled scope. Idempotent; launches after
        this spawn fresh helpers only.
        """
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
            while self._spawning:
                await self._spawned.wait()
            spare, self._spare = self._spare, None
            if spare is not None:
                spare.kill()
                try:
                    await spare.wait_dead()
                finally:
                    spare.discard()
