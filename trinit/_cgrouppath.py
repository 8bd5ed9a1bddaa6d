"""Which cgroup2 directory a process is in, from the text of its ``/proc/<pid>/cgroup``.

Standard library only, and no I/O: the exec helper (``trinit.exec._child``) finds its
container init's cgroup with it just before it forks the exec, and
:meth:`trinit.cgroup.CgroupManager.cgroup_of` answers with it. The ``0::<path>`` line is
relative to the reader's cgroup namespace root, which is the hierarchy's root for trinit
and its helpers; the hierarchy is mounted at ``mount_point`` showing its subtree
``mount_root`` (``/`` normally; a subtree in a nested test), so the directory is
``mount_point`` joined with ``<path>`` less ``mount_root``.
"""

from __future__ import annotations

import os


def v2_path(text: str) -> str | None:
    """The cgroup v2 path (the ``0::<path>`` line), or None when there is none."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def directory_of(text: str, mount_point: str, mount_root: str) -> str:
    """The cgroup2 directory a ``/proc/<pid>/cgroup`` text names, under ``mount_point``.

    Raises ValueError naming the reason when the text has no v2 line or its path leaves
    the reader's cgroup namespace (``..``: the process is in a cgroup above ours)."""
    path = v2_path(text)
    if path is None:
        raise ValueError("no cgroup v2 membership")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("its cgroup is outside our namespace")
    root_parts = [part for part in mount_root.split("/") if part]
    if parts[: len(root_parts)] == root_parts:
        parts = parts[len(root_parts) :]
    return os.path.join(mount_point, *parts)
