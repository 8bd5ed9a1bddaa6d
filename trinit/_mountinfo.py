"""Reading ``/proc/self/mountinfo``: which mounts exist, and which one holds a path.

Mount points there escape space, tab, newline and backslash as octal (``\\040`` ...); they are
decoded here once. Used to find mounts to undo before deleting a bundle (st_dev cannot tell:
a bind mount from the same filesystem has its parent's st_dev), and to tell whether a path
lies on cgroup2.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    root: str  # the mounted filesystem's subtree shown here (e.g. "/" or a bind source)
    fstype: str
    source: str


def _decode(field: str) -> str:
    if "\\" not in field:
        return field  # the common case: nothing escaped
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    """Every mount of this mount namespace, in mountinfo order (parents first)."""
    mounts = []
    with open(path, encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            head, _, tail = line.rstrip("\n").partition(" - ")
            fields, rest = head.split(" "), tail.split(" ")
            if len(fields) < 5 or len(rest) < 2:
                continue
            mounts.append(Mount(_decode(fields[4]), _decode(fields[3]), rest[0], _decode(rest[1])))
    return mounts


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def mount_containing(path: str) -> Mount | None:
    """The mount that holds ``path`` (the last, deepest mount on its way)."""
    target = os.path.realpath(path)
    best: Mount | None = None
    for mount in read_mounts():
        if _within(target, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest first (the order to unmount them)."""
    top = os.path.realpath(path)
    found = {m.mount_point for m in read_mounts() if _within(m.mount_point, top)}
    return sorted(found, key=lambda p: p.count("/"), reverse=True)
