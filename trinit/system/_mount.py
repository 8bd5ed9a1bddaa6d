"""Mount and Umount: the option table of mount(8), hot-plug retries, EBUSY retries.

Theory of operation:

* ``parse_options`` (``trinit.exec.parse_mount_options``, shared with the exec helper) turns the
  host's option strings into mount flags, propagation flags and a data string, with the
  same set/clear table as mount(8) (docs/protocol.md §4.1).
* :func:`mount` prepares the destination (parent ``mkdir -p`` 0755; an empty 0644 file for a
  bind mount of a non-directory, else the directory; below a container rootfs every step
  and the mount target itself resolve inside that rootfs, see :func:`_mount_target`),
  calls mount(2), and when that fails for
  a hot-pluggable source (virtiofs, or a ``/dev/vd*`` block device) asks the kernel to rescan
  the PCI bus and retries 20 times, 100 ms apart.
* :func:`umount` calls umount2(2) and retries EBUSY 51 times, 10 ms apart.

All waiting is ``trio.sleep`` so tests run it under ``MockClock``; every syscall runs in a
worker thread that is never abandoned (a mount either happened or did not). The syscalls come
from a :class:`MountSyscalls` the caller may replace, which is how tests make them fail.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from trinit import _linux as linux
from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument
from trinit.exec import makedirs_in_root, open_in_root, split_parent
from trinit.exec import parse_mount_options as parse_options

from ._common import has_nul, os_reason, run_blocking, strerror
from ._paths import Located, locate, root_fd

log = logging.getLogger(__name__)

HOTPLUG_RETRIES = 20
HOTPLUG_INTERVAL = 0.1
UMOUNT_ATTEMPTS = 51
UMOUNT_INTERVAL = 0.01


@dataclass(frozen=True)
class MountSyscalls:
    """The syscalls :func:`mount` and :func:`umount` make; tests substitute failing ones."""

    mount: Callable[[str | None, str, str | None, int, str | None], None] = linux.mount
    umount2: Callable[[str, int], None] = linux.umount2
    pci_rescan_path: str = "/sys/bus/pci/rescan"


DEFAULT_SYSCALLS = MountSyscalls()


def _is_hotplug(fstype: str, source: str) -> bool:
    return fstype == "virtiofs" or source.startswith("/dev/vd")


def _prepare_destination(source: str, destination: str, is_bind: bool) -> None:
    """``mkdir -p`` the parent; then an empty 0644 file for a bind mount of a non-directory,
    else the directory. Below a rootfs every step resolves inside it."""
    file_target = is_bind and not os.path.isdir(source)  # the source is the host's path
    where = _in_rootfs(destination)
    if where is None:
        parent = os.path.dirname(destination.rstrip("/")) or "/"
        os.makedirs(parent, 0o755, exist_ok=True)
        if not file_target:
            os.makedirs(destination, 0o755, exist_ok=True)
        elif not os.path.lexists(destination):
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            os.close(os.open(destination, flags, 0o644))
        return
    with root_fd(where) as root:
        if not file_target:
            makedirs_in_root(root, where.rel, 0o755)
            return
        makedirs_in_root(root, split_parent(where.rel)[0], 0o755)
        try:
            os.close(open_in_root(root, where.rel, os.O_PATH))
        except FileNotFoundError:
            # O_EXCL: a dangling link planted at the name fails instead of being followed
            os.close(open_in_root(root, where.rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def _in_rootfs(destination: str) -> Located | None:
    """Where ``destination`` lies below a rootfs, or None: outside every rootfs, or the
    rootfs directory itself (the host mounts the rootfs there; the path is trinit's)."""
    where = locate(destination)
    if where.root is None or not where.rel.strip("/"):
        return None
    return where


@contextmanager
def _mount_target(destination: str) -> Iterator[str]:
    """The path to hand mount(2) for ``destination``.

    Outside every rootfs: the path itself. Below a rootfs: ``/proc/self/fd/N`` of an
    ``O_PATH`` fd opened inside it, so a link the container planted on the way (``sbin ->
    /``) resolves inside the container and the mount can never land on the VM's own tree.
    Opened afresh for each call: a remount after the first mount must reach the new mount
    on top, which an fd opened before it does not.
    """
    where = _in_rootfs(destination)
    if where is None:
        yield destination
        return
    with root_fd(where) as root:
        fd = open_in_root(root, where.rel, os.O_PATH)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _rescan_pci(path: str) -> None:
    try:
        with open(path, "w") as rescan:
            rescan.write("1")
    except OSError as exc:
        log.warning("mount: PCI rescan failed: %s", os_reason(exc))


async def mount(
    request: pb.MountRequest, *, syscalls: MountSyscalls = DEFAULT_SYSCALLS
) -> pb.MountResponse:
    """Mount ``request.source`` on ``request.destination`` (docs/protocol.md §4.1).

    Raises ``Internal("mount: <reason>")`` on any failure. Cancellation: a syscall already
    running completes first (its thread is never abandoned); a cancelled hot-plug retry loop
    stops between attempts and leaves nothing mounted.
    """
    fstype, source, destination = request.type, request.source, request.destination
    what = f"{fstype or 'none'} {source or 'none'} on {destination}"
    if not destination:
        raise Internal("mount: destination is empty")
    if has_nul(fstype, source, destination, *request.options):
        raise Internal(f"mount: {what!r}: NUL byte in an argument")
    try:
        opts = parse_options(list(request.options))
    except ValueError:
        raise Internal(f"mount: {what}: data string longer than a page") from None
    is_bind = bool(opts.flags & linux.MS_BIND)

    def call(src: str | None, fst: str | None, flags: int, data: str | None) -> Callable[[], None]:
        def attempt() -> None:
            with _mount_target(destination) as target:
                syscalls.mount(src, target, fst, flags, data)

        return attempt

    main = call(source or None, fstype or None, opts.flags, opts.data or None)

    def prepare_then_mount() -> None:
        # one trip to a worker thread for both (each trip costs ~0.25 ms of the RPC)
        try:
            _prepare_destination(source, destination, is_bind)
        except OSError as exc:
            raise _PreparingFailed(exc) from None
        # A bind remount without data is done by the MS_REMOUNT|MS_BIND call below (vminitd
        # skips every data-less remount, which makes `remount,ro` a silent no-op; see
        # docs/compat.md).
        if not opts.skip_main_call:
            main()

    try:
        await run_blocking(prepare_then_mount)
    except _PreparingFailed as failed:
        raise Internal(f"mount: {what}: preparing destination: {os_reason(failed.error)}") from None
    except OSError as first:
        if not _is_hotplug(fstype, source):
            raise Internal(f"mount: {what}: {_errtext(first)}") from None
        await _retry_after_rescan(main, syscalls.pci_rescan_path, what, first)
    try:
        if opts.bind_remount_flags:
            await run_blocking(call(None, None, opts.bind_remount_flags, None))
        if opts.propagation:
            await run_blocking(call(None, None, opts.propagation, None))
    except OSError as exc:
        raise Internal(f"mount: {what}: {_errtext(exc)}") from None
    return pb.MountResponse()


class _PreparingFailed(Exception):
    """The destination could not be prepared (its OSError in ``error``): no mount was tried."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _errtext(exc: OSError) -> str:
    """The errno text alone: the message already names source and destination."""
    return strerror(exc.errno) if exc.errno else os_reason(exc)


async def _retry_after_rescan(
    attempt: Callable[[], None], rescan_path: str, what: str, first: OSError
) -> None:
    """The device may not be visible yet: rescan the PCI bus, retry 20 times 100 ms apart."""
    log.info("mount: %s failed (%s); rescanning PCI and retrying", what, os_reason(first))
    await run_blocking(lambda: _rescan_pci(rescan_path))
    for _ in range(HOTPLUG_RETRIES):
        await trio.sleep(HOTPLUG_INTERVAL)
        try:
            await run_blocking(attempt)
        except OSError:
            continue
        return
    raise Internal(f"mount: {what}: {_errtext(first)}")


async def umount(
    request: pb.UmountRequest, *, syscalls: MountSyscalls = DEFAULT_SYSCALLS
) -> pb.UmountResponse:
    """umount2(path, flags), retrying EBUSY 51 times 10 ms apart (docs/protocol.md §4.2).

    If the mount is still busy after the last attempt it is detached lazily (``MNT_DETACH``)
    and the call succeeds: the host's ``stop()`` relies on success here (docs/compat.md).
    Any other error raises ``InvalidArgument("umount: <reason>")``. Cancellation: stops
    between attempts; an attempt in progress completes first.
    """
    path, flags = request.path, request.flags
    if has_nul(path):
        raise InvalidArgument(f"umount: {path!r}: NUL byte in path")
    for attempt in range(UMOUNT_ATTEMPTS):
        try:
            await run_blocking(lambda: syscalls.umount2(path, flags))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise InvalidArgument(f"umount: {path}: {_errtext(exc)}") from None
            if attempt + 1 < UMOUNT_ATTEMPTS:
                await trio.sleep(UMOUNT_INTERVAL)
            continue
        return pb.UmountResponse()
    log.warning("umount: %s still busy after %d attempts; detaching lazily", path, UMOUNT_ATTEMPTS)
    lazy = (flags & ~linux.MNT_EXPIRE) | linux.MNT_DETACH
    try:
        await run_blocking(lambda: syscalls.umount2(path, lazy))
    except OSError as exc:
        raise InvalidArgument(f"umount: {path}: {_errtext(exc)}") from None
    return pb.UmountResponse()
