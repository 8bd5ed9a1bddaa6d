"""The one layer for the Linux calls Python 3.11 lacks: ctypes over the C library.

Every raw call trinit makes goes through here (boot as PID 1, ``trinit init``, the exec
helper, the agent, the system RPCs), so each is written once, with one error convention:
failure raises :class:`OSError` with the errno, exactly like an ``os`` function.

Why one module, and why it stays this small:
* The exec helper imports it before pivot_root and must start fast, so this module imports
  ``ctypes``, ``errno`` and ``os`` only (not even ``typing``), never trio or another trinit
  module except ``trinit._arch`` (pure data, no imports of its own), and imports everything
  at load time (after pivot_root no file of the interpreter is reachable for a lazy import).
* glibc's wrapper is used wherever glibc 2.36 has one (it is the ABI we can rely on across
  architectures). Only calls without a usable wrapper go through ``syscall(2)`` with a number
  from :data:`SYSCALL_NUMBERS` (built from the per-architecture table in ``trinit._arch``),
  keyed by the machine name ``platform.machine()`` reports (read here from ``os.uname()``,
  which is where ``platform`` gets it: importing ``platform`` would cost the helper ~9 ms).
  An architecture missing from the table fails that call, not the import, with
  :class:`UnsupportedArchitecture`.
* Every integer goes to C as an explicitly sized ctypes value: ``syscall`` and ``prctl``
  are variadic, where a Python int would be passed as a C ``int`` and truncated.

Invariant: nothing here keeps state except the loaded libc handle and the kernel's machine
name; every function is safe to call after ``fork()``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

from trinit._arch import ARCHES

TYPE_CHECKING = False  # typing costs the exec helper ~12 ms of imports
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

SYSCALL_NUMBERS: dict[str, dict[str, int]] = {name: a.syscalls for name, a in ARCHES.items()}
"""``machine -> name -> number`` for the calls made through ``syscall(2)``: glibc 2.36 has no
wrapper for ``openat2`` and ``finit_module``, and its ``sigaction`` refuses glibc's own
signals 32 and 33. Checked against the kernel's headers by ``tests/test_linux.py``."""

# Namespaces (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_PARENT = 0x00008000
CLONE_INTO_CGROUP = 0x200000000  # clone3 only

# mount(2) flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MS_PROPAGATION = MS_SHARED | MS_SLAVE | MS_UNBINDABLE | MS_PRIVATE

# umount2(2)
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# openat2(2) resolve flags (linux/openat2.h)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# capabilities (linux/capability.h)
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# reboot(2) (linux/reboot.h)
RB_POWER_OFF = 0x4321FEDC
RB_DISABLE_CAD = 0  # ctrl-alt-del sends SIGINT to PID 1 instead of restarting at once

# inotify(7) (linux/inotify.h; the flags are O_NONBLOCK and O_CLOEXEC)
IN_MODIFY = 0x00000002
IN_IGNORED = 0x00008000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# tty ioctls (same values on x86_64 and aarch64)
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414

# close_range(2)
CLOSE_RANGE_CLOEXEC = 1 << 2

# open_tree(2), move_mount(2), mount_setattr(2) (linux/mount.h, linux/fcntl.h)
OPEN_TREE_CLONE = 1
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x00100000

# statfs magic of cgroup2
CGROUP2_SUPER_MAGIC = 0x63677270


class UnsupportedArchitecture(OSError):
    """This machine has no entry in :data:`SYSCALL_NUMBERS` for a call (errno ENOSYS)."""


_MACHINE = os.uname().machine


def machine() -> str:
    """The running kernel's machine name, as ``platform.machine()`` reports it.

    Read once at import (it cannot change while the kernel runs): every raw syscall looks
    its number up by it, ~100 times per container start."""
    return _MACHINE


def syscall_number(name: str, arch: str | None = None) -> int:
    """The number of syscall ``name`` on ``arch`` (default: this machine)."""
    arch = machine() if arch is None else arch
    try:
        return SYSCALL_NUMBERS[arch][name]
    except KeyError:
        message = f"no syscall number for {name} on {arch} (known: {', '.join(SYSCALL_NUMBERS)})"
        raise UnsupportedArchitecture(errno.ENOSYS, message) from None


def _check(result: int) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _function(name: str) -> Callable[..., Any]:
    """libc's ``name``; a libc without it fails the call with ENOSYS, like an old kernel."""
    try:
        return getattr(_libc, name)  # type: ignore[no-any-return]
    except AttributeError:
        raise OSError(errno.ENOSYS, f"the C library has no {name}()") from None


def _call(name: str, *args: object) -> int:
    """libc's wrapper ``name(*args)``; its -1 becomes OSError."""
    return _check(int(_function(name)(*args)))


def _syscall(name: str, *args: object) -> int:
    """``syscall(number of name, *args)``; -1 becomes OSError."""
    number = syscall_number(name)
    return _check(int(_libc.syscall(ctypes.c_long(number), *args)))


def _path(value: str | bytes | None) -> bytes | None:
    if value is None:
        return None
    return os.fsencode(value)


# ------------------------------------------------------------------------- processes
def fstatfs_type(fd: int) -> int:
    """``f_type`` of ``fstatfs(fd)``: the file system's magic number (e.g.
    :data:`CGROUP2_SUPER_MAGIC`). ``struct statfs`` starts with it as a long on 64-bit
    Linux (x86_64, aarch64)."""
    buffer = ctypes.create_string_buffer(256)  # sizeof(struct statfs) is 120 there
    _call("fstatfs", ctypes.c_int(fd), buffer)
    return int.from_bytes(buffer.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder)


_SIGCHLD = 17  # the same on x86_64 and aarch64 (no import of signal: the helper avoids it)


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` (linux/sched.h), up to ``cgroup`` (CLONE_ARGS_SIZE_VER2, 88)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
            "stack_size", "tls", "set_tid", "set_tid_size", "cgroup",
        )
    ]  # fmt: skip


def _clone3_fork(flags: int, exit_signal: int, cgroup: int = 0) -> int:
    """``clone3`` with fork semantics (no new stack, no shared memory): 0 in the child.

    Only for a single-threaded caller whose child runs no code that relies on glibc's
    per-thread state being the child's: this is a raw system call, so glibc's fork
    handlers do not run and its cached thread id is the parent's (``raise()`` and
    ``pthread_kill`` would misfire; plain system calls, ``os.*``, ``os.fork`` and
    ``execve`` are fine). CPython's own after-fork bookkeeping is skipped too, which is
    sound only because no other thread exists and no lock is held across the call.
    """
    args = _CloneArgs(flags=flags, exit_signal=exit_signal, cgroup=cgroup)
    return _syscall("clone3", ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))


def fork_into_cgroup(cgroup_fd: int) -> int:
    """``fork()`` whose child is born in the cgroup2 directory ``cgroup_fd``: ``clone3``
    with ``CLONE_INTO_CGROUP``. Returns 0 in the child and its pid in the parent.

    Why: moving a process by writing ``cgroup.procs`` takes the cgroup core's threadgroup
    lock for writing, which waits for an RCU grace period (~10 ms here) whenever the lock
    was idle for a while, i.e. on every container start. A child born in its cgroup needs
    no move. The kernel checks the caller's permission to write that cgroup's
    ``cgroup.procs``, as for a write. The caller's constraints are :func:`_clone3_fork`'s.

    Raises OSError (ENOSYS before Linux 5.7, EBADF/EINVAL for a directory that is not
    cgroup2, EACCES/EPERM when refused) without a child running; the caller then forks and
    writes ``cgroup.procs``.
    """
    return _clone3_fork(CLONE_INTO_CGROUP, _SIGCHLD, cgroup_fd)


def fork_sibling(cgroup_fd: int | None = None) -> int:
    """``fork()`` whose child is the caller's *sibling*: ``clone3`` with ``CLONE_PARENT``,
    so the child's parent (who reaps it and gets its SIGCHLD) is the caller's parent.
    With ``cgroup_fd`` (a cgroup2 directory) the child is also born in that cgroup
    (``CLONE_INTO_CGROUP``, see :func:`fork_into_cgroup`). Returns 0 in the child and its
    pid in the parent.

    Why: the exec fork server's helpers must be trinit's children, like a helper trinit
    spawns itself; a double fork gets there too, at the cost of a second copy of the
    server's page tables and an exit per helper. The caller's constraints are
    :func:`_clone3_fork`'s. Raises OSError (ENOSYS before Linux 5.3, or 5.7 with a cgroup;
    EINVAL when the caller is the init of a PID namespace; a cgroup's refusal as for
    :func:`fork_into_cgroup`) without a child running.
    """
    if cgroup_fd is None:
        return _clone3_fork(CLONE_PARENT, 0)  # the kernel requires exit_signal 0 here
    return _clone3_fork(CLONE_PARENT | CLONE_INTO_CGROUP, 0, cgroup_fd)


# ------------------------------------------------------------------------ namespaces
def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (``unshare(2)``)."""
    _call("unshare", ctypes.c_int(flags))


def setns(fd: int, nstype: int) -> None:
    """Join the namespace(s) of ``fd`` (a /proc/*/ns file or a pidfd)."""
    _call("setns", ctypes.c_int(fd), ctypes.c_int(nstype))


# ---------------------------------------------------------------------------- mounts
def mount(
    source: str | bytes | None,
    target: str | bytes,
    fstype: str | bytes | None,
    flags: int,
    data: str | bytes | None,
) -> None:
    """``mount(2)``; ``None`` strings become NULL pointers."""
    _call(
        "mount",
        ctypes.c_char_p(_path(source)),
        ctypes.c_char_p(_path(target)),
        ctypes.c_char_p(_path(fstype)),
        ctypes.c_ulong(flags),
        ctypes.c_char_p(_path(data)),
    )


def umount2(target: str | bytes, flags: int) -> None:
    """``umount2(2)``."""
    _call("umount2", ctypes.c_char_p(_path(target)), ctypes.c_int(flags))


def pivot_root(new_root: str | bytes, put_old: str | bytes) -> None:
    """``pivot_root(2)`` (glibc exports it without declaring it in a header)."""
    _call("pivot_root", ctypes.c_char_p(_path(new_root)), ctypes.c_char_p(_path(put_old)))


# ------------------------------------------------------------------------ files, fds
class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def openat2(dirfd: int, path: str | bytes, flags: int, mode: int, resolve: int) -> int:
    """``openat2(2)``: open ``path`` relative to ``dirfd`` under the ``resolve`` rules.

    ``O_CLOEXEC`` is always added; the caller owns the returned fd.
    """
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _syscall(
        "openat2",
        ctypes.c_long(dirfd),
        ctypes.c_char_p(_path(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )


def close_range(first: int, last: int, flags: int) -> None:
    """``close_range(2)``; with CLOSE_RANGE_CLOEXEC it marks the fds instead of closing."""
    _call("close_range", ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_int(flags))


def pidfd_open(pid: int, flags: int = 0) -> int:
    """A new CLOEXEC pidfd for ``pid``; the caller owns and closes it."""
    return _call("pidfd_open", ctypes.c_int(pid), ctypes.c_uint(flags))


def pidfd_getfd(pidfd: int, targetfd: int, flags: int = 0) -> int:
    """Duplicate fd ``targetfd`` of the process behind ``pidfd`` into this process.

    The new fd is CLOEXEC and owned by the caller.
    """
    return _call("pidfd_getfd", ctypes.c_int(pidfd), ctypes.c_int(targetfd), ctypes.c_uint(flags))


def inotify_init1(flags: int) -> int:
    """A new inotify fd (``inotify_init1(2)``); the caller owns it."""
    return _call("inotify_init1", ctypes.c_int(flags))


def inotify_add_watch(fd: int, path: str | bytes, mask: int) -> int:
    """Watch ``path`` for the events in ``mask`` on inotify fd ``fd``; returns the watch."""
    raw = ctypes.c_char_p(_path(path))
    return _call("inotify_add_watch", ctypes.c_int(fd), raw, ctypes.c_uint32(mask))


# ---------------------------------------------------------------------- capabilities
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of ``pid`` (0 = self) as 64-bit masks."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _call("capget", ctypes.byref(header), data)
    return (
        data[0].effective | (data[1].effective << 32),
        data[0].permitted | (data[1].permitted << 32),
        data[0].inheritable | (data[1].inheritable << 32),
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's capability sets; all 64 bits of each mask are used."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    mask = 0xFFFFFFFF
    for index, shift in ((0, 0), (1, 32)):
        data[index].effective = (effective >> shift) & mask
        data[index].permitted = (permitted >> shift) & mask
        data[index].inheritable = (inheritable >> shift) & mask
    _call("capset", ctypes.byref(header), data)


# ---------------------------------------------------------------------------- prctl
def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """``prctl(2)`` with integer arguments; returns the call's result."""
    return _call(
        "prctl",
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(arg4),
        ctypes.c_ulong(arg5),
    )


def set_child_subreaper() -> None:
    """Orphaned descendants re-parent to this process instead of PID 1, so it reaps them."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


# --------------------------------------------------------------------------- signals
def reset_signal(signum: int) -> None:
    """Set ``signum``'s disposition to SIG_DFL with the raw syscall.

    glibc's sigaction refuses its internal signals 32 and 33, and its posix_spawn leaves
    them *ignored* in every child of a threaded parent; an ignored disposition survives
    execve, so the helper resets them here before exec'ing the workload. The kernel's
    ``struct sigaction`` is handler, flags, restorer, mask (4 x 8 bytes) on x86_64 and
    aarch64; all zeroes means SIG_DFL with no flags and an empty mask.
    """
    action = ctypes.create_string_buffer(32)
    _syscall("rt_sigaction", ctypes.c_long(signum), action, None, ctypes.c_size_t(8))


SFD_NONBLOCK = os.O_NONBLOCK
SFD_CLOEXEC = os.O_CLOEXEC
SIGNALFD_SIGINFO_SIZE = 128
"""``sizeof(struct signalfd_siginfo)``: each read returns whole records of this size."""


def signalfd(signums: tuple[int, ...] | list[int], flags: int) -> int:
    """A new signalfd for ``signums`` (``signalfd(2)``); the caller owns it.

    The signals must be blocked in every thread, or the kernel delivers them instead of
    queueing them for the fd. glibc's ``sigset_t`` is 1024 bits in unsigned longs, signal
    ``n`` at bit ``n - 1``.
    """
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    words = (ctypes.c_ulong * (1024 // bits))()
    for signum in signums:
        words[(signum - 1) // bits] |= 1 << ((signum - 1) % bits)
    return _call("signalfd", ctypes.c_int(-1), ctypes.byref(words), ctypes.c_int(flags))


# ----------------------------------------------------------------- the machine itself
def sethostname(name: str) -> None:
    """Set the hostname of the current UTS namespace."""
    raw = name.encode()
    _call("sethostname", ctypes.c_char_p(raw), ctypes.c_size_t(len(raw)))


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


def settimeofday(sec: int, usec: int) -> None:
    """``settimeofday(2)`` without a timezone (SetTime)."""
    _call("settimeofday", ctypes.byref(_Timeval(sec, usec)), None)


def reboot(command: int) -> None:
    """``reboot(2)``; with RB_POWER_OFF it returns only if the kernel refuses."""
    _call("reboot", ctypes.c_int(command))


def finit_module(fd: int, params: str = "", flags: int = 0) -> None:
    """Load the kernel module open on ``fd`` (``finit_module(2)``; glibc has no wrapper)."""
    raw = ctypes.c_char_p(params.encode())
    _syscall("finit_module", ctypes.c_long(fd), raw, ctypes.c_long(flags))


def setdomainname(name: str) -> None:
    """Set the NIS domain name of the current UTS namespace (the OCI ``domainname``)."""
    raw = name.encode()
    _call("setdomainname", ctypes.c_char_p(raw), ctypes.c_size_t(len(raw)))


def open_tree(dirfd: int, path: str | bytes, flags: int) -> int:
    """``open_tree(2)``; with OPEN_TREE_CLONE a detached copy of the mount at ``path``.

    ``O_CLOEXEC`` is always added; the caller owns the returned fd.
    """
    return _syscall(
        "open_tree",
        ctypes.c_long(dirfd),
        ctypes.c_char_p(_path(path)),
        ctypes.c_uint(flags | os.O_CLOEXEC),
    )


def move_mount(
    from_dirfd: int, from_path: str | bytes, to_dirfd: int, to_path: str | bytes, flags: int
) -> None:
    """``move_mount(2)``: attach (or move) a mount; ``*_EMPTY_PATH`` flags use the fds."""
    _syscall(
        "move_mount",
        ctypes.c_long(from_dirfd),
        ctypes.c_char_p(_path(from_path)),
        ctypes.c_long(to_dirfd),
        ctypes.c_char_p(_path(to_path)),
        ctypes.c_uint(flags),
    )


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_setattr(
    dirfd: int,
    path: str | bytes,
    flags: int,
    attr_set: int,
    attr_clr: int = 0,
    propagation: int = 0,
    userns_fd: int = 0,
) -> None:
    """``mount_setattr(2)`` with a version-0 ``struct mount_attr`` (32 bytes)."""
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _syscall(
        "mount_setattr",
        ctypes.c_long(dirfd),
        ctypes.c_char_p(_path(path)),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )


# ------------------------------------------------------------------------------ ptys
def unlockpt(fd: int) -> None:
    """Unlock the slave of PTY master ``fd``."""
    _call("unlockpt", ctypes.c_int(fd))


def ptsname(fd: int) -> str:
    """Path of the slave of PTY master ``fd`` (thread-safe ``ptsname_r``)."""
    buf = ctypes.create_string_buffer(128)
    err = int(_function("ptsname_r")(ctypes.c_int(fd), buf, ctypes.c_size_t(len(buf))))
    if err != 0:
        raise OSError(err, os.strerror(err))
    return os.fsdecode(buf.value)


# seccomp(2) and prctl(PR_SET_SECCOMP) (linux/seccomp.h, linux/prctl.h)
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_mode_filter(program: bytes, flags: int) -> None:
    """Install the classic-BPF ``program`` (packed ``struct sock_filter``s) on this thread.

    Without flags this is ``prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)``, which every
    seccomp kernel has; flags (TSYNC, LOG, SPEC_ALLOW) need ``seccomp(2)``. The caller needs
    no_new_privs or CAP_SYS_ADMIN; the kernel copies the program, so the buffer is free after.
    """
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if flags:
        _syscall("seccomp", ctypes.c_ulong(SECCOMP_SET_MODE_FILTER), ctypes.c_ulong(flags),
                 ctypes.byref(prog))  # fmt: skip
    else:
        _call("prctl", ctypes.c_long(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
              ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0))  # fmt: skip


# --- bpf(2): cgroup device filters (trinit.cgroup's device controller) -------------------------

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2
BPF_F_REPLACE = 4


class _BpfProgLoadAttr(ctypes.Structure):
    """The BPF_PROG_LOAD part of ``union bpf_attr`` up to ``expected_attach_type``."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    ]


class _BpfAttachAttr(ctypes.Structure):
    """The BPF_PROG_ATTACH / BPF_PROG_DETACH part of ``union bpf_attr``."""

    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("replace_bpf_fd", ctypes.c_uint32),
    ]


class _BpfQueryAttr(ctypes.Structure):
    """The BPF_PROG_QUERY part of ``union bpf_attr`` (without the revision fields)."""

    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.c_uint64),
        ("prog_cnt", ctypes.c_uint32),
    ]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    return _syscall(
        "bpf", ctypes.c_long(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr))
    )


BPF_PROG_LOAD_ATTEMPTS = 5
"""How often :func:`bpf_prog_load` tries a load that fails with EAGAIN.

The verifier gives up with EAGAIN when a signal is pending for the loading thread (it checks
``signal_pending`` between instructions), so in trinit a SIGCHLD from any exiting process
can fail a container's device filter: seen in ``bench/scale.py`` creating 100 containers
at concurrency 32. libbpf retries the same way (5 attempts)."""


def bpf_prog_load(
    prog_type: int,
    insns: bytes,
    license: str,
    *,
    expected_attach_type: int = 0,
    name: str = "",
    log_size: int = 0,
) -> tuple[int, str]:
    """Load a BPF program (``insns``: 8-byte ``struct bpf_insn`` records); return (fd, log).

    The fd is CLOEXEC (the kernel always sets it) and owned by the caller. With
    ``log_size`` the verifier's log (level 1) is collected; on failure the OSError carries
    it as ``filename`` so the reason reaches the caller's message.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size) if log_size else None
    attr = _BpfProgLoadAttr()
    attr.prog_type = prog_type
    attr.insn_cnt = len(insns) // 8
    attr.insns = ctypes.addressof(code)
    attr.license = ctypes.addressof(lic)
    if log is not None:
        attr.log_level = 1
        attr.log_size = log_size
        attr.log_buf = ctypes.addressof(log)
    attr.prog_name = name.encode()[:15]
    attr.expected_attach_type = expected_attach_type
    for attempt in range(BPF_PROG_LOAD_ATTEMPTS):
        try:
            fd = _bpf(BPF_PROG_LOAD, attr)
            break
        except OSError as exc:
            if exc.errno == errno.EAGAIN and attempt + 1 < BPF_PROG_LOAD_ATTEMPTS:
                continue  # a signal arrived while the verifier ran: load it again
            text = log.value.decode(errors="replace").strip() if log is not None else ""
            raise OSError(exc.errno, exc.strerror, text or None) from None
    return fd, log.value.decode(errors="replace") if log is not None else ""


def bpf_prog_attach(
    target_fd: int, prog_fd: int, attach_type: int, flags: int, replace_fd: int = 0
) -> None:
    """Attach ``prog_fd`` to the cgroup directory ``target_fd`` (``BPF_PROG_ATTACH``)."""
    attr = _BpfAttachAttr(target_fd, prog_fd, attach_type, flags, replace_fd)
    _bpf(BPF_PROG_ATTACH, attr)


def bpf_prog_query(target_fd: int, attach_type: int, max_ids: int = 64) -> list[int]:
    """The ids of the programs attached to cgroup ``target_fd`` for ``attach_type``."""
    ids = (ctypes.c_uint32 * max_ids)()
    attr = _BpfQueryAttr()
    attr.target_fd = target_fd
    attr.attach_type = attach_type
    attr.prog_ids = ctypes.addressof(ids)
    attr.prog_cnt = max_ids
    _bpf(BPF_PROG_QUERY, attr)
    return [ids[index] for index in range(min(attr.prog_cnt, max_ids))]


class _BpfGetIdAttr(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    ]


def bpf_prog_get_fd_by_id(prog_id: int) -> int:
    """A new CLOEXEC fd for the loaded program ``prog_id``; the caller owns it."""
    return _bpf(BPF_PROG_GET_FD_BY_ID, _BpfGetIdAttr(prog_id, 0, 0))
