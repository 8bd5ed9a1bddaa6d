"""runc mode: a container init started by an external OCI runtime (``ociRuntimePath``).

vminitd's experimental path (docs/protocol.md §4.14, ``compat.md`` "ociRuntimePath"): when
CreateProcess names an OCI runtime that exists in the VM, the container's init is started
by it instead of the exec helper::

    runc --root /run/runc --log <bundle>/runc.log create --pid-file <bundle>/runc-pid
         [--console-socket <bundle>/console.sock] --bundle <bundle> <id>
    runc --root /run/runc start <id>
    runc --root /run/runc delete --force <id>          (DeleteProcess, agent shutdown)

:class:`RuncBackend` has the shape of a :class:`~trinit.nursery.ProcessBackend`, so the
container's :class:`~trinit.nursery.ManagedProcess` supervises a runc-started init exactly as
one started by the helper: same stdio pumps, same lifecycle, same reaper.

The single-reaper invariant. Every runc invocation is a child of trinit, spawned with
``posix_spawn``; its exit status comes from trinit's reaper (the runc pid is registered
right after the spawn; a status that arrives first is kept by the reaper). runc waits only
for its *own* children (its nsexec stages), never for trinit's. ``runc create`` leaves the
container init running (blocked until ``start``) and exits: the init is re-parented to
trinit (PID 1 or child subreaper). Its pid, read from the pid file, is handed to ``on_pid``
(the reaper registration) *before* ``runc start`` lets it run, so its exit is never lost.

Stdio: the container process's stdio pipes are runc's fds 0-2 during ``create``, which runc
passes through to the init (non-terminal mode). With a terminal, runc sends the PTY master
over the console socket (SCM_RIGHTS) during ``create``; it is then handled like the
helper's master. ``start`` and ``delete`` get /dev/null; runc's own log goes to
``<bundle>/runc.log`` (JSON lines), whose last ``error`` entry is the failure text.

Signals go straight to the supervised pid with kill(2) (what ``runc kill <id> <sig>`` does
for the init, without an extra process and without a window where the pid is stale: the
reaper marks it reaped before anything can signal it again).
"""

from __future__ import annotations

import array
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from trinit import errors
from trinit._mountinfo import read_mounts

from ._backend import Launched
from ._reaper import Reaper

log = logging.getLogger("trinit.runc")

RUNC_ROOT = "/run/runc"
"""runc's state directory (vminitd's choice); on the VM's tmpfs /run."""

CONSOLE_GRACE = 5.0
"""Seconds to take the PTY master after ``runc create`` succeeded (it was sent before)."""

_SKIP_SIGNALS = (signal.SIGKILL, signal.SIGSTOP)
_DEFAULT_SIGNALS = [s for s in signal.valid_signals() if s not in _SKIP_SIGNALS]


def spawn(argv: Sequence[str], stdio: tuple[int, int, int]) -> int:
    """``posix_spawn`` ``argv`` with ``stdio`` as its fds 0-2 (borrowed), default signal
    dispositions, an empty mask and trinit's environment. Blocking: call from a thread."""
    temporaries: list[int] = []
    try:
        actions = []
        for target, source in enumerate(stdio):
            if source < 3:  # would be clobbered by an earlier dup2: move it out of the way
                source = os.dup(source)
                temporaries.append(source)
                os.set_inheritable(source, False)
            actions.append((os.POSIX_SPAWN_DUP2, source, target))
        return os.posix_spawn(
            argv[0],
            list(argv),
            dict(os.environ),
            file_actions=actions,
            setsigdef=_DEFAULT_SIGNALS,
            setsigmask=(),
        )
    finally:
        for fd in temporaries:
            os.close(fd)


def runc_spec(spec: dict[str, Any], cgroup_dir: str | None) -> dict[str, Any]:
    """The bundle's ``config.json`` for runc: ``spec`` with ``linux.cgroupsPath`` pointing at
    the cgroup trinit created for the container (``cgroup_dir``), relative to the cgroup2
    mount it lies on, which is how runc reads the path. In the VM (cgroup root =
    /sys/fs/cgroup) this is the path unchanged; under another ``--cgroup-root`` (tests) it
    keeps runc inside the agent's cgroup subtree. Every other key is kept as is."""
    if cgroup_dir is None:
        return spec
    mount = _cgroup2_mount(cgroup_dir)
    if mount is None:
        return spec
    altered = dict(spec)
    altered["linux"] = dict(spec.get("linux") or {})
    altered["linux"]["cgroupsPath"] = "/" + os.path.relpath(cgroup_dir, mount)
    return altered


def _cgroup2_mount(path: str) -> str | None:
    """The deepest cgroup2 mount point that contains ``path``."""
    best = None
    for mount in read_mounts():
        if mount.fstype != "cgroup2":
            continue
        point = mount.mount_point
        if (path == point or path.startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) > len(best)
        ):
            best = point
    return best


def last_error(log_path: Path) -> str:
    """The last ``error`` (or ``fatal``) message of runc's JSON log, or ''."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", "")).strip()
    return ""


class RuncBackend:
    """Starts one container's init through an OCI runtime; see the module docstring."""

    def __init__(self, runtime: str, container_id: str, bundle: Path, reaper: Reaper) -> None:
        self.runtime = runtime
        self.container_id = container_id
        self.bundle = bundle
        self._reaper = reaper
        self._log = bundle / "runc.log"
        self._created = False
        self._cgroups_path = ""

    def bundle_spec(self, spec: dict[str, Any], cgroup_dir: str | None) -> dict[str, Any]:
        """:func:`runc_spec`, remembering the cgroups path runc will use (for clean-up)."""
        altered = runc_spec(spec, cgroup_dir)
        self._cgroups_path = str((altered.get("linux") or {}).get("cgroupsPath") or "")
        return altered

    def _argv(self, *args: str) -> list[str]:
        return [self.runtime, "--root", RUNC_ROOT, "--log", str(self._log),
                "--log-format", "json", *args]  # fmt: skip

    async def _run(self, argv: list[str], stdio: tuple[int, int, int] | None = None) -> None:
        """Run one runc command to its end; its status comes from the reaper."""
        null = -1
        if stdio is None:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            stdio = (null, null, null)
        try:
            pid = await trio.to_thread.run_sync(spawn, argv, stdio)
        finally:
            if null >= 0:
                os.close(null)
        watch = self._reaper.register(pid)  # a status already reaped is handed over here
        with trio.CancelScope(shield=True):  # never leave a runc running unobserved
            status = await watch.wait()
        if status.exit_code != 0:
            reason = last_error(self._log) or f"exit status {status.exit_code}"
            raise errors.Internal(f"runc {argv[7]}: {reason}")

    async def launch(
        self,
        helper_args: Sequence[str],
        *,
        stdio: tuple[int, int, int],
        terminal: bool,
        on_pid: Callable[[int], None],
        on_console: Callable[[int], None] | None = None,
    ) -> Launched:
        """``create`` (with the process's stdio), register the init's pid, ``start``.

        ``helper_args`` (the exec helper's command) are not used. ``on_pid`` gets the pid of
        ``runc create`` (the helper's role: its status is of no interest to the caller)
        and then the container init's pid, before ``start``.
        """
        pid_file = self.bundle / "runc-pid"
        create = ["create", "--pid-file", str(pid_file)]
        master: int | None = None
        received: list[int] = []
        self._created = True  # from here on, delete --force cleans up whatever runc left
        async with trio.open_nursery() as nursery:
            console: trio.socket.SocketType | None = None
            receiving = trio.CancelScope()
            if terminal:
                console, path = await self._console_socket()
                create += ["--console-socket", path]
                nursery.start_soon(self._receive_master, console, received, receiving)
            try:
                await self._create(create, stdio, on_pid)
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            finally:
                # a successful create has sent the master: give the receiver time to take it
                receiving.deadline = trio.current_time() + CONSOLE_GRACE
        if console is not None:
            console.close()
        if terminal:
            if not received:
                raise errors.Internal("runc create: no console received")
            master = received[0]
        try:
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError) as exc:
                raise errors.Internal(f"runc create: no pid in {pid_file}: {exc}") from None
            on_pid(pid)
            if master is not None and on_console is not None:
                on_console(master)
            await self._run(self._argv("start", self.container_id))
        except BaseException:
            if master is not None:
                os.close(master)
            raise
        return Launched(pid, master)

    async def _create(
        self, create: list[str], stdio: tuple[int, int, int], on_pid: Callable[[int], None]
    ) -> None:
        argv = self._argv(*create, "--bundle", str(self.bundle), self.container_id)
        pid = await trio.to_thread.run_sync(spawn, argv, stdio)
        watch = self._reaper.register(pid)  # first: it may take a status reaped already
        on_pid(pid)
        with trio.CancelScope(shield=True):
            status = await watch.wait()
        if status.exit_code != 0:
            reason = last_error(self._log) or f"exit status {status.exit_code}"
            raise errors.Internal(f"runc create: {reason}")

    async def _console_socket(self) -> tuple[trio.socket.SocketType, str]:
        path = str(self.bundle / "console.sock")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(path)
            sock.listen(1)
        except BaseException:
            sock.close()
            raise
        return sock, path

    async def _receive_master(
        self, listener: trio.socket.SocketType, out: list[int], scope: trio.CancelScope
    ) -> None:
        """Accept runc's connection and take the PTY master it sends (SCM_RIGHTS)."""
        with scope:
            conn, _ = await listener.accept()
        if scope.cancelled_caught:
            return
        with conn, trio.move_on_after(CONSOLE_GRACE):
            fds = array.array("i")
            _, ancillary, _, _ = await conn.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            for fd in fds:
                os.set_inheritable(fd, False)
            out.extend(fds[:1])
            for fd in fds[1:]:
                os.close(fd)

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    async def delete(self) -> None:
        """``runc delete --force``: runc's state (and its cgroup) for this container. Logged,
        not raised: trinit has already killed and reaped the init and removes the cgroup.

        Runs after the bundle is gone (so no ``--log`` there): runc's error text is read from
        its stderr, a pipe."""
        if not self._created:
            return
        self._created = False
        argv = [self.runtime, "--root", RUNC_ROOT, "delete", "--force", self.container_id]
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                pid = await trio.to_thread.run_sync(spawn, argv, (null, write_end, write_end))
            finally:
                os.close(write_end)
                os.close(null)
            watch = self._reaper.register(pid)
            with trio.CancelScope(shield=True):
                status = await watch.wait()
            os.set_blocking(read_end, False)
            try:
                text = os.read(read_end, 4096).decode(errors="replace").strip()
            except BlockingIOError:
                text = ""
        finally:
            os.close(read_end)
        if status.exit_code != 0:
            reason = text.splitlines()[-1] if text else f"exit status {status.exit_code}"
            log.warning(f"runc delete {self.container_id}: {reason}")
        if self._cgroups_path:
            await trio.to_thread.run_sync(remove_v1_leftovers, self._cgroups_path)


def remove_v1_leftovers(cgroups_path: str, mounts: list[str] | None = None) -> None:
    """rmdir what runc made of ``cgroups_path`` on cgroup *v1* hierarchies, deepest first.

    On a hybrid host (cgroup2 only at /sys/fs/cgroup/unified: development machines, never
    the VM) runc creates the path on every v1 hierarchy too, parents included, and its
    ``delete`` removes only the leaf. rmdir removes a cgroup only when it has neither
    processes nor children, so a parent another container still uses stays; the first
    directory that cannot be removed ends the walk for that hierarchy.
    """
    parts = [part for part in cgroups_path.split("/") if part and part not in (".", "..")]
    if mounts is None:
        mounts = [m.mount_point for m in read_mounts() if m.fstype == "cgroup"]
    for mount in mounts:
        for depth in range(len(parts), 0, -1):
            try:
                os.rmdir(os.path.join(mount, *parts[:depth]))
            except FileNotFoundError:
                continue
            except OSError:
                break
