"""Sysctl, SetTime and SetupEmulator: writes to kernel interfaces of the whole VM.

Each call writes under ``/proc/sys`` (or asks the kernel via settimeofday(2)) in a worker
thread that is never abandoned. The roots are parameters so tests point them at a temporary
directory: a test must never change the real machine's sysctls, clock or binfmt_misc.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from trinit import _linux as linux
from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal

from ._common import has_nul, os_reason, run_blocking

PROC_SYS = "/proc/sys"
BINFMT_MISC = "/proc/sys/fs/binfmt_misc"


def _write_whole(path: str, data: bytes) -> None:
    """One write(2) of ``data`` to an existing file, without truncation (a proc file needs
    its value in a single write)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(0, f"short write ({written} of {len(data)} bytes)", path)
    finally:
        os.close(fd)


def sysctl_path(key: str, proc_sys: str = PROC_SYS) -> str:
    """``net.ipv4.ip_forward`` → ``/proc/sys/net/ipv4/ip_forward``.

    Every ``.`` becomes ``/``, so a key can never name ``..`` and leave ``proc_sys``.
    """
    return f"{proc_sys}/{key.replace('.', '/')}"


async def sysctl(request: pb.SysctlRequest, *, proc_sys: str = PROC_SYS) -> pb.SysctlResponse:
    """Write each setting to ``/proc/sys`` in the map's (unspecified) order; stop at the
    first failure.

    Raises ``Internal("sysctl: failed to set sysctl: <key>: <reason>")``; the settings before
    the failing one stay applied. Cancellation waits for the writes to finish.
    """
    settings = list(request.settings.items())

    def apply() -> None:
        for key, value in settings:
            try:
                if has_nul(key, value):
                    raise OSError(0, "NUL byte in key or value")
                _write_whole(sysctl_path(key, proc_sys), value.encode())
            except OSError as exc:
                raise Internal(f"sysctl: failed to set sysctl: {key}: {os_reason(exc)}") from None

    await run_blocking(apply)
    return pb.SysctlResponse()


async def set_time(
    request: pb.SetTimeRequest,
    *,
    settimeofday: Callable[[int, int], None] = linux.settimeofday,
) -> pb.SetTimeResponse:
    """Set the VM's wall clock to ``sec``/``usec``; ``Internal("failed to settimeofday: ...")``.

    The kernel validates the values before changing anything (EINVAL for usec outside
    0..999999). Cancellation waits for the syscall.
    """
    sec, usec = request.sec, request.usec
    try:
        await run_blocking(lambda: settimeofday(sec, usec))
    except OSError as exc:
        raise Internal(f"failed to settimeofday: {os_reason(exc)}") from None
    return pb.SetTimeResponse()


def binfmt_line(request: pb.SetupEmulatorRequest) -> str:
    """``:name:type:offset:magic:mask:interpreter:flags``, magic and mask as given (the
    kernel decodes their ``\\xNN`` escapes)."""
    r = request
    return f":{r.name}:{r.type}:{r.offset}:{r.magic}:{r.mask}:{r.binary_path}:{r.flags}"


_binfmt_lock = threading.Lock()
"""Serialises check-then-mount of binfmt_misc between concurrent SetupEmulator calls (a
second mount would stack another binfmt_misc over the first)."""


def mount_binfmt_misc(target: str) -> None:
    """mount -t binfmt_misc binfmt_misc ``target`` (nosuid, nodev, noexec)."""
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    linux.mount("binfmt_misc", target, "binfmt_misc", flags, None)


def _ensure_mounted(binfmt_misc: str, mount: Callable[[str], None] | None) -> None:
    """Mount binfmt_misc on demand when ``register`` is missing but the kernel has it.

    The kernel creates the ``binfmt_misc`` directory under /proc/sys/fs exactly when the file
    system is available (built in, or its module loaded), so an existing directory without
    ``register`` means "supported, not mounted yet". Without ``mount`` (an agent that is not
    the VM's init: in the initial user namespace binfmt_misc is one machine-wide instance)
    nothing is mounted and the caller reports vminitd's "not mounted".
    """
    register = f"{binfmt_misc}/register"
    if mount is None or os.path.exists(register) or not os.path.isdir(binfmt_misc):
        return
    with _binfmt_lock:
        if os.path.exists(register):
            return
        try:
            mount(binfmt_misc)
        except OSError as exc:
            reason = os_reason(exc)
            raise Internal(f"setupEmulator: failed to mount binfmt_misc: {reason}") from None


async def setup_emulator(
    request: pb.SetupEmulatorRequest,
    *,
    binfmt_misc: str = BINFMT_MISC,
    mount: Callable[[str], None] | None = None,
) -> pb.SetupEmulatorResponse:
    """Register a binfmt_misc interpreter with one write to ``<binfmt_misc>/register``.

    With ``mount`` (the VM's init passes :func:`mount_binfmt_misc`), a binfmt_misc the kernel
    supports but nobody mounted yet is mounted first, so an early call never fails with "not
    mounted" (docs/compat.md, "binfmt_misc before serving").

    Raises ``Internal("<binfmt_misc> is not mounted")`` when ``register`` is absent, else
    ``Internal("setupEmulator: failed to register binfmt_misc entry: <reason>")``.
    """
    register = f"{binfmt_misc}/register"
    line = binfmt_line(request)

    def apply() -> None:
        _ensure_mounted(binfmt_misc, mount)
        if not os.path.exists(register):
            raise Internal(f"{binfmt_misc} is not mounted")
        try:
            if has_nul(line):
                raise OSError(0, "NUL byte in entry")
            _write_whole(register, line.encode())
        except OSError as exc:
            raise Internal(
                f"setupEmulator: failed to register binfmt_misc entry: {os_reason(exc)}"
            ) from None

    await run_blocking(apply)
    return pb.SetupEmulatorResponse()
