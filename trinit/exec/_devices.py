"""OCI ``linux.devices``: the device nodes a container's /dev gets, made by the exec helper.

Each entry is created inside the rootfs (parents 0755, resolved with RESOLVE_IN_ROOT like
every other path of the root) as runc does it: ``mknodat`` with the entry's type (``c`` and
``u`` char, ``b`` block, ``p`` FIFO) and major:minor, then the node is checked (type and
rdev, through an O_PATH fd so a raced-in symlink is never followed), its mode set to exactly
``fileMode`` (default 0666; the umask does not apply) and its owner to ``uid``:``gid``
(default 0:0). An existing node is left as it is. If mknod is refused (EPERM: no
CAP_MKNOD, a user namespace), the VM's node at the same path is bind-mounted onto an empty
file instead, as runc does. ``/dev/ptmx`` is skipped: it is the devpts bind of
``_child._setup_dev``.

Granting access is separate: a node here does not let the container open it unless the
device rules (``linux.resources.devices``, enforced by the cgroup's device filter) allow
it, exactly as in runc.

Imported by the exec helper: stdlib and ``trinit._linux`` only.
"""

from __future__ import annotations

import errno
import os
import stat

from trinit import _linux as sc
from trinit.exec._rootpath import mkdir_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NODE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
DEFAULT_MODE = 0o666


class DeviceError(ValueError):
    """A device entry that cannot be honoured; the text names the entry and the reason."""


def _field(entry: dict[str, Any], name: str, default: int) -> int:
    value = entry.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DeviceError(f"{name} {value!r} is not a non-negative integer")
    return value


def create_device(root_fd: int, entry: dict[str, Any]) -> None:
    """Create one ``linux.devices`` entry in the root (``root_fd``: O_PATH to the rootfs)."""
    path = entry.get("path") or ""
    if not isinstance(path, str) or not path.startswith("/"):
        raise DeviceError(f"path {path!r} is not absolute")
    relpath = os.path.normpath(path).strip("/")
    if relpath in ("", "dev/ptmx") or relpath.startswith(".."):
        if relpath == "dev/ptmx":
            return
        raise DeviceError(f"path {path!r} names no file in the root")
    kind = entry.get("type")
    if kind not in NODE_TYPES:
        raise DeviceError(f"invalid device type {kind!r}")
    major, minor = _field(entry, "major", 0), _field(entry, "minor", 0)
    mode = stat.S_IMODE(_field(entry, "fileMode", DEFAULT_MODE))
    uid, gid = _field(entry, "uid", 0), _field(entry, "gid", 0)
    rdev = 0 if kind == "p" else os.makedev(major, minor)
    name = relpath.rpartition("/")[2]
    parent_fd = mkdir_all(root_fd, os.path.dirname(relpath))
    try:
        try:
            os.mknod(name, mode | NODE_TYPES[kind], rdev, dir_fd=parent_fd)
        except FileExistsError:
            return
        except PermissionError:
            _bind_from_vm(parent_fd, name, path)
            return
        node_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
    try:
        st = os.fstat(node_fd)
        if stat.S_IFMT(st.st_mode) != NODE_TYPES[kind] or st.st_rdev != rdev:
            raise DeviceError(f"the new node is {st.st_mode:o} {st.st_rdev:#x}, not what was made")
        os.chmod(f"/proc/self/fd/{node_fd}", mode)  # exact mode: mknod applied the umask
        os.chown(f"/proc/self/fd/{node_fd}", uid, gid)
    finally:
        os.close(node_fd)


def _bind_from_vm(parent_fd: int, name: str, source: str) -> None:
    """Bind the VM's ``source`` (the same path, outside the container) onto a new empty file."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(name, flags, 0o000, dir_fd=parent_fd))
    target_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        sc.mount(source, f"/proc/self/fd/{target_fd}", None, sc.MS_BIND, None)
    finally:
        os.close(target_fd)


def create_devices(root_fd: int, entries: list[dict[str, Any]]) -> None:
    """Create every ``linux.devices`` entry; DeviceError naming the first that fails."""
    for entry in entries:
        path = entry.get("path") if isinstance(entry, dict) else None
        try:
            if not isinstance(entry, dict):
                raise DeviceError("not an object")
            create_device(root_fd, entry)
        except (OSError, DeviceError) as exc:
            if isinstance(exc, OSError):
                reason = f"{exc.strerror} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
            else:
                reason = str(exc)
            raise DeviceError(f"create device {path}: {reason}") from None
