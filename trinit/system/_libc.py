"""ctypes bindings for the few syscalls Python 3.11's ``os`` module lacks.

Owns nothing but function pointers. Every wrapper raises :class:`OSError` with the errno the
kernel returned (and the path involved), like the ``os`` functions do, and is blocking: call
them from a worker thread (``trinit.system._common.run_blocking``).
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


_libc.settimeofday.argtypes = [ctypes.POINTER(_Timeval), ctypes.c_void_p]
_libc.settimeofday.restype = ctypes.c_int

CLONE_NEWNET = 0x40000000


def _encode(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _raise(filename: str | None = None) -> None:
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code), filename)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    """mount(2)."""
    if _libc.mount(_encode(source), _encode(target), _encode(fstype), flags, _encode(data)) != 0:
        _raise(target)


def umount2(target: str, flags: int) -> None:
    """umount2(2)."""
    if _libc.umount2(_encode(target), flags) != 0:
        _raise(target)


def settimeofday(sec: int, usec: int) -> None:
    """settimeofday(2) without a timezone."""
    if _libc.settimeofday(ctypes.byref(_Timeval(sec, usec)), None) != 0:
        _raise()


def setns(fd: int, nstype: int) -> None:
    """setns(2) for the calling thread."""
    if _libc.setns(fd, nstype) != 0:
        _raise()
