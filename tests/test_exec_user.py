"""User resolution against a rootfs's passwd and group files (docs/protocol.md §5.2 step 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trinit.errors import Internal
from trinit.exec import ResolvedUser, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
bin:x:1:1:bin:/bin:/sbin/nologin
# a comment
broken line
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
bin:x:1:root,alice
wheel:x:10:alice,bob
alice:x:1000:
bob:x:1001:
staff:x:50:
nogroup:x:65534:
"""


@pytest.fixture
def root(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return str(tmp_path)


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("root", ResolvedUser(0, 0, "/root", (1,))),
        ("0", ResolvedUser(0, 0, "/root", (1,))),
        ("", ResolvedUser(0, 0, "/root", (1,))),
        ("0:0", ResolvedUser(0, 0, "/root", (0,))),
        ("1", ResolvedUser(1, 1, "/bin", ())),
        ("bin", ResolvedUser(1, 1, "/bin", ())),
        ("1:1", ResolvedUser(1, 1, "/bin", (1,))),
        ("alice", ResolvedUser(1000, 1000, "/home/alice", (1, 10))),
        ("alice:staff", ResolvedUser(1000, 50, "/home/alice", (50,))),
        ("alice:50", ResolvedUser(1000, 50, "/home/alice", (50,))),
        ("alice:4242", ResolvedUser(1000, 4242, "/home/alice", ())),
        ("1001:wheel", ResolvedUser(1001, 10, "/home/bob", (10,))),
        ("1001", ResolvedUser(1001, 1001, "/home/bob", (10,))),
        ("40000", ResolvedUser(40000, 0, "/", ())),
        ("40000:40000", ResolvedUser(40000, 40000, "/", ())),
        ("40000:staff", ResolvedUser(40000, 50, "/", (50,))),
        ("nobody:", ResolvedUser(65534, 65534, "/nonexistent", ())),
        ("2147483647", ResolvedUser(2147483647, 0, "/", ())),
    ],
)
def test_forms(root: str, user: str, expected: ResolvedUser) -> None:
    assert resolve_user(root, user) == expected


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("foo", "no such user: foo"),
        ("foo:0", "no such user: foo"),
        ("alice:nosuchgroup", "no such group: nosuchgroup"),
        ("0:nosuchgroup", "no such group: nosuchgroup"),
        ("-1", "no such user: -1"),
        ("2147483648", "invalid uid: 2147483648 out of range"),
        ("0:2147483648", "invalid gid: 2147483648 out of range"),
    ],
)
def test_errors(root: str, user: str, message: str) -> None:
    with pytest.raises(Internal) as info:
        resolve_user(root, user)
    assert info.value.message == message


def test_missing_files_count_as_empty(tmp_path: Path) -> None:
    assert resolve_user(str(tmp_path), "0:0") == ResolvedUser(0, 0, "/", ())
    assert resolve_user(str(tmp_path), "40000:7") == ResolvedUser(40000, 7, "/", ())
    with pytest.raises(Internal, match=r"no such user: root"):
        resolve_user(str(tmp_path), "root")
    with pytest.raises(Internal, match=r"no such group: wheel"):
        resolve_user(str(tmp_path), "0:wheel")


def test_missing_rootfs_counts_as_empty(tmp_path: Path) -> None:
    assert resolve_user(str(tmp_path / "nope"), "5:5") == ResolvedUser(5, 5, "/", ())


def test_symlinks_resolve_inside_the_rootfs(tmp_path: Path) -> None:
    # An absolute symlink must not reach the machine's /etc/passwd.
    (tmp_path / "etc").mkdir()
    os.symlink("/elsewhere/passwd", tmp_path / "etc" / "passwd")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "passwd").write_text("daemon:x:7:8::/d:/bin/sh\n")
    assert resolve_user(str(tmp_path), "daemon") == ResolvedUser(7, 8, "/d", ())
    os.unlink(tmp_path / "etc" / "passwd")
    os.symlink("../../../../../../etc/hostname", tmp_path / "etc" / "passwd")
    with pytest.raises(Internal, match=r"no such user: root"):
        resolve_user(str(tmp_path), "root")


def test_unreadable_file_is_internal(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.symlink("passwd", tmp_path / "etc" / "passwd")  # ELOOP
    with pytest.raises(Internal, match=r"failed to read /etc/passwd in .*Too many levels"):
        resolve_user(str(tmp_path), "root")
