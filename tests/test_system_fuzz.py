"""Hypothesis fuzz of every trinit.system entry point: whatever the request holds, the only
exception that may come out is a trinit.errors.TrinitError.

Paths are confined to a temporary directory (components never contain "/" or ".."), and
every hook that could reach the real machine (mount, ioctl, settimeofday, kill, sysctl and
binfmt roots, environment) is replaced; the network functions run in a namespace the test
creates.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import TrinitError
from trinit.system import (
    FsIoctl,
    KillPlan,
    Me,
    MountSyscalls,
    configure_dns,
    configure_hosts,
    copy,
    filesystem_operation,
    getenv,
    ip_addr_add,
    ip_link_set,
    ip_route_add_default,
    ip_route_add_link,
    kill,
    mkdir,
    mount,
    plan_kill,
    set_time,
    setenv,
    setup_emulator,
    stat,
    sysctl,
    umount,
    write_file,
)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

component = st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s and s not in (".", ".."))
relpath = st.lists(component, min_size=0, max_size=4).map("/".join)
text = st.text(max_size=40)
u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)


def run_checked(make: Callable[[], Awaitable[object]]) -> None:
    async def main() -> None:
        try:
            await make()
        except TrinitError:
            pass

    trio.run(main)


def under(base: Path, rel: str) -> str:
    return str(base / rel) if rel else str(base)


@FUZZ
@given(rel=relpath, all_=st.booleans(), perms=u32)
def test_fuzz_mkdir(tmp_path: Path, rel: str, all_: bool, perms: int) -> None:
    run_checked(lambda: mkdir(pb.MkdirRequest(path=under(tmp_path, rel), all=all_, perms=perms)))


@FUZZ
@given(
    rel=relpath,
    data=st.binary(max_size=200),
    mode=u32,
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_fuzz_write_file(
    tmp_path: Path, rel: str, data: bytes, mode: int, flags: tuple[bool, bool, bool]
) -> None:
    request = pb.WriteFileRequest(
        path=under(tmp_path, rel),
        data=data,
        mode=mode,
        flags=pb.WriteFileRequest.WriteFileFlags(
            create_parent_dirs=flags[0], append=flags[1], create_if_missing=flags[2]
        ),
    )
    run_checked(lambda: write_file(request))


@FUZZ
@given(rel=relpath)
def test_fuzz_stat(tmp_path: Path, rel: str) -> None:
    run_checked(lambda: stat(pb.StatRequest(path=under(tmp_path, rel))))


@FUZZ
@given(
    rel=relpath,
    absolute=st.booleans(),
    op=st.sampled_from(["freeze", "thaw", "trim", "trim1", None]),
    fail=st.booleans(),
)
def test_fuzz_filesystem_operation(
    tmp_path: Path, rel: str, absolute: bool, op: str | None, fail: bool
) -> None:
    def fake(fd: int, request: int, buf: bytearray) -> None:
        if fail:
            raise OSError(95, "Operation not supported")

    request = pb.FilesystemOperationRequest(path=under(tmp_path, rel) if absolute else rel)
    if op == "trim1":
        request.trim.one_shot.SetInParent()
    elif op == "trim":
        request.trim.SetInParent()
    elif op is not None:
        getattr(request, op).SetInParent()
    run_checked(lambda: filesystem_operation(request, ioctl=FsIoctl(fake)))


@FUZZ
@given(settings_=st.dictionaries(text, text, max_size=4))
def test_fuzz_sysctl(tmp_path: Path, settings_: dict[str, str]) -> None:
    (tmp_path / "net").mkdir(exist_ok=True)
    (tmp_path / "net" / "x").touch()
    run_checked(lambda: sysctl(pb.SysctlRequest(settings=settings_), proc_sys=str(tmp_path)))


@FUZZ
@given(sec=i64, usec=i32, fail=st.booleans())
def test_fuzz_set_time(sec: int, usec: int, fail: bool) -> None:
    def fake(s: int, u: int) -> None:
        if fail:
            raise OSError(22, "Invalid argument")

    run_checked(lambda: set_time(pb.SetTimeRequest(sec=sec, usec=usec), settimeofday=fake))


@FUZZ
@given(fields=st.lists(text, min_size=7, max_size=7), mounted=st.booleans())
def test_fuzz_setup_emulator(tmp_path: Path, fields: list[str], mounted: bool) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        if mounted:
            Path(root, "register").touch()
        names = ["binary_path", "name", "type", "offset", "magic", "mask", "flags"]
        request = pb.SetupEmulatorRequest(**dict(zip(names, fields, strict=True)))
        run_checked(lambda: setup_emulator(request, binfmt_misc=root))


@FUZZ
@given(key=text, value=st.none() | text)
def test_fuzz_env(key: str, value: str | None) -> None:
    environ: dict[str, str] = {}
    request = pb.SetenvRequest(key=key) if value is None else pb.SetenvRequest(key=key, value=value)
    run_checked(lambda: setenv(request, environ=environ))
    run_checked(lambda: getenv(pb.GetenvRequest(key=key), environ=environ))


@FUZZ
@given(
    pid=i32,
    sig=i32,
    error=st.sampled_from([None, OSError(3, "x"), ValueError("x"), OverflowError()]),
)
def test_fuzz_kill(pid: int, sig: int, error: Exception | None) -> None:
    def fake(p: int, s: int) -> None:
        if error is not None:
            raise error

    async def check() -> None:
        me = Me.current()
        response = await kill(pb.KillRequest(pid=pid, signal=sig), kill_fn=fake, me=me)
        how = plan_kill(pid, me)
        if how is KillPlan.DELIVER:
            expected = 0 if error is None else -1
        elif how is KillPlan.REFUSE:
            expected = -1
        else:  # aimed at trinit or its group: never raw; only the signal's validity counts
            expected = 0 if 0 <= sig < signal.NSIG else -1
        assert response.result == expected

    trio.run(check)


@FUZZ
@given(
    rel=relpath,
    nameservers=st.lists(text, max_size=3),
    domain=st.none() | text,
    search=st.lists(text, max_size=3),
    options=st.lists(text, max_size=3),
    entries=st.lists(st.tuples(text, st.lists(text, max_size=3), st.none() | text), max_size=3),
    comment=st.none() | text,
)
def test_fuzz_dns_hosts(
    tmp_path: Path,
    rel: str,
    nameservers: list[str],
    domain: str | None,
    search: list[str],
    options: list[str],
    entries: list[tuple[str, list[str], str | None]],
    comment: str | None,
) -> None:
    location = under(tmp_path, rel)
    dns = pb.ConfigureDnsRequest(
        location=location, nameservers=nameservers, searchDomains=search, options=options
    )
    if domain is not None:
        dns.domain = domain
    run_checked(lambda: configure_dns(dns))
    hosts = pb.ConfigureHostsRequest(location=location)
    if comment is not None:
        hosts.comment = comment
    for ip, names, entry_comment in entries:
        entry = hosts.entries.add(ipAddress=ip, hostnames=names)
        if entry_comment is not None:
            entry.comment = entry_comment
    run_checked(lambda: configure_hosts(hosts))


@FUZZ
@given(
    fstype=text,
    source=text,
    rel=relpath,
    options=st.lists(text, max_size=4),
    errno_=st.sampled_from([None, 16, 19, 22]),
    flags=i32,
)
def test_fuzz_mount_umount(
    tmp_path: Path,
    fstype: str,
    source: str,
    rel: str,
    options: list[str],
    errno_: int | None,
    flags: int,
) -> None:
    def fake(*args: object) -> None:
        if errno_ is not None:
            raise OSError(errno_, os.strerror(errno_))

    # no hot-plug sources: their retries would take 2 s of real time per example
    if fstype == "virtiofs" or source.startswith("/dev/vd"):
        fstype, source = "tmpfs", "tmpfs"
    hooks = MountSyscalls(mount=fake, umount2=fake, pci_rescan_path=str(tmp_path / "rescan"))
    destination = under(tmp_path / "mnt", rel)
    request = pb.MountRequest(type=fstype, source=source, destination=destination, options=options)
    run_checked(lambda: mount(request, syscalls=hooks))
    if errno_ != 16:  # EBUSY retries take 0.5 s of real time
        run_checked(lambda: umount(pb.UmountRequest(path=destination, flags=flags), syscalls=hooks))


@FUZZ
@given(
    rel=relpath,
    direction=st.sampled_from([0, 1, 2]),
    mode=u32,
    parents=st.booleans(),
    archive=st.booleans(),
    port=u32,
    host_data=st.binary(max_size=300) | st.just(b"\x1f\x8b"),
    dial_fails=st.booleans(),
)
def test_fuzz_copy(
    tmp_path: Path,
    rel: str,
    direction: int,
    mode: int,
    parents: bool,
    archive: bool,
    port: int,
    host_data: bytes,
    dial_fails: bool,
) -> None:
    base = tmp_path / "copy"
    base.mkdir(exist_ok=True)
    request = pb.CopyRequest(
        direction=cast("pb.CopyRequest.Direction", direction),
        path=under(base, rel),
        mode=mode,
        create_parents=parents,
        vsock_port=port,
        is_archive=archive,
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def host(stream: trio.SocketStream) -> None:
                async with stream:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(host_data)
                        await stream.send_eof()
                        while await stream.receive_some():
                            pass

            async def dial(p: int) -> trio.SocketStream:
                if dial_fails:
                    raise OSError(111, "Connection refused")
                guest, peer = trio.socket.socketpair()
                nursery.start_soon(host, trio.SocketStream(peer))
                return trio.SocketStream(guest)

            try:
                async with contextlib.aclosing(copy(request, dial)) as responses:
                    async for _ in responses:
                        pass
            except TrinitError:
                pass

    trio.run(main)


@FUZZ
@given(
    interface=st.sampled_from(["lo", "eth0", "nope0", ""]) | text,
    v4=st.sampled_from(["10.0.0.2/24", "10.0.0.3/32", "", "1.2.3.4", "fd00::1/64"]) | text,
    v6=st.none() | st.sampled_from(["fd00::5/64", "fe80::1%eth0/64", "10.0.0.1/8"]) | text,
    up=st.booleans(),
    mtu=st.none() | u32,
)
def test_fuzz_network(interface: str, v4: str, v6: str | None, up: bool, mtu: int | None) -> None:
    name = f"trinit-fuzz-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "p0"],
            check=True,
        )
        link = pb.IpLinkSetRequest(interface=interface, up=up)
        if mtu is not None:
            link.mtu = mtu
        addr = pb.IpAddrAddRequest(interface=interface, ipv4Address=v4)
        route = pb.IpRouteAddLinkRequest(interface=interface, dstIpv4Addr=v4, srcIpv4Addr=v4)
        default = pb.IpRouteAddDefaultRequest(interface=interface, ipv4Gateway=v4)
        if v6 is not None:
            addr.ipv6Address = v6
            route.dstIpv6Addr = v6
            route.srcIpv6Addr = v6
            default.ipv6Gateway = v6
        run_checked(lambda: ip_link_set(link, netns=name))
        run_checked(lambda: ip_addr_add(addr, netns=name))
        run_checked(lambda: ip_route_add_link(route, netns=name))
        run_checked(lambda: ip_route_add_default(default, netns=name))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
