"""IpLinkSet, IpAddrAdd, IpRouteAddLink, IpRouteAddDefault: rtnetlink through pyroute2.

pyroute2 0.9's async API runs on asyncio, not trio, so each call opens one synchronous
``IPRoute`` socket inside a worker thread, makes its requests and closes it before the thread
returns: no netlink socket outlives a call, and the thread is never abandoned.

``netns`` (tests only) names a namespace under ``/run/netns``: the worker thread enters it
with setns(2) for the whole call (netlink socket *and* the ``/proc/sys/net`` writes of
IpAddrAdd, which resolve in the calling thread's namespace) and returns to its own namespace
before it goes back to trio's thread pool.

Every request uses NLM_F_CREATE|NLM_F_EXCL, so adding an existing address or route fails
with EEXIST, as in vminitd.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from trinit import _linux as linux
from trinit import _pyroute2 as pyroute2
from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument, TrinitError

from ._common import has_nul, os_reason, run_blocking, strerror

log = logging.getLogger(__name__)

T = TypeVar("T")

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
IFA_F_NODAD = 0x02
IFA_F_PERMANENT = 0x80
IPV6_CONF = "/proc/sys/net/ipv6/conf"


if TYPE_CHECKING:
    from pyroute2 import IPRoute


class _Failed(Exception):
    """A failure inside the worker; the caller prefixes the RPC's message."""


def _in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    if netns is None:
        return fn()
    if "/" in netns or netns in ("", ".", ".."):
        raise _Failed(f"bad namespace name {netns!r}")
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(target, linux.CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            return fn()
        finally:
            linux.setns(own, linux.CLONE_NEWNET)
    finally:
        os.close(own)


async def _run(op: str, netns: str | None, fn: Callable[[IPRoute], None]) -> None:
    def work() -> None:
        # pyroute2 takes 45-65 ms to import (trinit._pyroute2): loaded on first use, not at
        # agent start, and here in the worker, where the loop goes on serving meanwhile (on
        # the loop, the first network RPC would stall every RPC and stdio pump as long)
        IPRoute, NetlinkError = pyroute2.load()

        try:
            with IPRoute(groups=0) as ipr:
                fn(ipr)
        except NetlinkError as exc:
            raise _Failed(strerror(exc.code)) from None

    try:
        await run_blocking(lambda: _in_netns(netns, work))
    except TrinitError:
        raise
    except _Failed as exc:
        raise Internal(f"{op}: {exc}") from None
    except Exception as exc:  # pyroute2 raises assorted types for malformed input
        raise Internal(f"{op}: {os_reason(exc)}") from None


def _index(ipr: IPRoute, interface: str) -> int:
    if not interface or has_nul(interface):
        raise _Failed(f"interface {interface!r} not found")
    found: list[int] = ipr.link_lookup(ifname=interface)
    if not found:
        raise _Failed(f"interface {interface!r} not found")
    return found[0]


def _interface(text: str, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """``a.b.c.d/len`` (or v6); the prefix length is required."""
    try:
        if "/" not in text:
            raise ValueError("missing prefix length")
        iface = ipaddress.ip_interface(text)
    except ValueError as exc:
        raise _Failed(f"invalid IPv{version} CIDR {text!r}: {exc}") from None
    if iface.version != version:
        raise _Failed(f"invalid IPv{version} CIDR {text!r}")
    return iface


def _address(text: str, version: int) -> str:
    """A plain address; a ``/len`` suffix (an interface address) is dropped."""
    try:
        addr = ipaddress.ip_interface(text).ip
    except ValueError as exc:
        raise _Failed(f"invalid IPv{version} address {text!r}: {exc}") from None
    if addr.version != version:
        raise _Failed(f"invalid IPv{version} address {text!r}")
    return str(addr)


async def ip_link_set(
    request: pb.IpLinkSetRequest, *, netns: str | None = None
) -> pb.IpLinkSetResponse:
    """``ip link set dev <if> up|down [mtu N]``; ``Internal("ipLinkSet: <reason>")``.

    Only IFF_UP is changed (``ifi_change = IFF_UP``), as ``ip link`` does. Cancellation
    waits for the netlink request to finish.
    """
    has_mtu = request.HasField("mtu")

    def work(ipr: IPRoute) -> None:
        kwargs: dict[str, Any] = {"state": "up" if request.up else "down"}
        if has_mtu:
            kwargs["mtu"] = request.mtu
        ipr.link("set", index=_index(ipr, request.interface), **kwargs)

    await _run("ipLinkSet", netns, work)
    return pb.IpLinkSetResponse()


def _write_ipv6_conf(interface: str, name: str) -> None:
    try:
        with open(f"{IPV6_CONF}/{interface}/{name}", "w") as conf:
            conf.write("0")
    except OSError as exc:
        log.warning("ipAddrAdd: cannot write %s for %s: %s", name, interface, os_reason(exc))


async def ip_addr_add(
    request: pb.IpAddrAddRequest, *, netns: str | None = None
) -> pb.IpAddrAddResponse:
    """Add the (required) IPv4 CIDR and, if present, the IPv6 CIDR to an interface.

    For IPv6, router advertisements and autoconfiguration are switched off first
    (``accept_ra``/``autoconf`` = 0; failures only logged) and the address is added with
    IFA_F_NODAD|IFA_F_PERMANENT. An existing address fails (EEXIST). Raises
    ``Internal("ipAddrAdd: <reason>")``. Cancellation waits for the requests in progress.
    """
    has_v6 = request.HasField("ipv6Address")

    def work(ipr: IPRoute) -> None:
        v4 = _interface(request.ipv4Address, 4)
        index = _index(ipr, request.interface)
        ipr.addr(
            "add",
            index=index,
            family=socket.AF_INET,
            address=str(v4.ip),
            prefixlen=v4.network.prefixlen,
            local=str(v4.ip),
            scope=RT_SCOPE_UNIVERSE,
        )
        if has_v6:
            v6 = _interface(request.ipv6Address, 6)
            # The interface name came back from the kernel, so it holds no "/" or "..".
            _write_ipv6_conf(request.interface, "accept_ra")
            _write_ipv6_conf(request.interface, "autoconf")
            ipr.addr(
                "add",
                index=index,
                family=socket.AF_INET6,
                address=str(v6.ip),
                prefixlen=v6.network.prefixlen,
                scope=RT_SCOPE_UNIVERSE,
                flags=IFA_F_NODAD | IFA_F_PERMANENT,
            )

    await _run("ipAddrAdd", netns, work)
    return pb.IpAddrAddResponse()


async def ip_route_add_link(
    request: pb.IpRouteAddLinkRequest, *, netns: str | None = None
) -> pb.IpRouteAddLinkResponse:
    """A link-scope route to a destination (the host's off-subnet gateway).

    IPv4: proto kernel, scope link; IPv6: proto static, scope link; ``src`` becomes the
    preferred source when given. Neither destination given →
    ``InvalidArgument("ipRouteAddLink: ...")``; other errors → ``Internal("ipRouteAddLink:
    <reason>")``.
    """
    has_v6 = request.HasField("dstIpv6Addr")
    if not request.dstIpv4Addr and not has_v6:
        raise InvalidArgument("ipRouteAddLink: no IPv4 or IPv6 destination given")

    def add(ipr: IPRoute, index: int, family: int, dst: str, src: str | None, proto: int) -> None:
        version = 4 if family == socket.AF_INET else 6
        net = _interface(dst, version)
        kwargs: dict[str, Any] = {}
        if src:
            kwargs["prefsrc"] = _address(src, version)
        ipr.route(
            "add",
            family=family,
            dst=str(net.ip),
            dst_len=net.network.prefixlen,
            table=RT_TABLE_MAIN,
            proto=proto,
            scope=RT_SCOPE_LINK,
            type=RTN_UNICAST,
            oif=index,
            **kwargs,
        )

    def work(ipr: IPRoute) -> None:
        index = _index(ipr, request.interface)
        if request.dstIpv4Addr:
            add(ipr, index, socket.AF_INET, request.dstIpv4Addr, request.srcIpv4Addr, RTPROT_KERNEL)
        if has_v6:
            src6 = request.srcIpv6Addr if request.HasField("srcIpv6Addr") else None
            add(ipr, index, socket.AF_INET6, request.dstIpv6Addr, src6, RTPROT_STATIC)

    await _run("ipRouteAddLink", netns, work)
    return pb.IpRouteAddLinkResponse()


async def ip_route_add_default(
    request: pb.IpRouteAddDefaultRequest, *, netns: str | None = None
) -> pb.IpRouteAddDefaultResponse:
    """Default route(s), protocol boot: IPv4 via ``ipv4Gateway``; with neither gateway an
    IPv4 ``default dev <if>`` (scope link); IPv6 via ``ipv6Gateway`` when present.

    Raises ``Internal("ipRouteAddDefault: <reason>")``.
    """
    has_v6 = request.HasField("ipv6Gateway")

    def default(ipr: IPRoute, index: int, family: int, gateway: str | None) -> None:
        kwargs: dict[str, Any] = {}
        scope = RT_SCOPE_LINK
        if gateway is not None:
            kwargs["gateway"] = _address(gateway, 4 if family == socket.AF_INET else 6)
            scope = RT_SCOPE_UNIVERSE
        ipr.route(
            "add",
            family=family,
            dst_len=0,
            table=RT_TABLE_MAIN,
            proto=RTPROT_BOOT,
            scope=scope,
            type=RTN_UNICAST,
            oif=index,
            **kwargs,
        )

    def work(ipr: IPRoute) -> None:
        index = _index(ipr, request.interface)
        if request.ipv4Gateway:
            default(ipr, index, socket.AF_INET, request.ipv4Gateway)
        elif not has_v6:
            default(ipr, index, socket.AF_INET, None)
        if has_v6:
            default(ipr, index, socket.AF_INET6, request.ipv6Gateway)

    await _run("ipRouteAddDefault", netns, work)
    return pb.IpRouteAddDefaultResponse()
