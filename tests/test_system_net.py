"""IpLinkSet/IpAddrAdd/IpRouteAdd*: real rtnetlink inside a network namespace the test
creates (with a veth pair), checked with `ip -j`, and removed at the end."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument
from trinit.system import ip_addr_add, ip_link_set, ip_route_add_default, ip_route_add_link


def _ip(ns: str, *args: str) -> Any:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip() else []


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"trinit-test-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
            check=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def _ns_read(ns: str, path: str) -> str:
    """A file as seen from inside the namespace (a /proc/sys/net path is per namespace)."""
    cmd = ["ip", "netns", "exec", ns, "cat", path]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _link(ns: str, name: str) -> dict[str, Any]:
    [link] = _ip(ns, "link", "show", "dev", name)
    return dict(link)


async def test_link_set_up_mtu_down(netns: str) -> None:
    await ip_link_set(pb.IpLinkSetRequest(interface="lo", up=True), netns=netns)
    assert "UP" in _link(netns, "lo")["flags"]
    await ip_link_set(pb.IpLinkSetRequest(interface="eth0", up=True, mtu=1400), netns=netns)
    link = _link(netns, "eth0")
    assert "UP" in link["flags"] and link["mtu"] == 1400
    assert "MULTICAST" in link["flags"]  # only IFF_UP changes
    await ip_link_set(pb.IpLinkSetRequest(interface="eth0", up=False), netns=netns)
    link = _link(netns, "eth0")
    assert "UP" not in link["flags"] and link["mtu"] == 1400


async def test_link_set_unknown_interface(netns: str) -> None:
    with pytest.raises(Internal, match=r"^ipLinkSet: interface 'nope0' not found$"):
        await ip_link_set(pb.IpLinkSetRequest(interface="nope0", up=True), netns=netns)


async def test_addr_add_v4_and_v6(netns: str) -> None:
    request = pb.IpAddrAddRequest(
        interface="eth0", ipv4Address="192.168.64.2/24", ipv6Address="fd00::2/64"
    )
    await ip_addr_add(request, netns=netns)
    [info] = _ip(netns, "addr", "show", "dev", "eth0")
    by_family = {a["family"]: a for a in info["addr_info"] if a.get("scope") == "global"}
    v4, v6 = by_family["inet"], by_family["inet6"]
    assert (v4["local"], v4["prefixlen"]) == ("192.168.64.2", 24)
    assert (v6["local"], v6["prefixlen"]) == ("fd00::2", 64)
    assert v6.get("nodad") is True
    assert v6.get("valid_life_time") == 4294967295  # permanent
    for name in ("accept_ra", "autoconf"):
        value = _ns_read(netns, f"/proc/sys/net/ipv6/conf/eth0/{name}")
        assert value.strip() == "0"
    # the same address again: EEXIST
    with pytest.raises(Internal, match=r"^ipAddrAdd: File exists \(EEXIST\)$"):
        await ip_addr_add(
            pb.IpAddrAddRequest(interface="eth0", ipv4Address="192.168.64.2/24"), netns=netns
        )


async def test_addr_add_requires_v4_cidr(netns: str) -> None:
    for bad in ("", "10.0.0.1", "10.0.0.1/33", "fd00::1/64"):
        with pytest.raises(Internal, match=r"^ipAddrAdd: invalid IPv4 CIDR"):
            await ip_addr_add(pb.IpAddrAddRequest(interface="eth0", ipv4Address=bad), netns=netns)
    assert not [
        a
        for a in _ip(netns, "addr", "show", "dev", "eth0")[0]["addr_info"]
        if a["family"] == "inet"
    ]


def _routes(ns: str, family: str) -> list[dict[str, Any]]:
    return list(_ip(ns, "-d", family, "route", "show", "table", "main"))


async def test_route_add_link_and_default_v4(netns: str) -> None:
    await ip_link_set(pb.IpLinkSetRequest(interface="eth0", up=True), netns=netns)
    await ip_addr_add(
        pb.IpAddrAddRequest(interface="eth0", ipv4Address="192.168.64.2/24"), netns=netns
    )
    await ip_route_add_link(
        pb.IpRouteAddLinkRequest(
            interface="eth0", dstIpv4Addr="10.9.0.1/32", srcIpv4Addr="192.168.64.2"
        ),
        netns=netns,
    )
    await ip_route_add_default(
        pb.IpRouteAddDefaultRequest(interface="eth0", ipv4Gateway="10.9.0.1"), netns=netns
    )
    routes = {r["dst"]: r for r in _routes(netns, "-4")}
    link = routes["10.9.0.1"]
    assert (link["dev"], link["protocol"], link["scope"], link["prefsrc"]) == (
        "eth0",
        "kernel",
        "link",
        "192.168.64.2",
    )
    default = routes["default"]
    assert (default["gateway"], default["dev"], default["protocol"]) == ("10.9.0.1", "eth0", "boot")
    assert default.get("scope", "global") == "global"
    with pytest.raises(Internal, match=r"^ipRouteAddDefault: File exists \(EEXIST\)$"):
        await ip_route_add_default(
            pb.IpRouteAddDefaultRequest(interface="eth0", ipv4Gateway="10.9.0.1"), netns=netns
        )


async def test_route_default_dev_only_and_v6(netns: str) -> None:
    await ip_link_set(pb.IpLinkSetRequest(interface="eth0", up=True), netns=netns)
    await ip_route_add_default(pb.IpRouteAddDefaultRequest(interface="eth0"), netns=netns)
    [default] = [r for r in _routes(netns, "-4") if r["dst"] == "default"]
    assert (default["dev"], default["protocol"], default["scope"]) == ("eth0", "boot", "link")
    assert "gateway" not in default

    await ip_addr_add(
        pb.IpAddrAddRequest(
            interface="eth0", ipv4Address="192.168.64.2/24", ipv6Address="fd00::2/64"
        ),
        netns=netns,
    )
    await ip_route_add_link(
        pb.IpRouteAddLinkRequest(
            interface="eth0", dstIpv6Addr="fd01::1/128", srcIpv6Addr="fd00::2"
        ),
        netns=netns,
    )
    await ip_route_add_default(
        pb.IpRouteAddDefaultRequest(interface="eth0", ipv6Gateway="fd01::1"), netns=netns
    )
    routes = {r["dst"]: r for r in _routes(netns, "-6")}
    assert (routes["fd01::1"]["protocol"], routes["fd01::1"]["prefsrc"]) == ("static", "fd00::2")
    assert (routes["default"]["gateway"], routes["default"]["protocol"]) == ("fd01::1", "boot")
    # v6 gateway only: no second v4 default was attempted
    assert len([r for r in _routes(netns, "-4") if r["dst"] == "default"]) == 1


async def test_route_add_link_needs_a_destination(netns: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^ipRouteAddLink: "):
        await ip_route_add_link(pb.IpRouteAddLinkRequest(interface="eth0"), netns=netns)
    with pytest.raises(Internal, match=r"^ipRouteAddLink: invalid IPv4"):
        await ip_route_add_link(
            pb.IpRouteAddLinkRequest(interface="eth0", dstIpv4Addr="x/32"), netns=netns
        )
    with pytest.raises(Internal, match=r"^ipRouteAddDefault: invalid IPv4"):
        await ip_route_add_default(
            pb.IpRouteAddDefaultRequest(interface="eth0", ipv4Gateway="fd00::1"), netns=netns
        )


async def test_worker_thread_returns_to_its_namespace(netns: str) -> None:
    """The thread that entered the test namespace went back before trio reused it."""
    import trio

    own = os.readlink("/proc/self/ns/net")
    for _ in range(3):
        await ip_link_set(pb.IpLinkSetRequest(interface="lo", up=True), netns=netns)
        seen = await trio.to_thread.run_sync(lambda: os.readlink("/proc/thread-self/ns/net"))
        assert seen == own


def test_pyroute2_loads_off_the_event_loop(netns: str) -> None:
    """The first network RPC imports pyroute2 (~90-130 ms): in the worker thread, so the
    loop goes on serving other RPCs and relaying stdio meanwhile. A fresh interpreter,
    where pyroute2 is not imported yet, records which thread imports it."""
    script = f"""
import importlib.abc, sys, threading, trio
seen = []
class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyroute2":
            seen.append(threading.current_thread() is threading.main_thread())
        return None
sys.meta_path.insert(0, Recorder())
from trinit._proto import sandbox_pb2 as pb
from trinit.system import ip_link_set
assert "pyroute2" not in sys.modules
trio.run(lambda: ip_link_set(pb.IpLinkSetRequest(interface="lo", up=True), netns={netns!r}))
print("imported in the main thread" if seen[0] else "imported in a worker thread")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported in a worker thread"
    assert "UP" in _link(netns, "lo")["flags"]
