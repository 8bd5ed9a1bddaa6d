"""Copy through a real socket pair standing in for the host's data listener: files, trees,
a malicious archive, errors, cancellation. The host side runs as a task of the test."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing
from notifylib import OpenWatch

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument, NotFound
from trinit.system import copy

HostSide = Callable[[trio.SocketStream], Awaitable[None]]
METADATA = pb.CopyResponse.METADATA
COMPLETE = pb.CopyResponse.COMPLETE


class FakeHost:
    """Accepts the guest's data connections (a socketpair per dial) and runs ``side`` on the
    host end of each, in the test's nursery."""

    def __init__(self, nursery: trio.Nursery, side: HostSide) -> None:
        self.nursery = nursery
        self.side = side
        self.ports: list[int] = []

    async def dial(self, port: int) -> trio.SocketStream:
        self.ports.append(port)
        guest, host = trio.socket.socketpair()
        self.nursery.start_soon(self.side, trio.SocketStream(host))
        return trio.SocketStream(guest)


def sender(data: bytes) -> HostSide:
    async def side(stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(data)

    return side


def receiver(into: bytearray) -> HostSide:
    async def side(stream: trio.SocketStream) -> None:
        async with stream:
            while chunk := await stream.receive_some(1 << 20):
                into.extend(chunk)

    return side


@contextlib.asynccontextmanager
async def unwrapped_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery that re-raises a lone exception as itself, so pytest.raises sees it."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def run_copy(
    request: pb.CopyRequest, side: HostSide
) -> tuple[list[pb.CopyResponse], FakeHost]:
    async with unwrapped_nursery() as nursery:
        host = FakeHost(nursery, side)
        async with contextlib.aclosing(copy(request, host.dial)) as responses:
            result = [r async for r in responses]
    return result, host


def pattern(size: int) -> bytes:
    block = bytes(range(256)) * 4096  # 1 MiB
    return (block * (size // len(block) + 1))[:size]


def targz(build: Callable[[tarfile.TarFile], None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return raw.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def add_entry(
    tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "", mode: int = 0o755
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    tar.addfile(info)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------- files


async def test_copy_in_file_10mib(tmp_path: Path) -> None:
    data = pattern(10 * 1024 * 1024 + 7)
    target = tmp_path / "a" / "b" / "big.bin"
    request = pb.CopyRequest(
        direction=pb.CopyRequest.COPY_IN,
        path=str(target),
        mode=0o600,
        create_parents=True,
        vsock_port=5000,
    )
    fds = open_fds()
    responses, host = await run_copy(request, sender(data))
    assert [r.status for r in responses] == [COMPLETE] and host.ports == [5000]
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o7777 == 0o600
    assert open_fds() == fds


async def test_copy_in_file_empty_and_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old content that is long")
    request = pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=str(target), vsock_port=1)
    await run_copy(request, sender(b""))
    assert target.read_bytes() == b""  # O_TRUNC
    new = tmp_path / "new"
    await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=str(new)), sender(b"\x00\xff")
    )
    assert new.read_bytes() == b"\x00\xff" and new.stat().st_mode & 0o777 == 0o644


async def test_copy_in_file_through_a_dangling_symlink_creates_its_target(
    tmp_path: Path,
) -> None:
    link = tmp_path / "link"
    link.symlink_to("target")
    await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=str(link)), sender(b"data")
    )
    assert link.is_symlink() and (tmp_path / "target").read_bytes() == b"data"
    assert (tmp_path / "target").stat().st_mode & 0o777 == 0o644


async def test_copy_in_file_missing_parent(tmp_path: Path) -> None:
    request = pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=str(tmp_path / "x" / "f"))
    with pytest.raises(Internal, match=r"^copy failed: .*\(ENOENT\)"):
        await run_copy(request, sender(b"data"))


async def test_copy_out_file(tmp_path: Path) -> None:
    data = pattern(3 * 1024 * 1024 + 5)
    source = tmp_path / "f.bin"
    source.write_bytes(data)
    received = bytearray()
    request = pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(source), vsock_port=7)
    async with trio.open_nursery() as nursery:
        host = FakeHost(nursery, receiver(received))
        async with contextlib.aclosing(copy(request, host.dial)) as responses:
            first = await responses.__anext__()
            assert host.ports == []  # METADATA goes out before the guest connects
            assert (first.status, first.is_archive, first.total_size) == (
                METADATA,
                False,
                len(data),
            )
            rest = [r async for r in responses]
    assert [r.status for r in rest] == [COMPLETE]
    assert not any(r.error for r in [first, *rest])
    assert bytes(received) == data


async def test_copy_out_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    received = bytearray()
    responses, _ = await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(tmp_path / "empty")),
        receiver(received),
    )
    assert responses[0].total_size == 0 and not responses[0].is_archive and received == b""


async def test_copy_out_missing_is_not_found_before_any_message(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    async with unwrapped_nursery() as nursery:
        host = FakeHost(nursery, receiver(bytearray()))
        got: list[pb.CopyResponse] = []
        with pytest.raises(NotFound) as info:
            async with contextlib.aclosing(
                copy(pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(path)), host.dial)
            ) as rs:
                got.extend([r async for r in rs])
    assert info.value.message == f"copy: path not found '{path}'"
    assert got == [] and host.ports == []


async def test_copy_out_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(Internal, match=r"not a regular file or a directory"):
        await run_copy(
            pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(tmp_path / "fifo")),
            receiver(bytearray()),
        )


async def test_unknown_direction_and_dial_failure(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^copy: unknown direction 7$"):
        await run_copy(
            pb.CopyRequest(direction=cast("pb.CopyRequest.Direction", 7), path=str(tmp_path)),
            receiver(bytearray()),
        )

    async def refuse(port: int) -> trio.SocketStream:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(
        Internal, match=r"^copy failed: cannot connect to host port 9: .*ECONNREFUSED"
    ):
        async with contextlib.aclosing(
            copy(
                pb.CopyRequest(
                    direction=pb.CopyRequest.COPY_IN, path=str(tmp_path / "f"), vsock_port=9
                ),
                refuse,
            )
        ) as rs:
            [r async for r in rs]


# ---------------------------------------------------------------- trees


def build_tree(root: Path) -> None:
    root.mkdir()
    (root / "empty_dir").mkdir()
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 1000)
    (root / "empty.txt").write_bytes(b"")
    (root / "exec.sh").write_text("#!/bin/sh\n")
    (root / "exec.sh").chmod(0o750)
    (root / "rel_link").symlink_to("a/b")
    (root / "abs_link").symlink_to("/etc/hostname")
    os.link(root / "binary.bin", root / "hard.bin")
    (root / "a").chmod(0o711)


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str | None]]:
    result: dict[str, tuple[str, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("dir", st.st_mode & 0o777, None)
            else:
                result[rel] = ("file", st.st_mode & 0o777, path.read_bytes())
    return result


async def test_directory_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "src"
    build_tree(source)
    archive = bytearray()
    out, _ = await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(source), vsock_port=3),
        receiver(archive),
    )
    assert [(r.status, r.is_archive, r.total_size) for r in out] == [
        (METADATA, True, 0),
        (COMPLETE, False, 0),
    ]

    # the archive: gzip, pax, "./" first, then relative names without "./"
    raw = gzip.decompress(bytes(archive))
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        members = tar.getmembers()
    assert members[0].name == "." and members[0].isdir()
    assert members[0].mode == source.stat().st_mode & 0o7777
    headers = [raw[i : i + 512] for i in range(0, len(raw), 512)]
    first_dir = next(h for h in headers if h[156:157] == tarfile.DIRTYPE and h[257:262] == b"ustar")
    assert first_dir[:100].rstrip(b"\0") == b"./"  # written as "./", as the host expects
    assert all(not m.name.startswith("./") and not m.name.startswith("/") for m in members[1:])
    names = {m.name for m in members[1:]}
    assert {"empty_dir", "a/b/c/deep.txt", "rel_link", "abs_link", "hard.bin"} <= names

    target = tmp_path / "dst" / "copy"
    fds = open_fds()
    responses, _ = await run_copy(
        pb.CopyRequest(
            direction=pb.CopyRequest.COPY_IN, path=str(target), is_archive=True, create_parents=True
        ),
        sender(bytes(archive)),
    )
    assert [r.status for r in responses] == [COMPLETE]
    assert open_fds() == fds
    assert snapshot(target) == snapshot(source)
    assert os.stat(target / "hard.bin").st_ino == os.stat(target / "binary.bin").st_ino


async def test_copy_out_through_symlink_to_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("x")
    (tmp_path / "alias").symlink_to("real")
    archive = bytearray()
    responses, _ = await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(tmp_path / "alias")),
        receiver(archive),
    )
    assert responses[0].is_archive
    with tarfile.open(fileobj=io.BytesIO(bytes(archive)), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [(m.name, m.isdir()) for m in members] == [(".", True), ("f", False)]


async def test_copy_out_empty_directory_has_one_entry(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    archive = bytearray()
    await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(tmp_path / "empty")),
        receiver(archive),
    )
    with tarfile.open(fileobj=io.BytesIO(bytes(archive)), mode="r:gz") as tar:
        assert [m.name for m in tar.getmembers()] == ["."]
    target = tmp_path / "restored"
    await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=str(target), is_archive=True),
        sender(bytes(archive)),
    )
    assert target.is_dir() and os.listdir(target) == []


async def test_malicious_archive_extracts_nothing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    target = tmp_path / "work" / "target"

    def build(tar: tarfile.TarFile) -> None:
        add_entry(tar, ".", tarfile.DIRTYPE)
        add_file(tar, "../escape", b"x")
        add_file(tar, "sub/../../escape2", b"x")
        add_file(tar, str(outside / "absolute"), b"x")
        add_entry(tar, "link", tarfile.SYMTYPE, linkname=str(outside))
        add_file(tar, "link/through", b"x")
        add_file(tar, "link/victim", b"overwritten")
        add_entry(tar, "rel", tarfile.SYMTYPE, linkname="../../outside")
        add_file(tar, "rel/through", b"x")
        add_entry(tar, "hard", tarfile.LNKTYPE, linkname=str(outside / "victim"))
        add_entry(tar, "hard2", tarfile.LNKTYPE, linkname="../outside/victim")
        add_entry(tar, "dev", tarfile.CHRTYPE)
        add_file(tar, "ok", b"fine", mode=0o4755)

    await run_copy(
        pb.CopyRequest(
            direction=pb.CopyRequest.COPY_IN, path=str(target), is_archive=True, create_parents=True
        ),
        sender(targz(build)),
    )
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "untouched"
    assert sorted(os.listdir(tmp_path)) == ["outside", "work"]
    assert sorted(os.listdir(tmp_path / "work")) == ["target"]
    assert sorted(os.listdir(target)) == ["link", "ok", "rel"]
    assert os.readlink(target / "link") == str(outside)  # kept as inert data, never followed
    assert (target / "ok").read_bytes() == b"fine"
    assert (target / "ok").stat().st_mode & 0o7777 == 0o755  # masked to 0o777


async def test_last_entry_wins(tmp_path: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        add_file(tar, "f", b"first")
        add_file(tar, "f", b"second")
        add_entry(tar, "d", tarfile.DIRTYPE)
        add_file(tar, "d/inner", b"x")
        add_file(tar, "d", b"file now")
        add_file(tar, "e", b"a file")
        add_entry(tar, "e", tarfile.DIRTYPE, mode=0o700)
        add_entry(tar, "s", tarfile.SYMTYPE, linkname="/nowhere")
        add_entry(tar, "s", tarfile.DIRTYPE)
        add_file(tar, "s/x", b"in a real dir")

    target = tmp_path / "t"
    (target).mkdir()
    (target / "f").write_text("pre-existing")
    await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=str(target), is_archive=True),
        sender(targz(build)),
    )
    assert (target / "f").read_bytes() == b"second"
    assert (target / "d").read_bytes() == b"file now"
    assert (target / "e").is_dir() and (target / "e").stat().st_mode & 0o777 == 0o700
    assert not (target / "s").is_symlink() and (target / "s" / "x").read_bytes() == b"in a real dir"


async def test_plain_tar_is_accepted(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_file(tar, "plain.txt", b"not compressed")
    target = tmp_path / "t"
    await run_copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=str(target), is_archive=True),
        sender(raw.getvalue()),
    )
    assert (target / "plain.txt").read_bytes() == b"not compressed"


async def test_archive_errors(tmp_path: Path) -> None:
    empty = targz(lambda tar: None)
    with pytest.raises(Internal, match=r"^copy failed: archive has no entries$"):
        await run_copy(
            pb.CopyRequest(
                direction=pb.CopyRequest.COPY_IN, path=str(tmp_path / "a"), is_archive=True
            ),
            sender(empty),
        )
    with pytest.raises(Internal, match=r"^copy failed: "):
        await run_copy(
            pb.CopyRequest(
                direction=pb.CopyRequest.COPY_IN, path=str(tmp_path / "b"), is_archive=True
            ),
            sender(b"\x1f\x8b garbage that is not gzip"),
        )
    truncated = targz(lambda tar: add_file(tar, "big", pattern(100_000)))[:-200]
    with pytest.raises(Internal, match=r"^copy failed: "):
        await run_copy(
            pb.CopyRequest(
                direction=pb.CopyRequest.COPY_IN, path=str(tmp_path / "c"), is_archive=True
            ),
            sender(truncated),
        )


def _stalling_host(
    data: bytes, sent: trio.Event, saw_eof: trio.Event
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A host that sends ``data``, then neither sends nor closes; notes when it sees EOF."""

    async def host(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(data)
            sent.set()
            with contextlib.suppress(trio.BrokenResourceError):
                while await stream.receive_some():
                    pass
            saw_eof.set()

    return host


async def _cancel_copy_once_stalled(
    nursery: trio.Nursery, host: FakeHost, request: pb.CopyRequest, stalled: trio.Event
) -> None:
    """Run ``copy`` and cancel it once ``stalled`` is set and every task waits; the copy must
    end promptly (worker threads notice cancellation within 100 ms)."""
    with trio.CancelScope() as scope:

        async def cancel_when_stalled() -> None:
            await stalled.wait()
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()

        nursery.start_soon(cancel_when_stalled)
        with trio.fail_after(10):
            async with contextlib.aclosing(copy(request, host.dial)) as rs:
                [r async for r in rs]
    assert scope.cancelled_caught


async def test_cancel_mid_archive_closes_everything(tmp_path: Path) -> None:
    half = targz(lambda tar: add_file(tar, "big", pattern(4 << 20)))
    sent, host_saw_eof = trio.Event(), trio.Event()
    fds = open_fds()
    async with trio.open_nursery() as nursery:
        host = FakeHost(nursery, _stalling_host(half[: len(half) // 2], sent, host_saw_eof))
        request = pb.CopyRequest(
            direction=pb.CopyRequest.COPY_IN, path=str(tmp_path / "t"), is_archive=True
        )
        await _cancel_copy_once_stalled(nursery, host, request, sent)
        with trio.fail_after(10):
            await host_saw_eof.wait()
    assert open_fds() == fds


async def test_cancel_mid_file_copy_in_stops_the_worker(tmp_path: Path) -> None:
    sent, host_saw_eof = trio.Event(), trio.Event()
    fds = open_fds()
    async with trio.open_nursery() as nursery:
        host = FakeHost(nursery, _stalling_host(pattern(1 << 20), sent, host_saw_eof))
        request = pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=str(tmp_path / "f"))
        await _cancel_copy_once_stalled(nursery, host, request, sent)
        with trio.fail_after(10):
            await host_saw_eof.wait()
    assert open_fds() == fds


async def test_cancel_mid_file_copy_out_to_a_host_that_never_reads(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(pattern(64 << 20))  # far more than the socket buffers hold
    connected, release = trio.Event(), trio.Event()

    async def idle_host(stream: trio.SocketStream) -> None:
        async with stream:
            connected.set()
            await release.wait()

    fds = open_fds()
    async with trio.open_nursery() as nursery:
        host = FakeHost(nursery, idle_host)
        request = pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(big))
        await _cancel_copy_once_stalled(nursery, host, request, connected)
        release.set()
    assert open_fds() == fds


class _EntryReadBeforeASwap:
    """A directory entry as read before its file was swapped: it says regular file."""

    def __init__(self, entry: os.DirEntry[str]) -> None:
        self._entry = entry
        self.name = entry.name

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return True

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return False


async def test_archive_never_opens_an_entry_swapped_for_a_fifo_or_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container can swap a file for a FIFO or a device node between the archiver's
    directory read and its open: the open must not happen (a FIFO's open is seen at its
    other end, a device's acts on the VM's device). The entries are archived as what they
    are by then."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"regular")
    os.mkfifo(tree / "p")
    os.mknod(tree / "d", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    real_scandir = os.scandir

    @contextlib.contextmanager
    def scandir_before_swap(fd: int) -> Iterator[list[_EntryReadBeforeASwap]]:
        with real_scandir(fd) as entries:
            yield [_EntryReadBeforeASwap(entry) for entry in entries]

    monkeypatch.setattr(os, "scandir", scandir_before_swap)
    archive = bytearray()
    with OpenWatch(tree / "p") as fifo, OpenWatch(tree / "d") as device:
        await run_copy(
            pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=str(tree)), receiver(archive)
        )
        assert (fifo.opens(), device.opens()) == (0, 0)
    with tarfile.open(fileobj=io.BytesIO(bytes(archive)), mode="r:gz") as tar:
        kinds = {m.name: m.type for m in tar.getmembers()}
        extracted = tar.extractfile("a")
        assert extracted is not None and extracted.read() == b"regular"
    assert kinds == {
        ".": tarfile.DIRTYPE, "a": tarfile.REGTYPE, "p": tarfile.FIFOTYPE, "d": tarfile.CHRTYPE,
    }  # fmt: skip
