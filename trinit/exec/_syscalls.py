"""Thin ctypes wrappers for the Linux system calls Python 3.11 lacks.

This module owns nothing but function definitions and constants. It is imported by the exec
helper (:mod:`trinit.exec._child`), which must start fast, so it depends on ``ctypes``,
``os`` and ``platform``-free stdlib only. Every wrapper goes through ``syscall(2)`` with the
number for the running architecture (x86_64 or aarch64), passes every integer argument as a
``long`` (variadic calls must not truncate), and raises :class:`OSError` with the errno on
failure, so callers handle these exactly like ``os`` functions.

Invariant: nothing here keeps state except the loaded libc handle; the functions are safe to
call after ``fork()``.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_MACHINE = os.uname().machine

# name -> (x86_64, aarch64)
_NUMBERS: dict[str, tuple[int, int]] = {
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "unshare": (272, 97),
    "setns": (308, 268),
    "capget": (125, 90),
    "capset": (126, 91),
    "prctl": (157, 167),
    "sethostname": (170, 161),
    "pidfd_open": (434, 434),
    "openat2": (437, 437),
    "pidfd_getfd": (438, 438),
    "close_range": (436, 436),
    "rt_sigaction": (13, 134),
    "setdomainname": (171, 162),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "mount_setattr": (442, 442),
}

if _MACHINE == "x86_64":
    _ARCH_INDEX = 0
elif _MACHINE in ("aarch64", "arm64"):
    _ARCH_INDEX = 1
else:  # pragma: no cover - only the two VM architectures are supported
    raise ImportError(f"trinit.exec: unsupported architecture {_MACHINE}")

SYS: dict[str, int] = {name: nums[_ARCH_INDEX] for name, nums in _NUMBERS.items()}

# Namespaces (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

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
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# capabilities (linux/capability.h)
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# tty ioctls (same values on x86_64 and aarch64)
TIOCSCTTY = 0x540E

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


def _check(result: int) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _call(name: str, *args: object) -> int:
    return _check(_syscall(ctypes.c_long(SYS[name]), *args))


def _path(value: str | bytes | None) -> bytes | None:
    if value is None:
        return None
    return os.fsencode(value)


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (``unshare(2)``)."""
    _call("unshare", ctypes.c_long(flags))


def setns(fd: int, nstype: int) -> None:
    """Join the namespace(s) of ``fd`` (a /proc/*/ns file or a pidfd)."""
    _call("setns", ctypes.c_long(fd), ctypes.c_long(nstype))


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
    _call("umount2", ctypes.c_char_p(_path(target)), ctypes.c_long(flags))


def pivot_root(new_root: str | bytes, put_old: str | bytes) -> None:
    """``pivot_root(2)`` (glibc has no wrapper)."""
    _call("pivot_root", ctypes.c_char_p(_path(new_root)), ctypes.c_char_p(_path(put_old)))


def pidfd_open(pid: int, flags: int = 0) -> int:
    """A new CLOEXEC pidfd for ``pid``; the caller owns and closes it."""
    return _call("pidfd_open", ctypes.c_long(pid), ctypes.c_long(flags))


def pidfd_getfd(pidfd: int, targetfd: int, flags: int = 0) -> int:
    """Duplicate fd ``targetfd`` of the process behind ``pidfd`` into this process.

    The new fd is CLOEXEC and owned by the caller.
    """
    return _call("pidfd_getfd", ctypes.c_long(pidfd), ctypes.c_long(targetfd), ctypes.c_long(flags))


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
    return _call(
        "openat2",
        ctypes.c_long(dirfd),
        ctypes.c_char_p(_path(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )


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


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """``prctl(2)`` with integer arguments; returns the call's result."""
    return _call(
        "prctl",
        ctypes.c_long(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(arg4),
        ctypes.c_ulong(arg5),
    )


def close_range(first: int, last: int, flags: int) -> None:
    """``close_range(2)``; with CLOSE_RANGE_CLOEXEC it marks the fds instead of closing."""
    _call("close_range", ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags))


def reset_signal(signum: int) -> None:
    """Set ``signum``'s disposition to SIG_DFL with the raw syscall.

    glibc's sigaction refuses its internal signals 32 and 33, and its posix_spawn leaves
    them *ignored* in every child of a threaded parent; an ignored disposition survives
    execve, so the helper resets them here before exec'ing the workload. The kernel's
    ``struct sigaction`` is handler, flags, restorer, mask (4 x 8 bytes) on x86_64 and
    aarch64; all zeroes means SIG_DFL with no flags and an empty mask.
    """
    action = ctypes.create_string_buffer(32)
    _call("rt_sigaction", ctypes.c_long(signum), action, None, ctypes.c_size_t(8))


def sethostname(name: str) -> None:
    """Set the hostname of the current UTS namespace."""
    raw = name.encode()
    _call("sethostname", ctypes.c_char_p(raw), ctypes.c_size_t(len(raw)))


def setdomainname(name: str) -> None:
    """Set the NIS domain name of the current UTS namespace (the OCI ``domainname``)."""
    raw = name.encode()
    _call("setdomainname", ctypes.c_char_p(raw), ctypes.c_size_t(len(raw)))


def open_tree(dirfd: int, path: str | bytes, flags: int) -> int:
    """``open_tree(2)``; with OPEN_TREE_CLONE a detached copy of the mount at ``path``.

    ``O_CLOEXEC`` is always added; the caller owns the returned fd.
    """
    return _call(
        "open_tree",
        ctypes.c_long(dirfd),
        ctypes.c_char_p(_path(path)),
        ctypes.c_uint(flags | os.O_CLOEXEC),
    )


def move_mount(
    from_dirfd: int, from_path: str | bytes, to_dirfd: int, to_path: str | bytes, flags: int
) -> None:
    """``move_mount(2)``: attach (or move) a mount; ``*_EMPTY_PATH`` flags use the fds."""
    _call(
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
    _call(
        "mount_setattr",
        ctypes.c_long(dirfd),
        ctypes.c_char_p(_path(path)),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )


def unlockpt(fd: int) -> None:
    """Unlock the slave of PTY master ``fd``."""
    _check(_libc.unlockpt(ctypes.c_int(fd)))


def ptsname(fd: int) -> str:
    """Path of the slave of PTY master ``fd`` (thread-safe ``ptsname_r``)."""
    buf = ctypes.create_string_buffer(128)
    err = _libc.ptsname_r(ctypes.c_int(fd), buf, ctypes.c_size_t(len(buf)))
    if err != 0:
        raise OSError(err, os.strerror(err))
    return os.fsdecode(buf.value)


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


def settimeofday(sec: int, usec: int) -> None:
    """``settimeofday(2)`` without a timezone (SetTime)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.settimeofday(ctypes.byref(_Timeval(sec, usec)), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
