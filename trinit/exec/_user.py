"""Resolve an OCI user string against a container rootfs (docs/protocol.md §5.2 step 3).

Pure apart from reading ``<rootfs>/etc/passwd`` and ``<rootfs>/etc/group``, which the image
controls: both are read with :func:`trinit.exec._inroot.read_bounded` (resolved inside the
rootfs, regular files of at most 4 MiB only, never a blocking open). Blocking: callers run
it in a worker thread. A missing file counts as "no entries". Lookup failures raise
:class:`trinit.errors.Internal` (vminitd reports user-lookup errors as INTERNAL) with text
such as ``no such user: foo``; a FIFO, device or oversized file raises
:class:`trinit.errors.InvalidArgument` naming the file.

Accepted forms: ``user``, ``uid``, ``user:group``, ``uid:gid``, ``uid:group``, ``user:gid``.
"""

from __future__ import annotations

from dataclasses import dataclass

from trinit.errors import Internal
from trinit.exec._inroot import PASSWD_LIMIT, read_bounded

MAX_ID = 2147483647


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    home: str
    additional_gids: tuple[int, ...]
    """Supplementary groups (not including the primary gid)."""


@dataclass(frozen=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class _GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _read_in_root(rootfs: str, relpath: str) -> str | None:
    """The file's text, or None if it (or the rootfs) does not exist.

    Read with :func:`read_bounded`: a FIFO, a device or a file over 4 MiB planted by the
    image raises InvalidArgument instead of blocking or exhausting trinit's memory.
    """
    try:
        data = read_bounded(rootfs, relpath, PASSWD_LIMIT)
    except OSError as exc:
        raise Internal(f"failed to read /{relpath} in {rootfs}: {exc}") from None
    return None if data is None else data.decode("utf-8", "replace")


def _parse_int(text: str) -> int | None:
    if text.isascii() and text.isdigit():
        return int(text)
    return None


def _parse_passwd(text: str | None) -> list[_PasswdEntry]:
    entries: list[_PasswdEntry] = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 7:
            continue
        uid, gid = _parse_int(fields[2]), _parse_int(fields[3])
        if uid is None or gid is None:
            continue
        entries.append(_PasswdEntry(fields[0], uid, gid, fields[5]))
    return entries


def _parse_group(text: str | None) -> list[_GroupEntry]:
    entries: list[_GroupEntry] = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 4:
            continue
        gid = _parse_int(fields[2])
        if gid is None:
            continue
        members = tuple(m for m in fields[3].split(",") if m)
        entries.append(_GroupEntry(fields[0], gid, members))
    return entries


def _checked_id(value: int, kind: str, text: str) -> int:
    if value > MAX_ID:
        raise Internal(f"invalid {kind}: {text} out of range")
    return value


def resolve_user(rootfs: str, user_string: str) -> ResolvedUser:
    """Resolve ``user_string`` against the rootfs's passwd and group files.

    Raises :class:`trinit.errors.Internal` for an unknown user or group name or an
    out-of-range id.
    """
    user_part, sep, group_part = user_string.partition(":")
    group_given = bool(sep) and group_part != ""

    passwd = _parse_passwd(_read_in_root(rootfs, "etc/passwd"))
    user_id = _parse_int(user_part) if user_part else 0

    entry: _PasswdEntry | None
    if user_id is not None:
        _checked_id(user_id, "uid", user_part)
        entry = next((e for e in passwd if e.uid == user_id), None)
    else:
        entry = next((e for e in passwd if e.name == user_part), None)
        if entry is None:
            raise Internal(f"no such user: {user_part}")

    if entry is not None:
        uid, gid, home = entry.uid, entry.gid, entry.home or "/"
    else:
        assert user_id is not None
        uid, gid, home = user_id, 0, "/"

    supplementary: list[int] = []
    need_groups = group_given or entry is not None
    groups = _parse_group(_read_in_root(rootfs, "etc/group")) if need_groups else []
    if group_given:
        group_id = _parse_int(group_part)
        if group_id is not None:
            _checked_id(group_id, "gid", group_part)
            matches = [g for g in groups if g.gid == group_id]
            gid = group_id
        else:
            matches = [g for g in groups if g.name == group_part]
            if not matches:
                raise Internal(f"no such group: {group_part}")
            gid = matches[0].gid
        supplementary = [g.gid for g in matches]
    elif entry is not None:
        supplementary = [g.gid for g in groups if entry.name in g.members]

    return ResolvedUser(uid=uid, gid=gid, home=home, additional_gids=tuple(supplementary))
