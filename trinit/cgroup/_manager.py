"""CgroupManager: creation, limits, membership and removal of cgroup v2 directories.

Theory of operation (docs/protocol.md §7.1). Every container gets the directory
``<root><cgroupsPath>`` (default ``/container/<id>``). Creating it is ``mkdir -p`` plus
vminitd's "toggle all available": the controllers listed in ``<root>/cgroup.controllers``
that are among pids, memory, cpuset, cpu, io and hugetlb (in file order) are written to
``cgroup.subtree_control`` of the root and of every intermediate ancestor, never of the
leaf (a leaf that enabled controllers could no longer hold processes). Limits
(``memory.max``, ``cpu.max``, ``pids.max``) come from OCI ``linux.resources``. Removal
kills everything inside (``cgroup.kill``), removes child cgroups depth first and then the
leaf, retrying EBUSY/EAGAIN on a 10/20/40/80 ms schedule taken from the trio clock.

Invariants:

* The manager never touches anything outside ``root``, and never removes ``root`` itself
  or an ancestor of a container directory: paths with ``..`` are refused up front.
* A missing controller is not an error. A hierarchy without the memory/cpu/pids
  controllers (this development machine, some guests) still runs containers; the first
  time a controller's file is missing the manager logs one warning for it and carries on.
* Interface files are opened without ``O_CREAT``: on a root that is not cgroupfs (a tmpfs
  ``/sys/fs/cgroup``, a test tree) the manager never invents files.

Who calls it: the container owner (create/apply/add at CreateProcess and StartProcess,
remove at DeleteProcess), :meth:`CgroupManager.hierarchy` for the exec helper, and the PID-1
boot (:func:`setup_own_cgroup`, before the event loop starts). The synchronous methods
make filesystem syscalls (cgroupfs mkdir/rmdir take locks the kernel shares with every
other cgroup operation, and ``hierarchy`` reads ``/proc/self/mountinfo``): from async code,
call them in a worker thread. :meth:`CgroupManager.remove` does that itself.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

import trio

from trinit._cgrouppath import directory_of
from trinit._mountinfo import mount_containing
from trinit.errors import Internal, InvalidArgument, NotFound

from . import _format

log = logging.getLogger("trinit.cgroup")

DEFAULT_ROOT = "/sys/fs/cgroup"

# vminitd's "toggle all available" set; the order written is the order of cgroup.controllers.
TOGGLED_CONTROLLERS = frozenset({"pids", "memory", "cpuset", "cpu", "io", "hugetlb"})

# Sleeps between the 5 removal attempts (docs/protocol.md §7.1, Removal).
REMOVE_RETRY_DELAYS = (0.010, 0.020, 0.040, 0.080)
_RETRYABLE_REMOVE_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN})

OWN_MEMORY_HIGH = 83886080  # 80 MiB
OWN_MEMORY_LOW = 52428800  # 50 MiB


class CgroupManager:
    """Owns the cgroup directories it creates under one cgroup2 root.

    ``rmdir`` is a test seam: removal calls it for every directory it deletes (so tests can
    make it fail with EBUSY, or use it to delete a fake tree's plain files first).
    """

    def __init__(
        self, root: str = DEFAULT_ROOT, *, rmdir: Callable[[str], None] | None = None
    ) -> None:
        self.root = os.path.normpath(root)
        self._rmdir: Callable[[str], None] = rmdir if rmdir is not None else os.rmdir
        self._warned: set[str] = set()
        # (mount point, root within the hierarchy) of root: read from mountinfo once, as it
        # does not change while the agent runs, and mountinfo grows with every container
        self._hierarchy: tuple[str, str] | None = None

    # -- paths -----------------------------------------------------------------------

    def container_path(self, cgroups_path: str) -> str:
        """``root + cgroups_path``, normalised.

        Raises InvalidArgument for an empty path, a NUL byte, any ``..`` component (it could
        escape the root) or a path naming the root itself (which must never be removed).
        """
        return os.path.join(self.root, *self._components(cgroups_path))

    def _components(self, cgroups_path: str) -> list[str]:
        if "\0" in cgroups_path:
            raise InvalidArgument(f"cgroups path {cgroups_path!r} contains a NUL byte")
        parts = [part for part in cgroups_path.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise InvalidArgument(f"cgroups path {cgroups_path!r} escapes the cgroup root")
        if not parts:
            raise InvalidArgument(f"cgroups path {cgroups_path!r} names the cgroup root")
        return parts

    def _relative_parts(self, cgroup_dir: str) -> list[str]:
        """The components of ``cgroup_dir`` below root; refuses root itself and outsiders."""
        normalised = os.path.normpath(cgroup_dir)
        relative = os.path.relpath(normalised, self.root)
        if relative == "." or relative == ".." or relative.startswith("../"):
            raise InvalidArgument(f"{cgroup_dir!r} is not a cgroup below {self.root}")
        return relative.split("/")

    # -- creation and limits ---------------------------------------------------------

    def available_controllers(self) -> list[str]:
        """The toggled controllers the root offers, in ``cgroup.controllers`` order."""
        try:
            text = _read_text(os.path.join(self.root, "cgroup.controllers"))
        except FileNotFoundError:
            self._warn_once(
                "cgroup.controllers",
                "%s has no cgroup.controllers (not a cgroup2 root?); no controllers enabled",
                self.root,
            )
            return []
        return [c for c in _format.parse_controllers(text) if c in TOGGLED_CONTROLLERS]

    def create(self, cgroups_path: str) -> str:
        """mkdir -p ``root + cgroups_path`` (0755) and enable controllers on its ancestors.

        Controllers go to ``cgroup.subtree_control`` of root and of every intermediate
        directory, top down, never the leaf. Returns the leaf directory. If enabling fails,
        a leaf this call created is removed again and Internal is raised; ancestors stay
        (vminitd never removes them either).
        """
        parts = self._components(cgroups_path)
        leaf = os.path.join(self.root, *parts)
        existed = os.path.isdir(leaf)
        try:
            os.makedirs(leaf, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise Internal(f"cgroups: create {leaf}: {_strerror(exc)}") from exc
        try:
            self._enable_controllers(parts)
        except Internal:
            if not existed:
                try:
                    os.rmdir(leaf)
                except OSError:
                    log.warning("cgroups: could not remove %s after a failed create", leaf)
            raise
        return leaf

    def _enable_controllers(self, parts: list[str]) -> None:
        controllers = self.available_controllers()
        if not controllers:
            return
        line = " ".join(f"+{name}" for name in controllers)
        for depth in range(len(parts)):  # root, then each ancestor, leaf excluded
            ancestor = os.path.join(self.root, *parts[:depth])
            path = os.path.join(ancestor, "cgroup.subtree_control")
            try:
                _write_existing(path, line)
            except OSError as exc:
                raise Internal(
                    f"cgroups: enable controllers {line!r} in {ancestor}: {_strerror(exc)}"
                ) from exc

    def apply_resources(self, cgroup_dir: str, resources: Mapping[str, Any] | None) -> None:
        """Write OCI ``linux.resources`` limits (docs/protocol.md §7.1).

        ``memory.max`` <- memory.limit (negative -> ``max``); ``cpu.max`` <- ``"<quota>
        <period>"`` only when both are present (negative quota -> ``max``); ``pids.max`` <-
        pids.limit (negative -> ``max``). A missing interface file (controller not enabled)
        is logged once per controller and skipped; any other write error raises Internal.
        """
        if not resources:
            return
        memory = resources.get("memory") or {}
        limit = memory.get("limit")
        if limit is not None:
            self._write_limit(cgroup_dir, "memory.max", _limit_text(limit))
        cpu = resources.get("cpu") or {}
        quota, period = cpu.get("quota"), cpu.get("period")
        if quota is not None and period is not None:
            self._write_limit(cgroup_dir, "cpu.max", f"{_limit_text(quota)} {int(period)}")
        pids = resources.get("pids") or {}
        pids_limit = pids.get("limit")
        if pids_limit is not None:
            self._write_limit(cgroup_dir, "pids.max", _limit_text(pids_limit))

    def _write_limit(self, cgroup_dir: str, filename: str, value: str) -> bool:
        """Write one controller file; False (after one warning per controller) if missing."""
        path = os.path.join(cgroup_dir, filename)
        try:
            _write_existing(path, value)
        except FileNotFoundError:
            controller = filename.partition(".")[0]
            self._warn_once(
                controller,
                "cgroup controller %r is not available (%s missing); limits for it are skipped",
                controller,
                path,
            )
            return False
        except OSError as exc:
            raise Internal(f"cgroups: write {value!r} to {path}: {_strerror(exc)}") from exc
        return True

    # -- membership ------------------------------------------------------------------

    def add_process(self, cgroup_dir: str, pid: int) -> None:
        """Move ``pid`` (its whole thread group) into ``cgroup_dir`` via ``cgroup.procs``.

        If the directory exists but has no ``cgroup.procs`` (root is not cgroupfs), logs once
        and returns. Any other failure (missing directory, vanished pid) raises Internal.
        """
        path = os.path.join(cgroup_dir, "cgroup.procs")
        try:
            _write_existing(path, str(pid))
        except FileNotFoundError as exc:
            if os.path.isdir(cgroup_dir):
                self._warn_once(
                    "cgroup.procs",
                    "%s has no cgroup.procs (not cgroupfs?); processes are not moved",
                    cgroup_dir,
                )
                return
            raise Internal(f"cgroups: add pid {pid} to {cgroup_dir}: {_strerror(exc)}") from exc
        except OSError as exc:
            raise Internal(f"cgroups: add pid {pid} to {cgroup_dir}: {_strerror(exc)}") from exc

    def hierarchy(self) -> tuple[str, str]:
        """(mount point, root within the hierarchy) of the cgroup2 mount holding root; read
        from mountinfo once, then remembered."""
        if self._hierarchy is None:
            self._hierarchy = _hierarchy_mount(self.root)
        return self._hierarchy

    def cgroup_of(self, pid: int) -> str:
        """The cgroup directory of ``pid`` (its ``0::<path>`` line) under root.

        NotFound if the process is gone or has no cgroup v2 line.
        """
        try:
            text = _read_text(f"/proc/{pid}/cgroup")
        except FileNotFoundError as exc:
            raise NotFound(f"cgroups: process {pid} not found") from exc
        # /proc/<pid>/cgroup is relative to the hierarchy (as our cgroup namespace sees it),
        # not to self.root, which may be a subdirectory of the hierarchy.
        try:
            return directory_of(text, *self.hierarchy())
        except ValueError as exc:
            raise NotFound(f"cgroups: process {pid}: {exc}") from None

    # -- removal ---------------------------------------------------------------------

    async def remove(self, cgroup_dir: str, *, tried: bool = False) -> None:
        """Kill everything in ``cgroup_dir``, remove its child cgroups, then the leaf.

        Each attempt writes ``1`` to ``cgroup.kill`` (or, without it, SIGKILLs every pid
        in ``cgroup.procs`` of the whole subtree) and rmdirs depth first. EBUSY/EAGAIN
        (processes still exiting) is retried after 10, 20, 40 and 80 ms of trio time; the
        fifth failure raises Internal "cgroups: unable to remove cgroup after 5 retries".
        Any other error raises Internal at once. A directory that does not exist (any
        more) counts as removed. Refuses root and paths outside it (InvalidArgument).

        Each attempt runs in a worker thread (it writes cgroupfs files and rmdirs a tree: a
        blocking call the event loop must not make). Cancellation: an attempt already
        running completes (the thread is never abandoned, so the kill is either written or
        not); the cancellation takes effect after it, or in a sleep between attempts. Then
        the processes are already killed and part of the subtree may be gone. Nothing to
        close.

        ``tried``: the first attempt was made already (:meth:`try_remove`, by a caller that
        had a worker thread anyway) and was retryable; this goes on with the second.
        """
        self._relative_parts(cgroup_dir)
        attempts = len(REMOVE_RETRY_DELAYS) + 1
        for attempt in range(attempts):
            if attempt > 0 or not tried:
                if await trio.to_thread.run_sync(self.try_remove, cgroup_dir):
                    return
            if attempt < len(REMOVE_RETRY_DELAYS):
                await trio.sleep(REMOVE_RETRY_DELAYS[attempt])
        raise Internal(f"cgroups: unable to remove cgroup after {attempts} retries")

    def try_remove(self, cgroup_dir: str) -> bool:
        """One attempt of :meth:`remove`, blocking (call it from a worker thread): True when
        the cgroup is gone; False when processes were still exiting (EBUSY, EAGAIN) and a
        retry is due. Other errors raise Internal."""
        self._relative_parts(cgroup_dir)
        try:
            self._remove_once(cgroup_dir)
        except OSError as exc:
            if exc.errno not in _RETRYABLE_REMOVE_ERRNOS:
                raise Internal(f"cgroups: remove {cgroup_dir}: {_strerror(exc)}") from exc
            log.debug("cgroups: remove %s: %s", cgroup_dir, exc)
            return False
        return True

    def _remove_once(self, cgroup_dir: str) -> None:
        if not os.path.isdir(cgroup_dir):
            return
        self._kill_all(cgroup_dir)
        self._remove_tree(cgroup_dir)

    def _kill_all(self, cgroup_dir: str) -> None:
        try:
            _write_existing(os.path.join(cgroup_dir, "cgroup.kill"), "1")
            return
        except FileNotFoundError:
            pass  # kernel < 5.14, or not cgroupfs: fall back to signalling each member
        for directory in _walk_dirs(cgroup_dir):
            try:
                pids = _format.parse_procs(_read_text(os.path.join(directory, "cgroup.procs")))
            except FileNotFoundError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _remove_tree(self, directory: str) -> None:
        """rmdir depth first; vanished entries are fine, EBUSY propagates to the retry."""
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                self._remove_tree(entry.path)
        try:
            self._rmdir(directory)
        except FileNotFoundError:
            pass

    # -- events ----------------------------------------------------------------------

    def read_memory_events(self, cgroup_dir: str) -> dict[str, int]:
        """``memory.events`` as a dict (low, high, max, oom, oom_kill...); {} if missing."""
        try:
            return _format.parse_flat_keyed(_read_text(os.path.join(cgroup_dir, "memory.events")))
        except FileNotFoundError:
            return {}

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(message, *args)


def setup_own_cgroup(manager: CgroupManager, name: str = "trinit") -> str:
    """Create trinit's own cgroup ``/<name>``, set its soft limits and move this process in.

    memory.high = 80 MiB and memory.low = 50 MiB as vminitd does (docs/protocol.md §7.1,
    §8.2 step 7); missing controllers are logged and skipped. Returns the directory. Raises
    Internal only if the directory cannot be created or the pid cannot be moved into an
    existing cgroup.
    """
    cgroup_dir = manager.create("/" + name)
    manager._write_limit(cgroup_dir, "memory.high", str(OWN_MEMORY_HIGH))
    manager._write_limit(cgroup_dir, "memory.low", str(OWN_MEMORY_LOW))
    manager.add_process(cgroup_dir, os.getpid())
    return cgroup_dir


def _limit_text(value: Any) -> str:
    number = int(value)
    return "max" if number < 0 else str(number)


def _walk_dirs(top: str) -> list[str]:
    found = [top]
    try:
        entries = list(os.scandir(top))
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            found.extend(_walk_dirs(entry.path))
    return found


def _read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as file:
        return file.read()


def _write_existing(path: str, text: str) -> None:
    """One write(2) of ``text`` to an existing file (never O_CREAT).

    cgroupfs parses each write separately, so the value must go in a single call; O_TRUNC
    is what a shell's ``>`` does and is accepted by cgroupfs (it makes plain test files
    hold exactly the last value).
    """
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _hierarchy_mount(path: str) -> tuple[str, str]:
    """(mount point, root within the hierarchy) of the cgroup2 mount containing ``path``.

    Falls back to ``(path, "/")`` when ``path`` is not on a cgroup2 mount (test trees)."""
    try:
        mount = mount_containing(path)
    except OSError:
        mount = None
    if mount is None or mount.fstype != "cgroup2":
        return path, "/"
    return mount.mount_point, mount.root
