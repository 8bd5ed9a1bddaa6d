"""mount(8)-style option parsing shared by the exec helper and the Mount RPC (spec section 4).

Pure: a list of option strings becomes ``(flags, data)``. Names in :data:`SET_FLAGS` set a
flag, names in :data:`CLEAR_FLAGS` clear one, and everything else (including ``defaults``
and propagation words such as ``rprivate``, as in vminitd) is joined with "," into the data
string. Imported by the fast-starting helper, so it depends on :mod:`_syscalls` only.
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


def parse_options(options: list[str]) -> tuple[int, str]:
    """``(flags, data)`` for mount(2); raises ValueError if data is longer than a page."""
    flags = 0
    data: list[str] = []
    for option in options:
        if option in SET_FLAGS:
            flags |= SET_FLAGS[option]
        elif option in CLEAR_FLAGS:
            flags &= ~CLEAR_FLAGS[option]
        else:
            data.append(option)
    text = ",".join(data)
    if len(text) > PAGE_LIMIT:
        raise ValueError("mount data is longer than a page")
    return flags & ~sc.MS_PROPAGATION, text


def statfs_mount_flags(f_flag: int) -> int:
    """The MS_* flags matching a statvfs ``f_flag`` (locked flags a remount must repeat)."""
    flags = 0
    for st_bit, ms_bit in _STATFS_TO_MS:
        if f_flag & st_bit:
            flags |= ms_bit
    return flags
