"""Idmapped bind mounts (OCI ``mounts[].uidMappings``/``gidMappings``) for the exec helper.

The helper builds each one in two steps because of who may do what:

1. :func:`detach_all`, in the helper *before* it enters any namespace: ``open_tree`` with
   OPEN_TREE_CLONE makes a detached copy of the source mount and ``mount_setattr`` with
   MOUNT_ATTR_IDMAP gives it a user namespace made from the entry's mappings
   (:func:`trinit.exec._userns.create`). The kernel wants CAP_SYS_ADMIN in the user
   namespace of the source's filesystem, which is the VM's: a container root inside its
   own user namespace could not do this.
2. :func:`attach`, in the container init while it builds the root: ``move_mount`` puts the
   detached tree (the fd is inherited across the forks) on the destination, the place the
   plain ``mount(2)`` call would have used.

Mapping semantics are the kernel's and runc's: an id ``containerID`` on disk is seen (and
written) through the mount as ``hostID``. Only bind mounts can be idmapped, and both lists
are required. Imported by the helper at load time: stdlib and sibling modules only.
"""

from __future__ import annotations

import os

from trinit import _linux as sc
from trinit.exec._mountopts import parse_options
from trinit.exec._userns import UsernsError, create, format_mappings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

AT_FDCWD = -100


def is_idmapped(entry: dict[str, Any]) -> bool:
    """True if the OCI mount entry asks for an idmapped mount."""
    return bool(entry.get("uidMappings") or entry.get("gidMappings"))


def _detach_one(entry: dict[str, Any], userns_fd: int) -> int:
    opts = parse_options(list(entry.get("options") or []))
    recursive = sc.AT_RECURSIVE if opts.flags & sc.MS_REC else 0
    source = entry.get("source") or ""
    tree = sc.open_tree(AT_FDCWD, source, sc.OPEN_TREE_CLONE | recursive)
    try:
        sc.mount_setattr(
            tree, "", sc.AT_EMPTY_PATH | recursive, sc.MOUNT_ATTR_IDMAP, userns_fd=userns_fd
        )
    except BaseException:
        os.close(tree)
        raise
    return tree


def detach_all(mounts: list[dict[str, Any]]) -> dict[int, int]:
    """``{index in mounts: fd of its detached, idmapped tree}`` for every idmapped entry.

    The fds are CLOEXEC and owned by the caller (an unattached tree vanishes when its last
    fd closes). Entries with the same mappings share one user namespace. Raises
    :class:`UsernsError` (a ValueError) naming the mount for a bad entry, OSError from the
    kernel; fds made so far are closed then.
    """
    trees: dict[int, int] = {}
    namespaces: dict[tuple[str, str], int] = {}
    try:
        for index, entry in enumerate(mounts):
            if not is_idmapped(entry):
                continue
            where = f"mount {entry.get('destination')}"
            if not parse_options(list(entry.get("options") or [])).flags & sc.MS_BIND:
                raise UsernsError(f"{where}: only bind mounts can be idmapped")
            maps = (
                format_mappings(entry.get("uidMappings"), f"{where}: uidMappings"),
                format_mappings(entry.get("gidMappings"), f"{where}: gidMappings"),
            )
            if maps not in namespaces:
                namespaces[maps] = create(*maps)
            try:
                trees[index] = _detach_one(entry, namespaces[maps])
            except OSError as exc:
                raise UsernsError(f"{where}: idmapped mount: {exc}") from None
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    finally:
        for fd in namespaces.values():
            os.close(fd)
    return trees


def attach(tree: int, target_fd: int) -> None:
    """Mount the detached ``tree`` on ``target_fd`` (an O_PATH fd of the mount point)."""
    sc.move_mount(tree, "", target_fd, "", sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH)
