"""Every system RPC through the grpcio client against a real agent: success and error codes.

The agent is PID 1 of its own mount, UTS, IPC, PID and network namespaces, so mounts,
network changes and per-namespace sysctls stay inside it. RPCs whose effect is machine-wide
(SetTime, SetupEmulator's binfmt registration, FIFREEZE) are exercised only on paths that
cannot change the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import grpc
import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent


def _code(call: Callable[..., object], request: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code()


def _in_agent(agent: LocalAgent, *cmd: str) -> str:
    """Run a command in the agent's mount and network namespaces (read-only checks)."""
    return subprocess.run(
        ["nsenter", "-t", str(agent.pid), "-m", "-n", *cmd],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_mount_and_umount(agent: LocalAgent) -> None:
    stub = agent.host.stub
    stub.Mount(
        pb.MountRequest(
            type="tmpfs",
            source="tmpfs",
            destination="/run/m/a",
            options=["size=1m", "mode=750", "nosuid"],
        )
    )
    line = [
        x for x in _in_agent(agent, "cat", "/proc/1/mountinfo").splitlines() if " /run/m/a " in x
    ]
    assert line and "nosuid" in line[0]
    # a bind of a file creates the target file, ro is applied with a bind remount
    stub.WriteFile(
        pb.WriteFileRequest(
            path="/run/m/src",
            data=b"x",
            flags=pb.WriteFileRequest.WriteFileFlags(create_if_missing=True),
        )
    )
    stub.Mount(
        pb.MountRequest(
            type="", source="/run/m/src", destination="/run/m/dst", options=["bind", "ro"]
        )
    )
    dst = next(
        x for x in _in_agent(agent, "cat", "/proc/1/mountinfo").splitlines() if " /run/m/dst " in x
    )
    assert " ro" in dst
    stub.Umount(pb.UmountRequest(path="/run/m/dst"))
    stub.Umount(pb.UmountRequest(path="/run/m/a"))
    assert " /run/m/a " not in _in_agent(agent, "cat", "/proc/1/mountinfo")
    assert (
        _code(stub.Mount, pb.MountRequest(type="nosuchfs", source="x", destination="/run/m/b"))
        == grpc.StatusCode.INTERNAL
    )
    assert (
        _code(stub.Umount, pb.UmountRequest(path="/run/m/not-a-mount"))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_mkdir_writefile_stat_errors(agent: LocalAgent) -> None:
    stub = agent.host.stub
    assert (
        _code(stub.Mkdir, pb.MkdirRequest(path="/run/none/deeper", all=False))
        == grpc.StatusCode.INTERNAL
    )
    stub.Mkdir(pb.MkdirRequest(path="/run/d", all=False, perms=0o700))
    assert _code(stub.Mkdir, pb.MkdirRequest(path="/run/d", all=False)) == grpc.StatusCode.INTERNAL
    stub.Mkdir(pb.MkdirRequest(path="/run/d", all=True))  # mkdir -p of an existing dir
    assert (
        _code(stub.WriteFile, pb.WriteFileRequest(path="/run/none/f", data=b"x"))
        == grpc.StatusCode.INTERNAL
    )
    flags = pb.WriteFileRequest.WriteFileFlags
    stub.WriteFile(
        pb.WriteFileRequest(
            path="/run/d/f", data=b"0123456789", flags=flags(create_if_missing=True)
        )
    )
    stub.WriteFile(pb.WriteFileRequest(path="/run/d/f", data=b"ab", flags=flags()))
    assert agent.host.copy_out("/run/d/f")[0] == b"ab"  # truncated (docs/compat.md)
    stub.WriteFile(pb.WriteFileRequest(path="/run/d/f", data=b"cd", flags=flags(append=True)))
    assert agent.host.copy_out("/run/d/f")[0] == b"abcd"
    stub.WriteFile(
        pb.WriteFileRequest(
            path="/run/d/new/deep/f",
            data=b"p",
            flags=flags(create_parent_dirs=True, create_if_missing=True),
        )
    )
    reply = stub.Stat(pb.StatRequest(path="/run/d/new/deep/f"))
    assert reply.stat.size == 1 and reply.stat.mtime.seconds > 0 and not reply.error
    assert stub.Stat(pb.StatRequest(path="/run/d")).stat.mode & 0o170000 == 0o040000
    assert _code(stub.Stat, pb.StatRequest(path="/run/d/nope")) == grpc.StatusCode.NOT_FOUND
    # another errno: OK with `error` set (ENOTDIR through a file)
    reply = stub.Stat(pb.StatRequest(path="/run/d/f/x"))
    assert reply.error and not reply.HasField("stat")


def test_filesystem_operation_error_codes(agent: LocalAgent) -> None:
    stub = agent.host.stub
    op = pb.FilesystemOperationRequest
    assert (
        _code(stub.FilesystemOperation, op(path="relative", thaw=pb.FiThawParams()))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        _code(stub.FilesystemOperation, op(path="/run/nope", thaw=pb.FiThawParams()))
        == grpc.StatusCode.NOT_FOUND
    )
    assert _code(stub.FilesystemOperation, op(path="/run")) == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        _code(stub.FilesystemOperation, op(path="/run", trim=pb.FiTrimParams()))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # /run is the agent's private tmpfs: FITRIM is not supported there -> INTERNAL, nothing frozen
    trim = op(path="/run", trim=pb.FiTrimParams(one_shot=pb.FiTrimParams.OneShot()))
    assert _code(stub.FilesystemOperation, trim) == grpc.StatusCode.INTERNAL
    os.symlink("/tmp", f"/tmp/trinit-fsop-link-{os.getpid()}")
    try:
        link = op(path=f"/tmp/trinit-fsop-link-{os.getpid()}", thaw=pb.FiThawParams())
        assert _code(stub.FilesystemOperation, link) == grpc.StatusCode.INTERNAL
    finally:
        os.unlink(f"/tmp/trinit-fsop-link-{os.getpid()}")


def test_sysctl_settime_emulator_kill_sync(agent: LocalAgent) -> None:
    stub = agent.host.stub
    # per-network-namespace sysctl: only the agent's namespace changes
    stub.Sysctl(pb.SysctlRequest(settings={"net.ipv4.ip_forward": "1"}))
    assert _in_agent(agent, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert (
        _code(stub.Sysctl, pb.SysctlRequest(settings={"no.such.key": "1"}))
        == grpc.StatusCode.INTERNAL
    )
    # an invalid time is refused by the kernel: the machine clock is never touched here
    assert _code(stub.SetTime, pb.SetTimeRequest(sec=-5, usec=0)) == grpc.StatusCode.INTERNAL
    # binfmt_misc is not mounted in the agent's namespace: a clear INTERNAL, nothing registered
    emu = pb.SetupEmulatorRequest(binary_path="/x", name="t", type="M", magic="\\x7fELF", flags="F")
    assert _code(stub.SetupEmulator, emu) == grpc.StatusCode.INTERNAL
    assert stub.Kill(pb.KillRequest(pid=1, signal=0)).result == 0  # the agent itself, signal 0
    assert stub.Kill(pb.KillRequest(pid=999_999, signal=0)).result == -1
    stub.Sync(pb.SyncRequest())


def test_networking_in_the_agents_namespace(agent: LocalAgent) -> None:
    stub = agent.host.stub
    stub.IpLinkSet(pb.IpLinkSetRequest(interface="lo", up=True))
    subprocess.run(
        [
            "nsenter",
            "-t",
            str(agent.pid),
            "-n",
            "ip",
            "link",
            "add",
            "eth9",
            "type",
            "veth",
            "peer",
            "name",
            "eth9p",
        ],
        check=True,
    )
    stub.IpAddrAdd(
        pb.IpAddrAddRequest(
            interface="eth9", ipv4Address="192.0.2.10/24", ipv6Address="2001:db8::10/64"
        )
    )
    stub.IpLinkSet(pb.IpLinkSetRequest(interface="eth9", up=True, mtu=1400))
    stub.IpRouteAddLink(
        pb.IpRouteAddLinkRequest(
            interface="eth9", dstIpv4Addr="198.51.100.1/32", srcIpv4Addr="192.0.2.10"
        )
    )
    stub.IpRouteAddDefault(
        pb.IpRouteAddDefaultRequest(interface="eth9", ipv4Gateway="198.51.100.1")
    )
    links = json.loads(_in_agent(agent, "ip", "-j", "link", "show", "eth9"))
    assert links[0]["mtu"] == 1400 and "UP" in links[0]["flags"]
    addrs = json.loads(_in_agent(agent, "ip", "-j", "addr", "show", "eth9"))[0]["addr_info"]
    assert {(a["local"], a["prefixlen"]) for a in addrs} >= {
        ("192.0.2.10", 24),
        ("2001:db8::10", 64),
    }
    routes = json.loads(_in_agent(agent, "ip", "-j", "route", "show"))
    assert {"dst": "default", "gateway": "198.51.100.1", "dev": "eth9"}.items() <= next(
        r for r in routes if r["dst"] == "default"
    ).items()
    assert any(r["dst"] == "198.51.100.1" and r.get("scope") == "link" for r in routes)
    # errors: existing address, unknown interface, missing destination
    assert (
        _code(stub.IpAddrAdd, pb.IpAddrAddRequest(interface="eth9", ipv4Address="192.0.2.10/24"))
        == grpc.StatusCode.INTERNAL
    )
    assert (
        _code(stub.IpLinkSet, pb.IpLinkSetRequest(interface="nope0", up=True))
        == grpc.StatusCode.INTERNAL
    )
    assert (
        _code(stub.IpAddrAdd, pb.IpAddrAddRequest(interface="eth9", ipv4Address=""))
        == grpc.StatusCode.INTERNAL
    )
    assert (
        _code(stub.IpRouteAddLink, pb.IpRouteAddLinkRequest(interface="eth9"))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
