"""PID-1 duties: the boot checklist, the late boot stage, and power-off (docs/protocol.md §8.2).

Read :func:`run_as_pid1` top to bottom, like tini's ``main``: it is the whole life of trinit
as the VM's init.

1. ``prepare`` (synchronous, before trio starts, everything fatal):
   mount /proc if absent; when / is the initramfs itself, bind-mount it over itself (see
   :func:`make_root_pivotable`: containers could not pivot_root otherwise); mount devtmpfs
   on /dev if the kernel did not (Debian's kernel is built without DEVTMPFS_MOUNT) and make
   sure fds 0-2 are the console; RLIMIT_NOFILE soft and
   hard to ``fs.nr_open``; ignore SIGPIPE (and SIGINT until the agent listens for it);
   ctrl-alt-del becomes a SIGINT to PID 1 (``reboot(RB_DISABLE_CAD)``);
   oom_score_adj -1000 (the OOM killer takes PID 1 last: its death is the VM's);
   tmpfs /run, sysfs /sys, cgroup2 /sys/fs/cgroup with ``nsdelegate`` (targets created
   0755, other already-mounted targets left alone; an existing cgroup2 is remounted with
   ``nsdelegate``); load the kernel modules the API needs (vsock) from the initfs' list;
   create trinit's own cgroup (memory.high 80 MiB, memory.low 50 MiB) and move in.
2. The agent (``trinit._agent.run_agent``) listens on vsock port 1024 and serves. As soon as
   it serves it calls :meth:`Boot.on_serving`, which starts the late stage in the agent's
   root nursery: the remaining kernel modules, binfmt_misc if one of them provided it, the
   memory monitor of the own cgroup. Then it builds its reaper (trinit is the reaper of
   every orphan in the VM simply by being PID 1) and container registry (``trinit._owners``:
   when an RPC first needs them, or shortly after serving).
   Slow or optional work therefore never delays the first RPC.
3. When the agent returns (SIGTERM or SIGINT, e.g. ctrl-alt-del: containers are deleted and
   the disks synced by the agent), sync once more and ``reboot(RB_POWER_OFF)``. PID 1 never
   simply exits while things are fine: exiting panics the kernel.

Failures (:func:`die`): a failing boot step is logged (with traceback) to the console, the
disks are synced, a last line ``trinit: fatal: <reason>; powering off`` is written and the VM
powers off; only if the kernel refuses the power-off does PID 1 exit (a panic). A crash of the
agent itself takes the same path (vminitd exits there, which panics, docs/protocol.md §8.2
step 9; we power off so the VMM sees a clean stop and the console says why). RPC errors
never get here: the RPC layer turns them into statuses.

Every stage logs a timeline line with the uptime (CLOCK_BOOTTIME, seconds since the kernel
started), e.g. ``boot: stage=serving uptime=1.234``; the launcher's first instruction is
passed in ``TRINIT_LAUNCHED_AT`` so the interpreter start-up is on the timeline too.

This module imports only the standard library and ``trinit._linux`` (itself stdlib-only) at
import time, so the launcher can reach the mounts before the heavier imports (trio,
protobuf, the HTTP/2 server) happen.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from trinit import _linux as linux
from trinit._linux import (
    MNT_DETACH,
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RELATIME,
    MS_REMOUNT,
    RB_POWER_OFF,
)

if TYPE_CHECKING:
    import trio

    from trinit._agent import AgentConfig

log = logging.getLogger("trinit.pid1")

MODULE_LIST = "/etc/trinit/modules"
"""Kernel modules to load, one ``early|late <path>`` per line, written by the initfs builder."""

LAUNCHED_AT_ENV = "TRINIT_LAUNCHED_AT"

PID1_OOM_SCORE_ADJ = -1000
"""OOM_SCORE_ADJ_MIN: the OOM killer never picks PID 1 (killing it would kill the VM)."""
CGROUP2_OPTIONS = "nsdelegate"
"""A cgroup namespace root's interface files (memory.max, cpu.max...) are then read-only
from inside that namespace: a container cannot lift the limits the host gave it."""


# ---------------------------------------------------------------------- the timeline
def uptime() -> float:
    """Seconds since the kernel started (CLOCK_BOOTTIME; works before /proc is mounted)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class Timeline:
    """The boot stages reached so far, each logged as it happens."""

    stages: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, stage: str, at: float | None = None) -> None:
        when = uptime() if at is None else at
        self.stages.append((stage, when))
        log.info(f"boot: stage={stage} uptime={when:.3f}")


# -------------------------------------------------------------------- the checklist
@dataclass
class Boot:
    """The state of one PID-1 boot; created by :func:`run_as_pid1`."""

    cgroup_root: str = "/sys/fs/cgroup"
    module_list: str = MODULE_LIST
    timeline: Timeline = field(default_factory=Timeline)
    own_cgroup: str | None = None

    def prepare(self) -> None:
        """Steps 1-7 of docs/protocol.md §8.2, synchronously. Raises on the first failing step."""
        launched = os.environ.pop(LAUNCHED_AT_ENV, None)
        log.info(f"trinit booting (python {sys.version.split()[0]}, pid {os.getpid()})")
        if launched is not None:
            self.timeline.mark("launcher", float(launched))
        self.timeline.mark("imports done")  # interpreter start-up and trio, protobuf, trinit.rpc
        if not os.path.exists("/proc/self/stat"):
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if root_is_initramfs():
            umount("/proc")
            make_root_pivotable()
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if "/dev" not in mount_points():
            os.makedirs("/dev", mode=0o755, exist_ok=True)
            mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755")
        ensure_console()
        set_oom_score_adj(PID1_OOM_SCORE_ADJ)
        raise_nofile_limit()
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Until the agent listens for SIGINT (ctrl-alt-del), a KeyboardInterrupt would kill
        # PID 1; the kernel does not deliver it to init while it is ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        disable_ctrl_alt_del()
        mounted = mount_points()
        for source, target, fstype, flags, data in (
            ("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, None),
            ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
            ("none", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC,
             CGROUP2_OPTIONS),
        ):  # fmt: skip
            if target not in mounted:
                os.makedirs(target, mode=0o755, exist_ok=True)
                mount(source, target, fstype, flags | MS_RELATIME, data)
            elif data is not None and mounted[target] == fstype:
                # Remounting reconfigures the superblock: options not given are cleared.
                mount(source, target, fstype, MS_REMOUNT | flags | MS_RELATIME, data)
        self.timeline.mark("mounts")
        loaded = load_modules(self._modules("early"))
        self.timeline.mark(f"early modules ({loaded})")
        self.early_binfmt_misc()
        from trinit.cgroup import CgroupManager, setup_own_cgroup

        self.own_cgroup = setup_own_cgroup(CgroupManager(self.cgroup_root))
        self.timeline.mark("own cgroup")

    def early_binfmt_misc(self, mount: Callable[[], None] | None = None) -> None:
        """Mount binfmt_misc before the API listens, so SetupEmulator as the host's first call
        finds it (vminitd mounts it in the same boot step). Optional: a failure is logged."""
        try:
            (mount_binfmt_misc if mount is None else mount)()
        except OSError as exc:
            log.warning(f"boot: binfmt_misc: {exc}")

    def on_serving(self, root: trio.Nursery) -> None:
        """Called by the agent once the API listens: start the late stage in its nursery."""
        self.timeline.mark("serving")
        root.start_soon(self._late_stage)

    async def _late_stage(self) -> None:
        """Optional modules, binfmt_misc, then the memory monitor (until cancelled).

        Failures here are logged and do not stop the agent: nothing the host needs to reach
        the API depends on them. Cancellation (shutdown) stops the monitor and closes its fd.
        """
        import trio

        from trinit.cgroup import MemoryMonitor

        try:
            loaded = await trio.to_thread.run_sync(load_modules, self._modules("late"))
            await trio.to_thread.run_sync(mount_binfmt_misc)
            self.timeline.mark(f"boot complete (late modules {loaded})")
        except OSError as exc:
            log.warning(f"boot: late stage: {exc}")
        if self.own_cgroup is not None:
            await MemoryMonitor().run(os.path.join(self.own_cgroup, "memory.events"))

    def _modules(self, stage: str) -> list[str]:
        try:
            with open(self.module_list, encoding="utf-8") as file:
                lines = [line.split(maxsplit=1) for line in file if line.strip()]
        except FileNotFoundError:
            return []
        return [path.strip() for when, path in lines if when == stage]


def run_as_pid1(config: AgentConfig) -> NoReturn:
    """The life of PID 1: prepare, serve until told to stop, power off. Never returns."""
    import dataclasses

    import trio

    from trinit._agent import run_agent

    boot = Boot(cgroup_root=config.cgroup_root)
    try:
        boot.prepare()
    except BaseException:
        die("boot failed")
    try:
        trio.run(run_agent, dataclasses.replace(config, vm_init=True), boot.on_serving)
    except BaseException:
        die("the agent crashed")
    power_off()


def die(what: str) -> NoReturn:
    """PID 1 cannot go on: say why on the console, sync, and power the VM off.

    Exiting instead would panic the kernel, and the VMM would see a crash with the reason
    buried above the panic text; a power-off is a clean stop whose last console line is
    ``trinit: fatal: <what>: <error>; powering off``. Only if the kernel refuses the
    power-off does PID 1 exit (status 1, a panic) rather than hang.
    """
    text = traceback.format_exc()
    last = text.strip().splitlines()[-1] if sys.exc_info()[0] is not None else ""
    reason = f"{what}: {last}" if last else what
    try:
        log.critical(reason)
        flush_log()  # what is queued for the console goes before the lines below
    finally:
        # The console formatter hides tracebacks above debug level; a dying PID 1 shows it.
        if last:
            _console(f"trinit: {what}\n{text}")
        os.sync()
        _console(f"trinit: fatal: {reason}; powering off\n")
        try:
            linux.reboot(RB_POWER_OFF)
        except OSError as exc:
            _console(f"trinit: reboot(RB_POWER_OFF): {exc.strerror}\n")
        os._exit(1)


def flush_log() -> None:
    """Wait (bounded) until the log lines queued for the console are written: the log
    handler writes from a thread (``trinit._logwriter``), and a power-off would lose them."""
    for handler in logging.getLogger("trinit").handlers:
        try:
            handler.flush()
        except Exception:
            pass


def _console(text: str) -> None:
    try:
        os.write(2, text.encode(errors="replace"))
    except OSError:
        pass


def power_off() -> NoReturn:
    """Sync and power the VM off; if the kernel refuses, exit (a panic) rather than hang."""
    log.info(f"powering off (uptime {uptime():.3f})")
    flush_log()
    os.sync()
    try:
        linux.reboot(RB_POWER_OFF)
    except OSError as exc:
        log.critical(f"reboot(RB_POWER_OFF): {exc.strerror}")
        flush_log()
    os._exit(0)


# ----------------------------------------------------------------------- the syscalls
def mount(source: str, target: str, fstype: str, flags: int = 0, data: str | None = None) -> None:
    """mount(2); raises OSError naming the target."""
    try:
        linux.mount(source, target, fstype or None, flags, data)
    except OSError as exc:
        raise OSError(exc.errno, f"mount {fstype} on {target}: {exc.strerror}") from None


def mount_binfmt_misc(target: str = "/proc/sys/fs/binfmt_misc") -> None:
    """Mount binfmt_misc if the kernel offers it (built in, or its module is loaded)."""
    if os.path.isdir(target) and target not in mount_points():
        mount("binfmt_misc", target, "binfmt_misc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def umount(target: str) -> None:
    try:
        linux.umount2(target, MNT_DETACH)
    except OSError as exc:
        raise OSError(exc.errno, f"umount {target}: {exc.strerror}") from None


def root_is_initramfs() -> bool:
    """True when / is the kernel's rootfs (an initramfs nobody switched away from)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                head, _, tail = line.partition(" - ")
                if head.split()[4] == "/":
                    return tail.split()[0] == "rootfs"
    except OSError:
        pass
    return False


def make_root_pivotable(scratch: str = "/.trinit-root") -> None:
    """Put a bind mount of the initramfs over / and chroot into it, without copying a byte.

    pivot_root(2) refuses to move a root that has no parent mount (EINVAL), and the
    initramfs is the one mount that has none, so the exec helper could not pivot_root into
    a container. A bind mount of / moved onto / has the initramfs as its parent: after the
    chroot, mounts made from here on (and every container's pivot_root) work as on a disk
    root. Processes started earlier keep the old root.
    """
    os.makedirs(scratch, exist_ok=True)
    mount("/", scratch, "", MS_BIND)
    os.chdir(scratch)
    mount(".", "/", "", MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    os.rmdir(scratch)


def mount_points() -> dict[str, str]:
    """Mount point -> filesystem type (of the last mount there) in this mount namespace;
    empty before /proc is mounted."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as file:
            return {f[1]: f[2] for f in (line.split() for line in file) if len(f) > 2}
    except FileNotFoundError:
        return {}


def disable_ctrl_alt_del() -> None:
    """Have the kernel send SIGINT to PID 1 on ctrl-alt-del (``reboot(RB_DISABLE_CAD)``):
    the agent then deletes the containers and syncs before powering off. Left enabled,
    the kernel restarts the VM at once, without a sync. Best effort: logged if refused."""
    try:
        linux.reboot(linux.RB_DISABLE_CAD)
    except OSError as exc:
        log.warning(f"cannot hand ctrl-alt-del to PID 1: {exc.strerror}")


def set_oom_score_adj(value: int, path: str = "/proc/self/oom_score_adj") -> None:
    """Write our oom_score_adj (children inherit it: the exec helper sets each container
    process's own value before execve)."""
    with open(path, "w", encoding="ascii") as file:
        file.write(str(value))


def ensure_console() -> None:
    """Make fds 0, 1 and 2 valid: the kernel leaves them closed if /dev/console was missing.

    Python then started with ``sys.stderr`` None; it and the log handlers are re-pointed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            console = os.open("/dev/console", os.O_RDWR | os.O_NOCTTY)
            if console != fd:
                os.dup2(console, fd)
                os.close(console)
    if sys.stderr is None:
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        for handler in logging.getLogger("trinit").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is None:
                handler.setStream(sys.stderr)
    if sys.stdout is None:
        sys.stdout = open(1, "w", buffering=1, closefd=False)


def raise_nofile_limit(nr_open_path: str = "/proc/sys/fs/nr_open") -> int:
    """Set RLIMIT_NOFILE soft and hard to ``fs.nr_open``; returns the value."""
    with open(nr_open_path, encoding="ascii") as file:
        limit = int(file.read().strip())
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return limit


def load_modules(paths: Iterable[str], loader: Callable[[str], None] | None = None) -> int:
    """Load kernel modules in order with finit_module(2); already loaded ones are skipped.

    Returns how many were newly loaded. Raises OSError for any other failure (e.g. a module
    built for a different kernel), naming the module. Blocking: the early stage calls it
    before trio runs, the late stage from a worker thread.
    """
    load = finit_module if loader is None else loader
    count = 0
    for path in paths:
        try:
            load(path)
        except FileExistsError:
            continue
        count += 1
    return count


def finit_module(path: str) -> None:
    """finit_module(fd, "", 0) on ``path``; FileExistsError if the module is loaded."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.finit_module(fd)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"{path}: already loaded") from None
    except OSError as exc:
        raise OSError(exc.errno, f"finit_module {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
