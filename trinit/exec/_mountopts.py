"""mount(8)-style option parsing, the one table for the exec helper and the Mount RPC.

Pure: a list of option strings becomes :class:`MountOptions`. Names in :data:`SET_FLAGS` set
a flag, names in :data:`CLEAR_FLAGS` clear one, propagation words (``rprivate``, ``shared``
...) become a separate propagation mount, ``defaults`` and empty strings are dropped, and
everything else is joined with "," into the data string. vminitd sends ``defaults`` and the
propagation words to the filesystem as data (docs/compat.md, Mount). Imported by the
fast-starting helper, so it depends on :mod:`_syscalls` only.
"""

from __future__ import annotations

from trinit.exec import _syscalls as sc

PAGE_LIMIT = 4096

SET_FLAGS: dict[str, int] = {
    "bind": sc.MS_BIND,
    "rbind": sc.MS_BIND | sc.MS_REC,
    "dirsync": sc.MS_DIRSYNC,
    "mand": sc.MS_MANDLOCK,
    "noatime": sc.MS_NOATIME,
    "nodev": sc.MS_NODEV,
    "nodiratime": sc.MS_NODIRATIME,
    "noexec": sc.MS_NOEXEC,
    "nosuid": sc.MS_NOSUID,
    "relatime": sc.MS_RELATIME,
    "remount": sc.MS_REMOUNT,
    "ro": sc.MS_RDONLY,
    "strictatime": sc.MS_STRICTATIME,
    "sync": sc.MS_SYNCHRONOUS,
}

CLEAR_FLAGS: dict[str, int] = {
    "async": sc.MS_SYNCHRONOUS,
    "atime": sc.MS_NOATIME,
    "dev": sc.MS_NODEV,
    "diratime": sc.MS_NODIRATIME,
    "exec": sc.MS_NOEXEC,
    "nomand": sc.MS_MANDLOCK,
    "norelatime": sc.MS_RELATIME,
    "nostrictatime": sc.MS_STRICTATIME,
    "rw": sc.MS_RDONLY,
    "suid": sc.MS_NOSUID,
}

PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

#: flags a bind mount ignores on creation and only takes from a MS_REMOUNT|MS_BIND call
PER_MOUNT_FLAGS = (
    sc.MS_RDONLY
    | sc.MS_NOSUID
    | sc.MS_NODEV
    | sc.MS_NOEXEC
    | sc.MS_NOATIME
    | sc.MS_NODIRATIME
    | sc.MS_RELATIME
    | sc.MS_STRICTATIME
)


class MountOptions:
    """What :func:`parse_options` made of option strings (a plain class: the helper avoids
    the dataclasses import)."""

    __slots__ = ("data", "flags", "propagation")

    def __init__(self, flags: int, propagation: int, data: str) -> None:
        self.flags = flags
        self.propagation = propagation
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MountOptions) and (self.flags, self.propagation, self.data) == (
            other.flags,
            other.propagation,
            other.data,
        )

    def __repr__(self) -> str:
        return (
            f"MountOptions(flags={self.flags:#x}, propagation={self.propagation:#x}, "
            f"data={self.data!r})"
        )

    @property
    def bind_remount_flags(self) -> int:
        """Flags for the MS_REMOUNT|MS_BIND call a bind mount needs (0: none needed)."""
        if not self.flags & sc.MS_BIND or not self.flags & PER_MOUNT_FLAGS:
            return 0
        return sc.MS_REMOUNT | sc.MS_BIND | (self.flags & PER_MOUNT_FLAGS)

    @property
    def skip_main_call(self) -> bool:
        """A data-less bind remount is done entirely by the bind remount call."""
        return bool(self.flags & sc.MS_REMOUNT and self.flags & sc.MS_BIND and not self.data)


# statvfs f_flag bits (ST_*) -> the MS_* flag a remount must keep
_STATFS_TO_MS: tuple[tuple[int, int], ...] = (
    (1, sc.MS_RDONLY),
    (2, sc.MS_NOSUID),
    (4, sc.MS_NODEV),
    (8, sc.MS_NOEXEC),
    (16, sc.MS_SYNCHRONOUS),
    (64, sc.MS_MANDLOCK),
    (1024, sc.MS_NOATIME),
    (2048, sc.MS_NODIRATIME),
    (4096, sc.MS_RELATIME),
    (8192, sc.MS_NOSYMFOLLOW),
)


def parse_options(options: list[str] | tuple[str, ...]) -> MountOptions:
    """Split options into flags, propagation and data; ValueError if data exceeds a page."""
    flags = 0
    propagation = 0
    data: list[str] = []
    for option in options:
        if option in SET_FLAGS:
            flags |= SET_FLAGS[option]
        elif option in CLEAR_FLAGS:
            flags &= ~CLEAR_FLAGS[option]
        elif option in PROPAGATION:
            propagation |= PROPAGATION[option]
        elif option in ("", "defaults"):
            continue
        else:
            data.append(option)
    text = ",".join(data)
    if len(text.encode()) >= PAGE_LIMIT:
        raise ValueError("mount data is longer than a page")
    return MountOptions(flags, propagation, text)


def statfs_mount_flags(f_flag: int) -> int:
    """The MS_* flags matching a statvfs ``f_flag`` (locked flags a remount must repeat)."""
    flags = 0
    for st_bit, ms_bit in _STATFS_TO_MS:
        if f_flag & st_bit:
            flags |= ms_bit
    return flags
