"""Nothing a container plants in its rootfs can block PID 1, bloat it, or redirect the host's
file RPCs to VM files outside that rootfs.

Each test builds a private busybox rootfs in its tmp dir (never the shared session rootfs),
plants what a hostile container would (links to a VM path outside, ``..`` chains, links
through ``/proc/self/root``, a FIFO, a device node, a huge file), mounts it where the host
mounts container rootfs (``/run/container/<id>/rootfs``) in a real agent, and then checks
the effect on a marker directory outside the rootfs that both this test and the agent see.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from rootfs import build_busybox_rootfs, test_spec

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent

SECRET = b"a VM file outside the rootfs\n"
Flags = pb.WriteFileRequest.WriteFileFlags


@dataclass
class Box:
    """A container rootfs (``local``: this test's view; ``root``: the agent's path)."""

    agent: LocalAgent
    cid: str
    root: str
    local: Path
    outside: Path

    @property
    def stub(self) -> object:
        return self.agent.host.stub

    def landing(self, way: str) -> Path:
        """Where a link made by :func:`_escapes` to the outside directory lands when it is
        resolved in the rootfs; created, as a directory of the container's own."""
        prefix = "proc/self/root/" if way == "proc" else ""
        path = self.local / (prefix + str(self.outside).lstrip("/"))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def plant(self, name: str, target: str | Path) -> str:
        """A symlink ``/etc/<name> -> target`` in the rootfs; its path as the host names it."""
        os.symlink(str(target), self.local / "etc" / name)
        return f"{self.root}/etc/{name}"


@pytest.fixture
def box(agent: LocalAgent, tmp_path: Path) -> Iterator[Box]:
    local = tmp_path / "rootfs"
    build_busybox_rootfs(str(local))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    cid = f"box{os.getpid()}"
    root = agent.host.mount_rootfs(cid, str(local))
    yield Box(agent, cid, root, local, outside)


def _escapes(box: Box, tail: str) -> dict[str, str]:
    """The three ways out: an absolute link, a ``..`` chain, ``/proc/self/root``."""
    target = str(box.outside) + tail
    return {
        "abs": target,
        "dotdot": "../" * 12 + target.lstrip("/"),
        "proc": "/proc/self/root" + target,
    }


def _error(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(request, timeout=60)  # type: ignore[operator]
        if hasattr(result, "__iter__"):
            list(result)
    return info.value


# ------------------------------------------------------------ item 2: user resolution


def _create(box: Box, username: str) -> grpc.RpcError:
    spec = test_spec(
        box.root, ["true"], process={"user": {"uid": 0, "gid": 0, "username": username}}
    )
    request = pb.CreateProcessRequest(
        id=box.cid, containerID=box.cid, configuration=json.dumps(spec).encode()
    )
    return _error(box.agent.host.stub.CreateProcess, request)


def test_fifo_passwd_is_refused_and_the_agent_keeps_answering(box: Box) -> None:
    passwd = box.local / "etc" / "passwd"
    passwd.unlink()
    os.mkfifo(passwd)
    outcome: list[grpc.RpcError] = []
    creating = threading.Thread(target=lambda: outcome.append(_create(box, "root")))
    creating.start()
    try:
        # answered while (or after) the create runs: nothing blocks the event loop
        box.agent.host.stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=30)
    finally:
        creating.join(90)
    assert outcome, "CreateProcess did not return"
    assert outcome[0].code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/etc/passwd" in outcome[0].details()
    assert "FIFO" in outcome[0].details()


def test_huge_passwd_is_refused(box: Box) -> None:
    with open(box.local / "etc" / "passwd", "ab") as file:
        file.write(b"#" * (5 << 20) + b"\n")
    error = _create(box, "root")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/etc/passwd" in error.details() and "larger than" in error.details()
    box.agent.host.stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=30)


def test_passwd_linked_to_a_zero_device_is_refused(box: Box) -> None:
    zero = box.local / "dev" / "zero"
    os.mknod(zero, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    passwd = box.local / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to("/dev/zero")  # resolved in the rootfs: its own dev/zero node
    error = _create(box, "root")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/etc/passwd" in error.details() and "character device" in error.details()
    box.agent.host.stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=30)


@pytest.mark.parametrize("way", ["abs", "dotdot", "proc"])
def test_passwd_linked_outside_is_read_inside(box: Box, way: str) -> None:
    (box.outside / "passwd").write_text("intruder:x:4242:4242::/x:/bin/sh\n")
    passwd = box.local / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to(_escapes(box, "/passwd")[way])
    error = _create(box, "intruder")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "no such user: intruder" in error.details()


# ------------------------------------------------------ item 3: host file RPCs in a rootfs


@pytest.mark.parametrize("way", ["abs", "dotdot", "proc"])
def test_stat_resolves_links_inside_the_rootfs(box: Box, way: str) -> None:
    stub = box.agent.host.stub
    path = box.plant("s", _escapes(box, "/secret")[way])
    try:
        reply = stub.Stat(pb.StatRequest(path=path), timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert reply.error and not reply.HasField("stat")
    # a link to a file of the container finds that file
    (box.local / "inner").write_bytes(b"inside!")
    path = box.plant("to_inner", "/inner")
    assert stub.Stat(pb.StatRequest(path=path), timeout=60).stat.size == 7


@pytest.mark.parametrize("way", ["abs", "dotdot", "proc"])
def test_write_file_and_mkdir_stay_inside_the_rootfs(box: Box, way: str) -> None:
    stub = box.agent.host.stub
    secret_link = box.plant("secret", _escapes(box, "/secret")[way])
    try:
        stub.WriteFile(
            pb.WriteFileRequest(
                path=secret_link, data=b"pwned", flags=Flags(create_if_missing=True)
            ),
            timeout=60,
        )
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INTERNAL
    assert (box.outside / "secret").read_bytes() == SECRET

    dir_link = box.plant("dir", _escapes(box, "")[way])
    landing = box.landing(way)
    stub.WriteFile(
        pb.WriteFileRequest(
            path=f"{dir_link}/new/f",
            data=b"pwned",
            flags=Flags(create_if_missing=True, create_parent_dirs=True),
        ),
        timeout=60,
    )
    stub.Mkdir(pb.MkdirRequest(path=f"{dir_link}/made/deep", all=True, perms=0o700), timeout=60)
    assert sorted(os.listdir(box.outside)) == ["secret"]
    assert (landing / "new" / "f").read_bytes() == b"pwned"
    assert (landing / "made" / "deep").stat().st_mode & 0o7777 == 0o700


def test_write_file_refuses_a_fifo_in_the_rootfs(box: Box) -> None:
    os.mkfifo(box.local / "fifo")
    # with a reader the open succeeds (without one it fails with ENXIO): the check decides
    reader = os.open(box.local / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        error = _error(
            box.agent.host.stub.WriteFile,
            pb.WriteFileRequest(path=f"{box.root}/fifo", data=b"x", flags=Flags()),
        )
        assert os.read(reader, 1) == b""  # nothing was written (EOF: no writer left)
    finally:
        os.close(reader)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FIFO" in error.details()


def _copy_out(box: Box, path: str) -> tuple[bytes, bool]:
    return box.agent.host.copy_out(path)


def _archive(name: str, data: bytes) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        top = tarfile.TarInfo(".")
        top.type, top.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(top)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.mark.parametrize("way", ["abs", "dotdot", "proc"])
def test_copy_stays_inside_the_rootfs(box: Box, way: str) -> None:
    host = box.agent.host
    secret_link = box.plant("secret", _escapes(box, "/secret")[way])
    dir_link = box.plant("dir", _escapes(box, "")[way])
    for path in (secret_link, dir_link):
        with pytest.raises(grpc.RpcError) as info:
            _copy_out(box, path)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError):
        host.copy_in(b"pwned", secret_link)
    assert (box.outside / "secret").read_bytes() == SECRET

    landing = box.landing(way)
    host.copy_in(b"pwned", f"{dir_link}/sub/f", create_parents=True)
    host.copy_in(_archive("a.txt", b"archived"), f"{dir_link}/arch", is_archive=True)
    assert sorted(os.listdir(box.outside)) == ["secret"]
    assert (landing / "sub" / "f").read_bytes() == b"pwned"
    assert (landing / "arch" / "a.txt").read_bytes() == b"archived"
    assert _copy_out(box, f"{dir_link}/sub/f") == (b"pwned", False)


def test_copy_out_follows_links_inside_the_rootfs(box: Box) -> None:
    (box.local / "inner").mkdir()
    (box.local / "inner" / "f").write_bytes(b"container data")
    (box.local / "inner" / "up").symlink_to(str(box.outside))  # archived as a link
    assert _copy_out(box, box.plant("file", "/inner/f")) == (b"container data", False)
    data, is_archive = _copy_out(box, box.plant("tree", "/inner"))
    assert is_archive
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == [".", "f", "up"]
    assert members["up"].issym() and members["up"].linkname == str(box.outside)


# ------------------------------------------------------------------------ ProxyVsock


@pytest.mark.parametrize("way", ["abs", "dotdot", "proc"])
def test_proxy_into_binds_inside_the_rootfs(box: Box, way: str) -> None:
    stub = box.agent.host.stub
    dir_link = box.plant("dir", _escapes(box, "")[way])
    bound = box.landing(way) / "p.sock"
    port = box.agent.host.ports.next()
    stub.ProxyVsock(
        pb.ProxyVsockRequest(
            id="into",
            vsock_port=port,
            guestPath=f"{dir_link}/p.sock",
            guestSocketPermissions=0o640,
            action=pb.ProxyVsockRequest.INTO,
        ),
        timeout=60,
    )
    try:
        assert sorted(os.listdir(box.outside)) == ["secret"]
        assert stat.S_ISSOCK(bound.lstat().st_mode)
        assert bound.lstat().st_mode & 0o777 == 0o640
    finally:
        stub.StopVsockProxy(pb.StopVsockProxyRequest(id="into"), timeout=60)
    assert not bound.exists()


def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    return sock


def test_proxy_out_of_connects_inside_the_rootfs(box: Box) -> None:
    stub = box.agent.host.stub
    outside_service = _listen(box.outside / "svc.sock")
    inside_service = _listen(box.local / "in.sock")
    try:
        for name, target, expect_inside in (
            ("out", box.outside / "svc.sock", False),
            ("in", "/in.sock", True),
        ):
            port = box.agent.host.ports.next()
            stub.ProxyVsock(
                pb.ProxyVsockRequest(
                    id=name,
                    vsock_port=port,
                    guestPath=box.plant(name, target),
                    action=pb.ProxyVsockRequest.OUT_OF,
                ),
                timeout=60,
            )
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(60)
                client.connect(str(box.agent.directory / f"guest_{port}"))
                if expect_inside:
                    conn, _ = inside_service.accept()
                    conn.close()
                else:
                    assert client.recv(10) == b""  # the agent found no socket and hung up
            stub.StopVsockProxy(pb.StopVsockProxyRequest(id=name), timeout=60)
        outside_service.setblocking(False)
        with pytest.raises(BlockingIOError):
            outside_service.accept()
    finally:
        outside_service.close()
        inside_service.close()


@pytest.mark.parametrize("action", [pb.ProxyVsockRequest.INTO, pb.ProxyVsockRequest.OUT_OF])
def test_proxy_relative_guest_path_is_invalid(
    agent: LocalAgent, action: pb.ProxyVsockRequest.Action
) -> None:
    request = pb.ProxyVsockRequest(
        id="rel", vsock_port=agent.host.ports.next(), guestPath="rel.sock", action=action
    )
    error = _error(agent.host.stub.ProxyVsock, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "absolute" in error.details()


def _mount_points(agent: LocalAgent) -> set[str]:
    """Mount points in the agent's mount namespace (its /proc, read from here)."""
    text = Path(f"/proc/{agent.pid}/mountinfo").read_text()
    return {line.split()[4] for line in text.splitlines()}


@pytest.mark.parametrize("way", ["abs", "dotdot"])
def test_mount_destination_resolves_inside_the_rootfs(box: Box, way: str) -> None:
    """The host bind-mounts into container rootfs (the pause container's /sbin): a link
    planted at the destination must not carry the mount onto a VM directory outside."""
    stub = box.agent.host.stub
    destination = box.plant("mnt", _escapes(box, "")[way])
    landing = box.landing(way)
    stub.Mount(
        pb.MountRequest(type="tmpfs", source="tmpfs", destination=destination, options=["size=1m"]),
        timeout=60,
    )
    points = _mount_points(box.agent)
    assert str(box.outside) not in points  # nothing mounted over the VM's directory
    agent_view = box.root + "/" + str(landing.relative_to(box.local))
    assert agent_view in points  # the mount landed on the container's own directory
    assert (box.outside / "secret").read_bytes() == SECRET
    stub.Umount(pb.UmountRequest(path=agent_view), timeout=60)


def test_mount_file_destination_refuses_a_dangling_link(box: Box, tmp_path: Path) -> None:
    source = tmp_path / "single-file"
    source.write_bytes(b"x")
    destination = box.plant("bound", str(box.outside / "not-there"))
    error = _error(
        box.agent.host.stub.Mount,
        pb.MountRequest(type="none", source=str(source), destination=destination, options=["bind"]),
    )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert not (box.outside / "not-there").exists()
