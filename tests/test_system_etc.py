"""install_etc_file: a file already holding exactly what would be written is left alone,
and finding that out never follows, opens or blocks on what an image planted there."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from notifylib import OpenWatch

from trinit.system import install_etc_file


def _install_in_thread(root: Path, name: str, data: bytes) -> None:
    """Install from a thread: a test fails instead of hanging if the install blocks."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            install_etc_file(str(root), name, data)
        except BaseException as exc:  # handed to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "install_etc_file blocked"
    if failure:
        raise failure[0]


def test_identical_file_is_not_rewritten(tmp_path: Path) -> None:
    """Same bytes, mode and owner: no new inode, no new mtime, no temporary left. A
    replace-by-rename of an existing file makes ext4 flush it (auto_da_alloc): 0.4 ms of
    every CreateProcess that names a hostname the rootfs already holds."""
    install_etc_file(str(tmp_path), "hostname", b"box\n")
    target = tmp_path / "etc" / "hostname"
    before = target.stat()
    install_etc_file(str(tmp_path), "hostname", b"box\n")
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert os.listdir(tmp_path / "etc") == ["hostname"]


def test_any_difference_is_replaced(tmp_path: Path) -> None:
    install_etc_file(str(tmp_path), "hostname", b"box\n")
    target = tmp_path / "etc" / "hostname"

    def replaced(data: bytes = b"box\n") -> None:
        inode = target.stat().st_ino
        install_etc_file(str(tmp_path), "hostname", data)
        st = target.stat()
        assert st.st_ino != inode
        assert target.read_bytes() == data
        assert stat.S_IMODE(st.st_mode) == 0o644
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())

    replaced(b"xyz\n")  # same length, other bytes
    replaced(b"xyz\nlonger\n")
    replaced(b"box\n")
    target.chmod(0o600)
    replaced()
    os.chown(target, 1000, 1000)
    replaced()


def test_symlink_to_identical_bytes_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"box\n")
    outside.chmod(0o644)
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "hostname").symlink_to(outside)
    install_etc_file(str(tmp_path / "rootfs"), "hostname", b"box\n")
    assert not (etc / "hostname").is_symlink()
    assert (etc / "hostname").read_bytes() == b"box\n"
    assert outside.read_bytes() == b"box\n"


def test_fifo_is_neither_opened_nor_waited_on(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    os.mkfifo(etc / "hostname")
    _install_in_thread(tmp_path, "hostname", b"box\n")
    assert stat.S_ISREG((etc / "hostname").lstat().st_mode)
    assert (etc / "hostname").read_bytes() == b"box\n"


def test_device_node_is_never_opened(tmp_path: Path) -> None:
    """A planted device node is the VM's device: opening one can act (a watchdog arms, a
    ptmx makes a terminal). inotify reports every real open of the node (not an O_PATH
    one): there must be none, even when the node's size and mode match."""
    etc = tmp_path / "etc"
    etc.mkdir()
    node = etc / "hostname"
    os.mknod(node, 0o644 | stat.S_IFCHR, os.makedev(1, 3))  # the VM's /dev/null: size 0
    node.chmod(0o644)
    with OpenWatch(node) as watch:
        os.close(os.open(node, os.O_RDONLY))  # the control: a real open is reported
        assert watch.opens() == 1
        _install_in_thread(tmp_path, "hostname", b"")  # b"": the node's size matches
        assert watch.opens() == 0
    assert stat.S_ISREG(node.lstat().st_mode)
