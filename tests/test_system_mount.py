"""Mount/Umount: the option table, hot-plug and EBUSY retries under MockClock with exact
virtual times (fake syscalls), and real mounts inside a private mount namespace."""

from __future__ import annotations

import errno
import os
import textwrap
from pathlib import Path

import pytest
import trio
from nslib import run_in_private_mount_ns

from trinit._linux import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
)
from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument
from trinit.system import MountSyscalls, mount, parse_options, umount


def test_parse_options_table() -> None:
    opts = parse_options(["ro", "nosuid", "nodev", "size=10m", "mode=755"])
    assert opts.flags == MS_RDONLY | MS_NOSUID | MS_NODEV
    assert opts.data == "size=10m,mode=755"
    assert opts.propagation == 0
    # clearing names undo earlier setting names, in order
    assert parse_options(["ro", "rw", "noexec", "exec"]).flags == 0
    assert parse_options(["rbind"]).flags == MS_BIND | MS_REC
    # devpts options from the host's standard setup all go to data
    assert (
        parse_options(["gid=5", "mode=620", "ptmxmode=666"]).data == "gid=5,mode=620,ptmxmode=666"
    )


def test_parse_options_fixes_vminitd_quirks() -> None:
    opts = parse_options(["defaults", "", "rprivate", "shared", "lowerdir=/a"])
    assert opts.data == "lowerdir=/a"
    assert opts.propagation == MS_PRIVATE | MS_REC | MS_SHARED


class FakeMount:
    """Fails the first ``failures`` calls with ``error``; records (virtual time, args)."""

    def __init__(self, failures: int, error: int = errno.ENODEV) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[tuple[float, tuple[object, ...]]] = []
        self.cancel_on_call: tuple[int, trio.CancelScope] | None = None

    def _record(self, *args: object) -> None:
        now = trio.from_thread.run_sync(trio.current_time)
        self.calls.append((now, args))
        if self.cancel_on_call and self.cancel_on_call[0] == len(self.calls):
            trio.from_thread.run_sync(self.cancel_on_call[1].cancel)
        if len(self.calls) <= self.failures:
            raise OSError(self.error, os.strerror(self.error))

    def mount(self, *args: object) -> None:
        self._record(*args)

    def umount2(self, *args: object) -> None:
        self._record(*args)


def _syscalls(fake: FakeMount, tmp_path: Path) -> MountSyscalls:
    return MountSyscalls(
        mount=fake.mount, umount2=fake.umount2, pci_rescan_path=str(tmp_path / "rescan")
    )


async def test_hotplug_retry_succeeds_at_exact_times(
    tmp_path: Path, autojump_clock: object
) -> None:
    fake = FakeMount(failures=3)
    dest = tmp_path / "rootfs"
    request = pb.MountRequest(type="ext4", source="/dev/vdb", destination=str(dest), options=["ro"])
    await mount(request, syscalls=_syscalls(fake, tmp_path))
    times = [t for t, _ in fake.calls]
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert trio.current_time() == pytest.approx(0.3)
    assert (tmp_path / "rescan").read_text() == "1"
    assert dest.is_dir()
    assert fake.calls[0][1] == ("/dev/vdb", str(dest), "ext4", MS_RDONLY, None)


async def test_hotplug_retry_gives_up_with_first_error(
    tmp_path: Path, autojump_clock: object
) -> None:
    fake = FakeMount(failures=100)
    request = pb.MountRequest(type="virtiofs", source="rootfs", destination=str(tmp_path / "m"))
    with pytest.raises(Internal) as info:
        await mount(request, syscalls=_syscalls(fake, tmp_path))
    assert len(fake.calls) == 21
    assert trio.current_time() == pytest.approx(2.0)
    assert info.value.message.startswith("mount: virtiofs rootfs on ")
    assert "No such device (ENODEV)" in info.value.message


async def test_no_retry_for_other_sources(tmp_path: Path, autojump_clock: object) -> None:
    fake = FakeMount(failures=1, error=errno.EINVAL)
    request = pb.MountRequest(type="tmpfs", source="tmpfs", destination=str(tmp_path / "t"))
    with pytest.raises(Internal, match=r"^mount: tmpfs tmpfs on .*Invalid argument \(EINVAL\)"):
        await mount(request, syscalls=_syscalls(fake, tmp_path))
    assert len(fake.calls) == 1
    assert trio.current_time() == 0
    assert not (tmp_path / "rescan").exists()


async def test_a_destination_that_cannot_be_made_is_not_mounted_on(
    tmp_path: Path, autojump_clock: object
) -> None:
    fake = FakeMount(failures=0)
    (tmp_path / "file").write_text("x")
    request = pb.MountRequest(type="ext4", source="/dev/vdb", destination=str(tmp_path / "file/m"))
    with pytest.raises(Internal) as info:
        await mount(request, syscalls=_syscalls(fake, tmp_path))
    assert info.value.message.startswith("mount: ext4 /dev/vdb on ")
    assert ": preparing destination: " in info.value.message
    assert "File exists (EEXIST)" in info.value.message  # makedirs of the path's file
    assert fake.calls == []  # no mount, and no hot-plug retry for a block device
    assert not (tmp_path / "rescan").exists()


async def test_bind_of_file_creates_file_and_remounts(tmp_path: Path) -> None:
    fake = FakeMount(failures=0)
    source = tmp_path / "src.txt"
    source.write_text("x")
    dest = tmp_path / "a" / "b" / "file"
    request = pb.MountRequest(
        source=str(source), destination=str(dest), options=["bind", "ro", "noexec"]
    )
    await mount(request, syscalls=_syscalls(fake, tmp_path))
    assert dest.is_file() and dest.stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert [args for _, args in fake.calls] == [
        (str(source), str(dest), None, MS_BIND | MS_RDONLY | MS_NOEXEC, None),
        (None, str(dest), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOEXEC, None),
    ]


async def test_propagation_is_a_second_call(tmp_path: Path) -> None:
    fake = FakeMount(failures=0)
    dest = tmp_path / "d"
    request = pb.MountRequest(
        type="tmpfs", source="tmpfs", destination=str(dest), options=["rprivate"]
    )
    await mount(request, syscalls=_syscalls(fake, tmp_path))
    assert [args for _, args in fake.calls] == [
        ("tmpfs", str(dest), "tmpfs", 0, None),
        (None, str(dest), None, MS_PRIVATE | MS_REC, None),
    ]


async def test_mount_rejects_oversized_data_and_empty_destination(tmp_path: Path) -> None:
    fake = FakeMount(failures=0)
    big = pb.MountRequest(type="tmpfs", destination=str(tmp_path / "x"), options=["a" * 5000])
    with pytest.raises(Internal, match=r"longer than a page"):
        await mount(big, syscalls=_syscalls(fake, tmp_path))
    with pytest.raises(Internal, match=r"destination is empty"):
        await mount(pb.MountRequest(type="tmpfs"), syscalls=_syscalls(fake, tmp_path))
    assert fake.calls == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_umount_retries_ebusy_then_succeeds(tmp_path: Path, autojump_clock: object) -> None:
    fake = FakeMount(failures=2, error=errno.EBUSY)
    await umount(pb.UmountRequest(path="/x", flags=0), syscalls=_syscalls(fake, tmp_path))
    assert [t for t, _ in fake.calls] == pytest.approx([0.0, 0.01, 0.02])


async def test_umount_all_busy_detaches_lazily(tmp_path: Path, autojump_clock: object) -> None:
    fake = FakeMount(failures=51, error=errno.EBUSY)
    await umount(pb.UmountRequest(path="/x", flags=0), syscalls=_syscalls(fake, tmp_path))
    assert len(fake.calls) == 52
    assert fake.calls[50][0] == pytest.approx(0.5)
    assert fake.calls[51][0] == pytest.approx(0.5)
    assert fake.calls[51][1] == ("/x", MNT_DETACH)


async def test_umount_other_error_is_invalid_argument(
    tmp_path: Path, autojump_clock: object
) -> None:
    fake = FakeMount(failures=1, error=errno.EINVAL)
    with pytest.raises(InvalidArgument, match=r"^umount: /x: Invalid argument \(EINVAL\)$"):
        await umount(pb.UmountRequest(path="/x"), syscalls=_syscalls(fake, tmp_path))
    assert len(fake.calls) == 1 and trio.current_time() == 0


async def test_mount_cancelled_between_retries(tmp_path: Path, autojump_clock: object) -> None:
    """Cancelled while attempt 3 runs: that attempt completes (its thread is not abandoned),
    the retry loop stops at its next sleep, and no further mount is tried."""
    fake = FakeMount(failures=100)
    request = pb.MountRequest(type="virtiofs", source="tag", destination=str(tmp_path / "m"))
    with trio.CancelScope() as scope:
        fake.cancel_on_call = (3, scope)
        await mount(request, syscalls=_syscalls(fake, tmp_path))
    assert scope.cancelled_caught
    assert [t for t, _ in fake.calls] == pytest.approx([0.0, 0.1, 0.2])
    assert trio.current_time() == pytest.approx(0.2)


# ---------------------------------------------------------------- real mounts

_REAL = textwrap.dedent(
    """
    import json, os, sys, trio
    from trinit._proto import sandbox_pb2 as pb
    from trinit.system import mount, umount
    from trinit.errors import TrinitError

    base = sys.argv[1]
    out = {}

    def mountinfo(path):
        for line in open("/proc/self/mountinfo"):
            fields = line.split()
            if fields[4] == path:
                return fields
        return None

    async def main():
        tmp = f"{base}/tmpfs"
        await mount(pb.MountRequest(type="tmpfs", source="tmpfs", destination=tmp,
                                    options=["nosuid", "size=1m", "mode=700", "defaults"]))
        info = mountinfo(tmp)
        out["tmpfs_opts"] = info[5]
        out["tmpfs_mode"] = oct(os.stat(tmp).st_mode & 0o777)
        with open(f"{tmp}/f", "w") as f:
            f.write("hello")
        # bind of a file, read-only
        await mount(pb.MountRequest(source=f"{tmp}/f", destination=f"{base}/bind/f",
                                    options=["bind", "ro"]))
        out["bind_content"] = open(f"{base}/bind/f").read()
        try:
            open(f"{base}/bind/f", "w")
        except OSError as e:
            out["bind_write_errno"] = e.errno
        await umount(pb.UmountRequest(path=f"{base}/bind/f"))
        # remount read-only without data: vminitd skips it, trinit does it
        await mount(pb.MountRequest(destination=tmp, options=["remount", "ro"]))
        out["remounted_opts"] = mountinfo(tmp)[5]
        # a busy mount: detached lazily after the EBUSY retries
        keep = os.open(tmp, os.O_RDONLY)
        os.chdir(tmp)
        await umount(pb.UmountRequest(path=tmp))
        out["after_busy_umount"] = mountinfo(tmp)
        os.chdir("/")
        os.close(keep)
        try:
            await umount(pb.UmountRequest(path=tmp))
        except TrinitError as e:
            out["umount_unmounted"] = [int(e.code), e.message]
        try:
            await mount(pb.MountRequest(type="nosuchfs", source="x", destination=f"{base}/bad"))
        except TrinitError as e:
            out["bad_fs"] = [int(e.code), e.message]

    trio.run(main)
    print(json.dumps(out))
    """
)


def test_real_mounts_in_private_namespace(tmp_path: Path) -> None:
    out = run_in_private_mount_ns(_REAL, str(tmp_path))
    assert "nosuid" in out["tmpfs_opts"] and out["tmpfs_opts"].startswith("rw")
    assert out["tmpfs_mode"] == "0o700"
    assert out["bind_content"] == "hello"
    assert out["bind_write_errno"] == errno.EROFS
    assert out["remounted_opts"].startswith("ro")
    assert out["after_busy_umount"] is None
    assert out["umount_unmounted"][0] == 3 and out["umount_unmounted"][1].startswith("umount: ")
    assert out["bad_fs"][0] == 13 and "No such device (ENODEV)" in out["bad_fs"][1]
    # nothing leaked into this (the test's) mount namespace
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
