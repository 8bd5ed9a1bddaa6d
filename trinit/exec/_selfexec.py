"""trinit's own entry point as a container's program: init and pause mode *in-process*.

Apple's host runs vminitd inside containers in two ways (docs/protocol.md §8.3, §8.4): with
``useInit`` it bind-mounts the guest's ``/sbin/vminitd`` read-only at ``/.cz-init`` and runs
``/.cz-init -- ARGV...``; a pod's pause container has the VM's ``/sbin`` bound in and runs
``/sbin/vminitd pause``. vminitd is a static binary, so that works in any rootfs. trinit's
entry point is a Python script, and a container rootfs has no Python: exec'ing it fails.

The exec helper, though, *is* a Python process with everything loaded. So when the program a
container process would exec is trinit's entry point, the helper does not exec it: after the
whole container set-up (namespaces, mounts, pivot_root, terminal, rlimits, credentials,
capabilities, no_new_privs, cwd, default signal dispositions) it runs the mode that program
would have run, in the same process.

The rule (:func:`is_entry_point`). The agent names its entry point file (``--entry-point``,
default ``/sbin/vminitd``, the path the host bind-mounts). The helper ``stat``s it, following
links, *before* it enters the container's mount namespace: its (st_dev, st_ino) is the
identity. After pivot_root, ``args[0]`` is resolved exactly as for an exec (PATH lookup, cwd)
and ``stat``ed, following links; it is trinit's entry point when its (st_dev, st_ino) is the
identity. A bind mount (``/.cz-init``, or ``/sbin`` bound into the pause rootfs) shows the
same inode of the same file system, whatever its path; a file merely *named* vminitd or
``.cz-init`` in an image is a different inode and is exec'd normally. A missing entry point
file means nothing is recognised.

Which mode, from the arguments, as ``trinit.__main__`` would choose: basename of ``args[0]``
``.cz-init`` → init mode with ``args[1:]``; ``args[1]`` ``init`` → init mode with ``args[2:]``;
``args[1]`` ``pause`` → pause mode with ``args[2:]``. Anything else (the agent, ``initfs``)
cannot run inside a container and fails the start like a failed exec.

Exec semantics kept: every fd above 2 is closed first (they are all CLOEXEC at that point,
so this is exactly what a successful execve would close): the error pipe reads EOF and the
start succeeds; ``os.environ`` becomes the process's ``env``; the exit status is the mode's.

Imported by the exec helper at load (after pivot_root the interpreter's files are out of
reach), so its imports, and those of the two modes, stay as cheap as the helper's own.
"""

from __future__ import annotations

import os
import sys

from trinit import _init_mode, _pause_mode
from trinit import _linux as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

Identity = tuple[int, int]


def identity(path: str) -> Identity | None:
    """(st_dev, st_ino) of ``path`` following links, or None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def is_entry_point(executable: str, entry: Identity | None) -> bool:
    """Whether ``executable`` (resolved in the container) is the entry point file."""
    return entry is not None and identity(executable) == entry


def mode_of(args: list[str]) -> tuple[str, list[str]] | None:
    """``("init" | "pause", mode arguments)`` for a command line of the entry point, or None
    when it asks for something that cannot run inside a container."""
    if os.path.basename(args[0]) == ".cz-init":
        return "init", args[1:]
    if len(args) > 1 and args[1] in ("init", "pause"):
        return args[1], args[2:]
    return None


def _close_exec_fds() -> None:
    """Close every fd above 2, as execve would close the CLOEXEC ones (all of them here)."""
    try:
        sc.close_range(3, 0xFFFFFFFF, 0)
    except OSError:  # kernel < 5.9
        os.closerange(3, 65536)


def _set_comm(name: str) -> None:
    """Show ``name`` as the process name (``/proc/PID/comm``, what ps and top print) instead
    of the interpreter's; best effort (no /proc in the container: left as it is)."""
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, os.fsencode(name)[:15])
    except OSError:
        pass
    finally:
        os.close(fd)


def run(args: list[str], env: dict[str, str]) -> NoReturn:
    """Become ``args`` (trinit's entry point) in this process: never returns.

    The caller has checked :func:`mode_of`. Exits with the mode's status.
    """
    chosen = mode_of(args)
    assert chosen is not None
    mode, mode_args = chosen
    os.environ.clear()
    os.environ.update(env)
    sys.argv[:] = args
    _set_comm(os.path.basename(args[0]))
    _close_exec_fds()
    code = 1
    try:
        if mode == "init":
            _init_mode.main(mode_args)
        else:
            _pause_mode.main(mode_args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # nothing may return into the helper
        try:
            os.write(2, f"trinit {mode}: {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code & 0xFF)
