"""Helpers shared by the system-call modules: running blocking work off the event loop,
turning OS errors into one-line reasons, and rejecting paths the kernel cannot take.

Every public function of :mod:`trinit.system` raises only :class:`trinit.errors.TrinitError`
subclasses for a failure it understands; the helpers here build the one-line "reason" that
follows vminitd's fixed message (``"mount: <reason>"``), never a traceback.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TypeVar

import trio

from trinit.errors import TrinitError

T = TypeVar("T")


async def run_blocking(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread and wait for it.

    The thread is never abandoned: if the caller is cancelled while ``fn`` runs, the
    cancellation takes effect only after ``fn`` returns, so a mutating syscall is either done
    or not started, never "maybe running in the background".
    """
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=False)


def errno_name(code: int | None) -> str:
    """``ENOENT`` for 2; ``errno <n>`` for codes Python does not know."""
    if code is None:
        return "errno ?"
    return errno.errorcode.get(code, f"errno {code}")


def os_reason(exc: BaseException) -> str:
    """One line describing an OS (or other) error: ``'<file>': <strerror> (<ENAME>)``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        text = f"{exc.strerror or os.strerror(exc.errno)} ({errno_name(exc.errno)})"
        if exc.filename is not None:
            name = os.fsdecode(exc.filename)
            text = f"'{name}': {text}"
            if exc.filename2 is not None:
                text = f"{text} -> '{os.fsdecode(exc.filename2)}'"
        return text
    if isinstance(exc, TrinitError):
        return exc.message
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def strerror(code: int) -> str:
    """``Permission denied (EACCES)``: the textual POSIX error vminitd puts in responses."""
    return f"{os.strerror(code)} ({errno_name(code)})"


def has_nul(*values: str) -> bool:
    """Whether any value holds a NUL, which no path, name or argument of a syscall can."""
    return any("\x00" in value for value in values)


Opener = Callable[[str, int, int], int]


def open_creating(path: str, flags: int, mode: int, opener: Opener = os.open) -> int:
    """``open(path, flags | O_CREAT, mode)`` as vminitd does it, but a file this call creates
    gets exactly ``mode`` (the umask does not narrow it; an existing file keeps its mode).

    Like plain ``O_CREAT``, a dangling symlink at ``path`` gets its target created (an image's
    ``etc/resolv.conf -> ../run/...``, say). ``opener(path, flags, mode)`` does each open
    (a rootfs path passes one that resolves inside the rootfs). Blocking: call it from a
    worker thread.
    """
    try:
        fd = opener(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            return opener(path, flags, 0)
        except FileNotFoundError:
            # a dangling symlink: O_EXCL refuses it, O_CREAT without it creates the target
            fd = opener(path, flags | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd
