"""User namespaces for the exec helper: id mappings, creating a namespace, entering it.

Imported by the exec helper (:mod:`trinit.exec._child`) at load time, so it depends on
:mod:`trinit._linux` and the standard library only, and every function is safe after ``fork()``.

Why a separate, throwaway process creates each user namespace: the maps of a new user
namespace (``/proc/<pid>/uid_map``, ``gid_map``) may only be written with arbitrary ranges
by a process that holds CAP_SETUID/CAP_SETGID in the *parent* namespace, so the process that
unshares cannot write its own maps. :func:`create` forks a child that only unshares
CLONE_NEWUSER and waits; the helper (still in the VM's user namespace) writes the maps, keeps
an fd of ``/proc/<child>/ns/user`` and lets the child exit. The helper then ``setns``\\es into
that namespace before it unshares the others (which the new user namespace thereby owns, as
with runc), and the same function gives idmapped mounts (:mod:`trinit.exec._idmap`) their
namespaces. ``setgroups`` is left at ``allow``: runc writes ``deny`` only when rootless, and
trinit always runs as the VM's root.
"""

from __future__ import annotations

import errno
import os

from trinit import _linux as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_MAP_LINES = 340
"""The kernel's limit of lines in one uid_map/gid_map (UID_GID_MAP_MAX_EXTENTS)."""

_ID_LIMIT = 1 << 32


class UsernsError(ValueError):
    """A spec or kernel problem, worded for the exec helper's error pipe (a ValueError, so
    the helper's stage wrapper reports it like its other failures)."""


def format_mappings(entries: object, where: str) -> str:
    """``[{containerID, hostID, size}, ...]`` as the text of a uid_map/gid_map file.

    Raises :class:`UsernsError` naming ``where`` for a wrong shape, an empty list or ids out
    of range; overlaps are left to the kernel (EINVAL when the map is written).
    """
    if not isinstance(entries, list) or not entries:
        raise UsernsError(f"{where}: needs at least one mapping")
    if len(entries) > MAX_MAP_LINES:
        raise UsernsError(f"{where}: more than {MAX_MAP_LINES} mappings")
    lines: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise UsernsError(f"{where}: each mapping must be an object")
        values: list[int] = []
        for key in ("containerID", "hostID", "size"):
            value = entry.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsernsError(f"{where}: {key} must be an integer")
            values.append(value)
        inside, outside, size = values
        if size < 1 or inside < 0 or outside < 0 or max(inside, outside) + size > _ID_LIMIT:
            raise UsernsError(f"{where}: mapping {inside} {outside} {size} is out of range")
        lines.append(f"{inside} {outside} {size}\n")
    return "".join(lines)


def _write_proc(pid: int, name: str, text: str) -> None:
    fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        data = text.encode()
        if os.write(fd, data) != len(data):
            raise OSError(errno.EIO, f"short write to {name}")
    finally:
        os.close(fd)


def create(uid_map: str, gid_map: str) -> int:
    """A new user namespace with these maps (text as :func:`format_mappings` makes).

    Returns an O_RDONLY, CLOEXEC fd of the namespace, owned by the caller. The namespace
    lives as long as that fd (or anything that joins it). The throwaway child is reaped
    here, before returning, also on failure.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    release_r, release_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        for fd in (ready_r, ready_w, release_r, release_w):
            os.close(fd)
        raise
    if pid == 0:  # the throwaway child: unshare, say so, wait until the parent is done
        status = 1
        try:
            os.close(ready_r)
            os.close(release_w)
            try:
                sc.unshare(sc.CLONE_NEWUSER)
            except OSError as exc:
                os.write(ready_w, os.strerror(exc.errno or 0).encode())
                raise
            os.write(ready_w, b"1")
            os.read(release_r, 1)  # EOF: the parent holds the namespace now, or gave up
            status = 0
        finally:
            os._exit(status)
    os.close(ready_w)
    os.close(release_r)
    try:
        answer = os.read(ready_r, 256)
        if answer != b"1":
            reason = answer.decode(errors="replace") or "the child died"
            raise UsernsError(f"unshare(CLONE_NEWUSER): {reason}")
        try:
            _write_proc(pid, "uid_map", uid_map)
        except OSError as exc:
            raise UsernsError(f"write uid_map: {exc}") from None
        try:
            _write_proc(pid, "gid_map", gid_map)
        except OSError as exc:
            raise UsernsError(f"write gid_map: {exc}") from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(release_w)
        os.waitpid(pid, 0)


def create_from_spec(linux: dict[str, Any]) -> int:
    """:func:`create` with ``linux.uidMappings``/``gidMappings`` (both required, as runc)."""
    uid_map = format_mappings(linux.get("uidMappings"), "linux.uidMappings")
    gid_map = format_mappings(linux.get("gidMappings"), "linux.gidMappings")
    return create(uid_map, gid_map)


def first(entry: object) -> bool:
    """Sort key putting the ``user`` entry of ``linux.namespaces`` first (False < True)."""
    return not (isinstance(entry, dict) and entry.get("type") == "user")


def enter_new(linux: dict[str, Any]) -> None:
    """Make a user namespace from ``linux``'s mappings and move this process into it.

    The caller must be single-threaded (the kernel refuses setns into a user namespace
    otherwise) and still in the VM's user namespace, where it may write any map.
    """
    fd = create_from_spec(linux)
    try:
        sc.setns(fd, sc.CLONE_NEWUSER)
    finally:
        os.close(fd)


def become_root() -> None:
    """After joining a user namespace: uid and gid 0 there, no supplementary groups.

    As runc does after the maps are written: the helper came in as the VM's root, which
    the namespace may not map at all (then it is "nobody" and cannot create files), and the
    mounts and the rest of the set-up run as the container's root.
    """
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as exc:
        raise UsernsError(f"become root in the user namespace (is 0 mapped?): {exc}") from None
    try:
        os.setgroups([])
    except OSError as exc:
        if exc.errno != errno.EPERM:  # setgroups is "deny" in a namespace made elsewhere
            raise UsernsError(f"setgroups in the user namespace: {exc}") from None


def exec_flag(parent_pid: int) -> int:
    """CLONE_NEWUSER if ``parent_pid`` (an init) is in another user namespace than we are.

    An exec must join the init's user namespace first, since that owns the init's other
    namespaces; setns refuses (EINVAL) to "join" the namespace a process is already in.
    """
    try:
        theirs = os.stat(f"/proc/{parent_pid}/ns/user")
        ours = os.stat("/proc/self/ns/user")
    except OSError:
        return 0
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        return 0
    return sc.CLONE_NEWUSER
