"""Mkdir, WriteFile, Stat and FilesystemOperation against real files in tmp_path.

FilesystemOperation's ioctls only ever run for real on a tmpfs inside a private mount
namespace: freezing the file system that holds tmp_path would freeze this machine.
"""

from __future__ import annotations

import errno
import os
import stat
import textwrap
from pathlib import Path

import pytest
from notifylib import OpenWatch
from nslib import run_in_private_mount_ns

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument, NotFound
from trinit.system import FsIoctl, filesystem_operation, mkdir, write_file
from trinit.system import stat as stat_rpc
from trinit.system._files import FIFREEZE, FITHAW, FITRIM

Flags = pb.WriteFileRequest.WriteFileFlags


# ---------------------------------------------------------------- Mkdir


async def test_mkdir_honours_perms_exactly(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        await mkdir(pb.MkdirRequest(path=str(tmp_path / "a"), perms=0o755))
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o7777 == 0o755


async def test_mkdir_all_creates_parents_and_keeps_existing(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "z"
    await mkdir(pb.MkdirRequest(path=str(target), all=True, perms=0o700))
    assert target.stat().st_mode & 0o777 == 0o700
    target.chmod(0o751)
    await mkdir(pb.MkdirRequest(path=str(target), all=True, perms=0o700))
    assert target.stat().st_mode & 0o777 == 0o751  # existing directory untouched


async def test_mkdir_errors(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(Internal, match=r"^mkdir: .*File exists \(EEXIST\)"):
        await mkdir(pb.MkdirRequest(path=str(tmp_path / "d")))
    with pytest.raises(Internal, match=r"^mkdir: .*\(ENOENT\)"):
        await mkdir(pb.MkdirRequest(path=str(tmp_path / "missing" / "d")))
    (tmp_path / "file").write_text("")
    with pytest.raises(Internal, match=r"^mkdir: "):
        await mkdir(pb.MkdirRequest(path=str(tmp_path / "file"), all=True))


async def test_mkdir_zero_perms_uses_default(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        await mkdir(pb.MkdirRequest(path=str(tmp_path / "d")))
    finally:
        os.umask(old)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


# ---------------------------------------------------------------- WriteFile


async def test_write_file_create_with_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f"
    request = pb.WriteFileRequest(
        path=str(path),
        data=b"hello",
        mode=0o640,
        flags=Flags(create_parent_dirs=True, create_if_missing=True),
    )
    await write_file(request)
    assert path.read_bytes() == b"hello"
    assert path.stat().st_mode & 0o7777 == 0o640


async def test_write_file_through_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    """As vminitd's O_CREAT: an image's ``etc/resolv.conf -> ../run/resolv.conf`` works."""
    (tmp_path / "run").mkdir()
    link = tmp_path / "resolv.conf"
    link.symlink_to("run/resolv.conf")
    request = pb.WriteFileRequest(
        path=str(link), data=b"x", mode=0o640, flags=Flags(create_if_missing=True)
    )
    await write_file(request)
    target = tmp_path / "run" / "resolv.conf"
    assert link.is_symlink() and target.read_bytes() == b"x"
    assert target.stat().st_mode & 0o7777 == 0o640


async def test_write_file_default_mode_is_0644(tmp_path: Path) -> None:
    path = tmp_path / "f"
    await write_file(
        pb.WriteFileRequest(path=str(path), data=b"", flags=Flags(create_if_missing=True))
    )
    assert path.stat().st_mode & 0o7777 == 0o644


async def test_write_file_truncates_without_append(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a long old content")
    path.chmod(0o600)
    await write_file(
        pb.WriteFileRequest(
            path=str(path), data=b"new", mode=0o777, flags=Flags(create_if_missing=True)
        )
    )
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600  # mode applies only on creation


async def test_write_file_append(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one ")
    await write_file(pb.WriteFileRequest(path=str(path), data=b"two", flags=Flags(append=True)))
    assert path.read_bytes() == b"one two"


async def test_write_file_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(Internal, match=r"^writeFile: failed to open file: .*\(ENOENT\)"):
        await write_file(pb.WriteFileRequest(path=str(tmp_path / "nope"), data=b"x"))
    with pytest.raises(Internal, match=r"^writeFile: failed to open file: "):
        await write_file(
            pb.WriteFileRequest(
                path=str(tmp_path / "a" / "b"), data=b"x", flags=Flags(create_if_missing=True)
            )
        )


async def test_write_file_parent_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(Internal, match=r"^writeFile: .*\(EEXIST\)"):
        await write_file(
            pb.WriteFileRequest(
                path=str(tmp_path / "file" / "x"),
                data=b"x",
                flags=Flags(create_parent_dirs=True, create_if_missing=True),
            )
        )


async def test_write_file_to_fifo_without_reader_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(Internal, match=r"\(ENXIO\)"):
        await write_file(pb.WriteFileRequest(path=str(fifo), data=b"x"))


# ---------------------------------------------------------------- Stat


def _check_stat(message: pb.Stat, st: os.stat_result) -> None:
    assert message.dev == st.st_dev and message.ino == st.st_ino
    assert message.mode == st.st_mode and message.nlink == st.st_nlink
    assert message.uid == st.st_uid and message.gid == st.st_gid
    assert message.rdev == st.st_rdev and message.size == st.st_size
    assert message.blksize == st.st_blksize and message.blocks == st.st_blocks
    for name in ("atime", "mtime", "ctime"):
        ts = getattr(message, name)
        assert ts.seconds * 1_000_000_000 + ts.nanos == getattr(st, f"st_{name}_ns")


async def test_stat_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    os.utime(path, ns=(1_000_000_123, 2_500_000_789))
    response = await stat_rpc(pb.StatRequest(path=str(path)))
    assert not response.error
    _check_stat(response.stat, os.stat(path))
    assert stat.S_ISREG(response.stat.mode) and response.stat.size == 5
    assert (response.stat.mtime.seconds, response.stat.mtime.nanos) == (2, 500_000_789)


async def test_stat_dir_symlink_fifo(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to("d")
    os.mkfifo(tmp_path / "fifo")
    for name, check in (("d", stat.S_ISDIR), ("link", stat.S_ISDIR), ("fifo", stat.S_ISFIFO)):
        response = await stat_rpc(pb.StatRequest(path=str(tmp_path / name)))
        assert check(response.stat.mode), name
        _check_stat(response.stat, os.stat(tmp_path / name))


async def test_stat_missing_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    with pytest.raises(NotFound) as info:
        await stat_rpc(pb.StatRequest(path=str(path)))
    assert info.value.message == f"stat: path not found '{path}'"
    (tmp_path / "dangling").symlink_to("nowhere")
    with pytest.raises(NotFound):
        await stat_rpc(pb.StatRequest(path=str(tmp_path / "dangling")))


async def test_stat_other_errno_is_ok_with_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    response = await stat_rpc(pb.StatRequest(path=str(tmp_path / "f" / "x")))
    assert response.error == "Not a directory (ENOTDIR)"
    assert not response.HasField("stat")


async def test_stat_nul_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        await stat_rpc(pb.StatRequest(path="a\x00b"))


# ---------------------------------------------------------------- FilesystemOperation


class FakeIoctl:
    def __init__(self, trimmed: int = 0, error: int | None = None) -> None:
        self.calls: list[tuple[int, bytes]] = []
        self.trimmed = trimmed
        self.error = error

    def __call__(self, fd: int, request: int, buf: bytearray) -> None:
        os.fstat(fd)  # the fd is open
        self.calls.append((request, bytes(buf)))
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        if request == FITRIM:
            buf[8:16] = self.trimmed.to_bytes(8, "little")


async def test_fs_operation_freeze_thaw(tmp_path: Path) -> None:
    fake = FakeIoctl()
    for op, code in (("freeze", FIFREEZE), ("thaw", FITHAW)):
        request = pb.FilesystemOperationRequest(path=str(tmp_path), **{op: {}})
        response = await filesystem_operation(request, ioctl=FsIoctl(fake))
        assert not response.HasField("trim")
        assert fake.calls[-1][0] == code


async def test_fs_operation_trim_reports_trimmed_bytes(tmp_path: Path) -> None:
    fake = FakeIoctl(trimmed=123456)
    request = pb.FilesystemOperationRequest(
        path=str(tmp_path), trim=pb.FiTrimParams(one_shot=pb.FiTrimParams.OneShot())
    )
    response = await filesystem_operation(request, ioctl=FsIoctl(fake))
    assert response.trim.trimmed_bytes == 123456
    code, buf = fake.calls[0]
    assert code == FITRIM
    assert buf == (0).to_bytes(8, "little") + (2**64 - 1).to_bytes(8, "little") + bytes(8)


async def test_fs_operation_errors(tmp_path: Path) -> None:
    fake = FsIoctl(FakeIoctl())
    with pytest.raises(InvalidArgument, match=r"^path must be absolute$"):
        await filesystem_operation(pb.FilesystemOperationRequest(path="rel", freeze={}), ioctl=fake)
    with pytest.raises(InvalidArgument, match=r"no operation"):
        await filesystem_operation(pb.FilesystemOperationRequest(path=str(tmp_path)), ioctl=fake)
    with pytest.raises(InvalidArgument, match=r"one_shot"):
        await filesystem_operation(
            pb.FilesystemOperationRequest(path=str(tmp_path), trim={}), ioctl=fake
        )
    with pytest.raises(NotFound, match=r"^failed to stat path: "):
        await filesystem_operation(
            pb.FilesystemOperationRequest(path=str(tmp_path / "nope"), freeze={}), ioctl=fake
        )
    (tmp_path / "link").symlink_to(".")
    with pytest.raises(Internal, match=r"^path cannot be a symlink"):
        await filesystem_operation(
            pb.FilesystemOperationRequest(path=str(tmp_path / "link"), freeze={}), ioctl=fake
        )
    failing = FsIoctl(FakeIoctl(error=errno.EOPNOTSUPP))
    with pytest.raises(Internal, match=r"^filesystemOperation: freeze .*Operation not supported"):
        await filesystem_operation(
            pb.FilesystemOperationRequest(path=str(tmp_path), freeze={}), ioctl=failing
        )


async def test_fs_operation_never_opens_a_fifo_or_device(tmp_path: Path) -> None:
    """freeze, thaw and trim act on a file system through any of its files, but only a
    directory or a regular file is opened for it: the open of a device node (planted in a
    rootfs the path lies in, say) is an open of the VM's device, and an ioctl on it goes
    to that device's driver."""
    os.mkfifo(tmp_path / "fifo")
    os.mknod(tmp_path / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    for name, kind in (("fifo", "a FIFO"), ("dev", "a character device")):
        fake = FakeIoctl()
        with OpenWatch(tmp_path / name) as watch:
            with pytest.raises(
                Internal, match=f"^failed to open path: '.*/{name}' is {kind}, not a directory"
            ):
                await filesystem_operation(
                    pb.FilesystemOperationRequest(path=str(tmp_path / name), freeze={}),
                    ioctl=FsIoctl(fake),
                )
            assert watch.opens() == 0
        assert fake.calls == []
    (tmp_path / "file").write_text("x")  # a regular file still names its file system
    fake = FakeIoctl()
    request = pb.FilesystemOperationRequest(path=str(tmp_path / "file"), freeze={})
    await filesystem_operation(request, ioctl=FsIoctl(fake))
    assert [code for code, _ in fake.calls] == [FIFREEZE]


_REAL_IOCTL = textwrap.dedent(
    """
    import json, os, sys, trio
    from trinit._proto import sandbox_pb2 as pb
    from trinit._proto.sandbox_pb2 import FiTrimParams
    from trinit.system import filesystem_operation
    from trinit._linux import mount
    from trinit.errors import TrinitError

    target = sys.argv[1]
    mount("tmpfs", target, "tmpfs", 0, "size=1m")
    out = {}
    async def main():
        for name, kw in (("freeze", {"freeze": {}}), ("thaw", {"thaw": {}}),
                         ("trim", {"trim": FiTrimParams(one_shot=FiTrimParams.OneShot())})):
            try:
                await filesystem_operation(pb.FilesystemOperationRequest(path=target, **kw))
                out[name] = "ok"
            except TrinitError as e:
                out[name] = [int(e.code), e.message]
    trio.run(main)
    print(json.dumps(out))
    """
)


def test_fs_operation_real_ioctls_on_private_tmpfs(tmp_path: Path) -> None:
    target = tmp_path / "fs"
    target.mkdir()
    out = run_in_private_mount_ns(_REAL_IOCTL, str(target))
    # tmpfs supports none of them: the kernel's refusal reaches the message
    for name in ("freeze", "thaw", "trim"):
        code, message = out[name]
        assert code == 13 and message.startswith(f"filesystemOperation: {name} "), out


async def test_fs_operation_below_a_rootfs_resolves_links_inside_it(tmp_path: Path) -> None:
    # A planted link must not aim a freeze at a VM file system outside the rootfs.
    from trinit.exec import add_root, remove_root

    root, outside = tmp_path / "rootfs", tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    inside = root / str(outside).lstrip("/") / "sub"
    inside.mkdir(parents=True)
    (root / "etc").mkdir()
    os.symlink(str(outside), root / "etc" / "x")
    seen: list[int] = []

    def record(fd: int, request: int, buf: bytearray) -> None:
        seen.append(os.fstat(fd).st_ino)

    add_root(str(root))
    try:
        request = pb.FilesystemOperationRequest(path=f"{root}/etc/x/sub", thaw=pb.FiThawParams())
        await filesystem_operation(request, ioctl=FsIoctl(record))
    finally:
        remove_root(str(root))
    assert seen == [inside.stat().st_ino]
