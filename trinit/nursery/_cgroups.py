"""The container <-> cgroup v2 seam: create before the init runs, place execs, remove, stats.

Ownership: each container's cgroup (``--cgroup-root`` + ``linux.cgroupsPath``) is created
with its limits before the init is launched (the exec helper moves the init in before it
runs), execs are placed in the init's cgroup before they are released, and DeleteProcess
removes it (``cgroup.kill``, retries). The last ``memory.events`` seen is kept so an
OOM-killed container's counters survive until DeleteProcess.

When the root is not a cgroup2 hierarchy (a development machine whose /sys/fs/cgroup is a
v1 tmpfs), cgroup management is off: logged once, containers run without limits.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import trio

from trinit._mountinfo import mount_containing
from trinit.cgroup import CgroupManager, attach_device_filter, device_filter

from ._container import CgroupHooks

log = logging.getLogger("trinit.cgroup")


def is_cgroup2(path: str) -> bool:
    """True when ``path`` lies on a cgroup2 filesystem (by the mount that contains it)."""
    try:
        mount = mount_containing(path)
    except OSError:
        return False
    return mount is not None and mount.fstype == "cgroup2"


def cgroups_path(spec: dict[str, Any]) -> str:
    linux = spec.get("linux") or {}
    return str(linux.get("cgroupsPath") or "")


class ContainerCgroups(CgroupHooks):
    def __init__(self, manager: CgroupManager) -> None:
        self.manager = manager
        self._last_events: dict[str, dict[str, int]] = {}
        self._hierarchy: tuple[str, str] | None = None

    @classmethod
    def for_root(cls, root: str) -> CgroupHooks:
        """Real cgroup management on a cgroup2 root, or the no-op hooks (logged) otherwise."""
        if is_cgroup2(root):
            return cls(CgroupManager(root))
        log.warning(f"{root} is not a cgroup2 hierarchy: containers run without cgroups")
        return CgroupHooks()

    @property
    def root(self) -> str:
        return self.manager.root

    def helper_args(self) -> list[str]:
        return ["--cgroup-root", self.manager.root]

    def prepare(self, container_id: str, spec: dict[str, Any]) -> None:
        """Create the cgroup and write its limits. Blocking: the registry runs it in a worker
        thread."""
        path = cgroups_path(spec)
        if not path:
            return
        resources = (spec.get("linux") or {}).get("resources")
        program = device_filter(resources)  # a bad rule fails before anything exists
        directory = self.manager.create(path)
        try:
            self.manager.apply_resources(directory, resources)
            attach_device_filter(directory, program)  # before the init can run: fail closed
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # nothing has joined it yet
            raise

    async def exec_args(self) -> list[str]:
        """``--cgroup-hierarchy MOUNT --cgroup-hierarchy-root ROOT``: the exec helper finds
        the init's current cgroup itself and places the exec there. The mount is read from
        mountinfo in a worker thread the first time, then remembered."""
        if self._hierarchy is None:
            self._hierarchy = await trio.to_thread.run_sync(self.manager.hierarchy)
        mount_point, mount_root = self._hierarchy
        return ["--cgroup-hierarchy", mount_point, "--cgroup-hierarchy-root", mount_root]

    def directory(self, spec: dict[str, Any]) -> str | None:
        path = cgroups_path(spec)
        return self.manager.container_path(path) if path else None

    def remember_events(self, container_id: str, spec: dict[str, Any]) -> dict[str, int]:
        directory = self.directory(spec)
        if directory is None:
            return {}
        events = self.manager.read_memory_events(directory)
        if events:
            self._last_events[container_id] = events
        return self._last_events.get(container_id, {})

    async def remove(self, container_id: str, spec: dict[str, Any], *, tried: bool = False) -> None:
        directory = self.directory(spec)
        if directory is None:
            return
        if not tried:
            await trio.to_thread.run_sync(self.remember_events, container_id, spec)
        await self.manager.remove(directory, tried=tried)
        self._last_events.pop(container_id, None)

    def try_remove(self, container_id: str, spec: dict[str, Any]) -> bool:
        directory = self.directory(spec)
        if directory is None:
            return True
        self.remember_events(container_id, spec)
        if not self.manager.try_remove(directory):
            return False
        self._last_events.pop(container_id, None)
        return True


def container_statistics(
    hooks: CgroupHooks,
    containers: list[tuple[str, dict[str, Any]]],
    categories: set[int],
) -> list[Any]:
    """ContainerStats for each (id, spec), blocking (run it in a thread).

    Sources per docs/protocol.md §7.3; the network list is VM-wide and read once for the
    whole call.
    Without cgroups every category still answers as vminitd does for missing files.
    """
    from trinit._proto import sandbox_pb2 as pb
    from trinit.cgroup import read_network_stats, read_stats

    networks = read_network_stats() if pb.STAT_CATEGORY_NETWORK in categories else []
    replies = []
    for container_id, spec in containers:
        directory = hooks.directory(spec) or "/nonexistent/trinit-no-cgroup"
        saved = hooks.remember_events(container_id, spec)
        stats = read_stats(directory, categories, saved_memory_events=saved, networks=networks)
        stats.container_id = container_id
        replies.append(stats)
    return replies
