"""mount(8)-style option parsing, the one table for the exec helper and the Mount RPC.

Pure: a list of option strings becomes :class:`MountOptions`. Names in :data:`SET_FLAGS` set
a flag, names in :data:`CLEAR_FLAGS` clear one, propagation words (``rprivate``, ``shared``
...) become a separate propagation mount, ``defaults`` and empty strings are dropped, and
everything else is joined with "," into the data string. vminitd sends ``defaults`` and the
propagation words to the filesystem as data (docs/compat.md, Mount). Imported by the
fast-starting helper, so it depends on :mod:`trinit._linux` only.
"""

from __future__ import annotations

from trinit import _linux as linux

PAGE_LIMIT = 4096

SET_FLAGS: dict[str, int] = {
    "bind": linux.MS_BIND,
    "rbind": linux.MS_BIND | linux.MS_REC,
    "dirsync": linux.MS_DIRSYNC,
    "mand": linux.MS_MANDLOCK,
    "noatime": linux.MS_NOATIME,
    "nodev": linux.MS_NODEV,
    "nodiratime": linux.MS_NODIRATIME,
    "noexec": linux.MS_NOEXEC,
    "nosuid": linux.MS_NOSUID,
    "relatime": linux.MS_RELATIME,
    "remount": linux.MS_REMOUNT,
    "ro": linux.MS_RDONLY,
    "strictatime": linux.MS_STRICTATIME,
    "sync": linux.MS_SYNCHRONOUS,
}

CLEAR_FLAGS: dict[str, int] = {
    "async": linux.MS_SYNCHRONOUS,
    "atime": linux.MS_NOATIME,
    "dev": linux.MS_NODEV,
    "diratime": linux.MS_NODIRATIME,
    "exec": linux.MS_NOEXEC,
    "nomand": linux.MS_MANDLOCK,
    "norelatime": linux.MS_RELATIME,
    "nostrictatime": linux.MS_STRICTATIME,
    "rw": linux.MS_RDONLY,
    "suid": linux.MS_NOSUID,
}

PROPAGATION: dict[str, int] = {
    "private": linux.MS_PRIVATE,
    "rprivate": linux.MS_PRIVATE | linux.MS_REC,
    "shared": linux.MS_SHARED,
    "rshared": linux.MS_SHARED | linux.MS_REC,
    "slave": linux.MS_SLAVE,
    "rslave": linux.MS_SLAVE | linux.MS_REC,
    "unbindable": linux.MS_UNBINDABLE,
    "runbindable": linux.MS_UNBINDABLE | linux.MS_REC,
}

#: flags a bind mount ignores on creation and only takes from a MS_REMOUNT|MS_BIND call
PER_MOUNT_FLAGS = (
    linux.MS_RDONLY
    | linux.MS_NOSUID
    | linux.MS_NODEV
    | linux.MS_NOEXEC
    | linux.MS_NOATIME
    | linux.MS_NODIRATIME
    | linux.MS_RELATIME
    | linux.MS_STRICTATIME
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
        if not self.flags & linux.MS_BIND or not self.flags & PER_MOUNT_FLAGS:
            return 0
        return linux.MS_REMOUNT | linux.MS_BIND | (self.flags & PER_MOUNT_FLAGS)

    @property
    def skip_main_call(self) -> bool:
        """A data-less bind remount is done entirely by the bind remount call."""
        return bool(self.flags & linux.MS_REMOUNT and self.flags & linux.MS_BIND and not self.data)


# statvfs f_flag bits (ST_*) -> the MS_* flag a remount must keep
_STATFS_TO_MS: tuple[tuple[int, int], ...] = (
    (1, linux.MS_RDONLY),
    (2, linux.MS_NOSUID),
    (4, linux.MS_NODEV),
    (8, linux.MS_NOEXEC),
    (16, linux.MS_SYNCHRONOUS),
    (64, linux.MS_MANDLOCK),
    (1024, linux.MS_NOATIME),
    (2048, linux.MS_NODIRATIME),
    (4096, linux.MS_RELATIME),
    (8192, linux.MS_NOSYMFOLLOW),
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
