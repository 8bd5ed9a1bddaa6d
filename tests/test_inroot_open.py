"""Files read or written inside a rootfs are opened only once they are known to be regular.

A device node an image plants is the VM's device: opening it can act by itself (a watchdog
arms and resets the VM unless told otherwise, a serial line raises DTR, ptmx makes a
terminal), and a FIFO's open is seen by whoever waits at its other end. So a rootfs file is
looked up ``O_PATH`` first, checked with ``fstat``, and only then opened for its data.
inotify (tests/notifylib.py) sees every real open: there must be none of such a file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from notifylib import OpenWatch

from trinit.errors import InvalidArgument
from trinit.exec import add_root, read_bounded, remove_root
from trinit.system._paths import open_data

KINDS = {
    "character device": lambda path: os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 3)),
    "FIFO": lambda path: os.mkfifo(path, 0o644),
}


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    add_root(str(rootfs))
    try:
        yield rootfs
    finally:
        remove_root(str(rootfs))


@pytest.mark.parametrize("kind", KINDS)
def test_read_bounded_never_opens_a_planted_node(root: Path, kind: str) -> None:
    node = root / "etc" / "passwd"
    KINDS[kind](node)
    with OpenWatch(node) as watch:
        os.close(os.open(node, os.O_RDONLY | os.O_NONBLOCK))  # the control
        assert watch.opens() == 1
        with pytest.raises(InvalidArgument, match=f"/etc/passwd in {root} is a {kind}"):
            read_bounded(str(root), "etc/passwd", 1 << 20)
        assert watch.opens() == 0


@pytest.mark.parametrize("create", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_open_data_never_opens_a_planted_node(root: Path, kind: str, create: bool) -> None:
    node = root / "etc" / "hosts"
    KINDS[kind](node)
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_TRUNC | os.O_CLOEXEC
    with OpenWatch(node) as watch:
        with pytest.raises(InvalidArgument, match=f"is a {kind}, not a regular file"):
            open_data(str(node), flags, 0o644, create=create)
        assert watch.opens() == 0
    assert stat.S_ISREG(node.lstat().st_mode) is False  # left as it was


def test_regular_files_still_read_and_written(root: Path) -> None:
    passwd = root / "etc" / "passwd"
    passwd.write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    assert read_bounded(str(root), "etc/passwd", 1 << 20) == passwd.read_bytes()
    assert read_bounded(str(root), "etc/none", 1 << 20) is None
    with pytest.raises(InvalidArgument, match="larger than 4 bytes"):
        read_bounded(str(root), "etc/passwd", 4)
    # through a link that resolves inside the rootfs, with O_TRUNC honoured
    (root / "etc" / "link").symlink_to("/etc/passwd")
    fd = open_data(str(root / "etc" / "link"), os.O_WRONLY | os.O_TRUNC, 0o600, create=False)
    try:
        os.write(fd, b"new\n")
    finally:
        os.close(fd)
    assert passwd.read_bytes() == b"new\n"
    # created, with exactly the mode asked for
    fd = open_data(str(root / "etc" / "made"), os.O_WRONLY, 0o640, create=True)
    os.close(fd)
    assert stat.S_IMODE((root / "etc" / "made").stat().st_mode) == 0o640
    # a dangling link gets its target created inside the rootfs, as O_CREAT does
    (root / "etc" / "dangling").symlink_to("/etc/target")
    fd = open_data(str(root / "etc" / "dangling"), os.O_WRONLY, 0o644, create=True)
    os.close(fd)
    assert (root / "etc" / "target").is_file()
