"""ConfigureDns/ConfigureHosts: byte-exact rendering and atomic installation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument
from trinit.system import configure_dns, configure_hosts, render_hosts, render_resolv_conf

Entry = pb.ConfigureHostsRequest.HostsEntry


def test_render_resolv_conf_full() -> None:
    request = pb.ConfigureDnsRequest(
        nameservers=["8.8.8.8", "1.1.1.1"],
        domain="example.com",
        searchDomains=["internal.com", "test.com"],
        options=["ndots:2", "timeout:1"],
    )
    assert render_resolv_conf(request) == (
        b"nameserver 8.8.8.8\nnameserver 1.1.1.1\ndomain example.com\n"
        b"search internal.com test.com\noptions ndots:2 timeout:1\n"
    )


def test_render_resolv_conf_empty_and_partial() -> None:
    assert render_resolv_conf(pb.ConfigureDnsRequest()) == b""
    assert (
        render_resolv_conf(pb.ConfigureDnsRequest(nameservers=["10.0.0.1"]))
        == b"nameserver 10.0.0.1\n"
    )
    assert render_resolv_conf(pb.ConfigureDnsRequest(options=["rotate"])) == b"options rotate\n"


def test_render_hosts() -> None:
    request = pb.ConfigureHostsRequest(
        entries=[Entry(ipAddress="127.0.0.1", hostnames=["localhost"], comment="Testaroo")]
    )
    assert render_hosts(request) == b"127.0.0.1 localhost # Testaroo \n"
    request = pb.ConfigureHostsRequest(
        comment="managed",
        entries=[
            Entry(ipAddress="127.0.0.1", hostnames=["localhost"]),
            Entry(ipAddress="::1", hostnames=["localhost", "ip6-localhost"]),
            Entry(ipAddress="10.0.0.2"),
        ],
    )
    assert render_hosts(request) == (
        b"# managed\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.0.0.2\n"
    )
    assert render_hosts(pb.ConfigureHostsRequest()) == b"\n"


async def test_configure_dns_writes_atomically(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    await configure_dns(pb.ConfigureDnsRequest(location=str(rootfs), nameservers=["1.1.1.1"]))
    target = rootfs / "etc" / "resolv.conf"
    assert target.read_bytes() == b"nameserver 1.1.1.1\n"
    assert target.stat().st_mode & 0o777 == 0o644
    inode = target.stat().st_ino
    await configure_dns(pb.ConfigureDnsRequest(location=str(rootfs), nameservers=["9.9.9.9"]))
    assert target.read_bytes() == b"nameserver 9.9.9.9\n"
    assert target.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert os.listdir(rootfs / "etc") == ["resolv.conf"]  # no temporary left behind


async def test_configure_hosts_replaces_symlink_not_target(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "hosts").symlink_to(outside)
    await configure_hosts(
        pb.ConfigureHostsRequest(
            location=str(tmp_path / "rootfs"),
            entries=[Entry(ipAddress="127.0.0.1", hostnames=["a"])],
        )
    )
    assert outside.read_text() == "keep"
    assert not (etc / "hosts").is_symlink()
    assert (etc / "hosts").read_bytes() == b"127.0.0.1 a\n"


async def test_etc_symlink_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "etc").symlink_to(elsewhere)
    with pytest.raises(Internal, match=r"^configureDns: .*\(ELOOP\)"):
        await configure_dns(pb.ConfigureDnsRequest(location=str(rootfs), nameservers=["1.1.1.1"]))
    assert os.listdir(elsewhere) == []


async def test_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(Internal, match=r"^configureHosts: "):
        await configure_hosts(pb.ConfigureHostsRequest(location=str(tmp_path / "file")))
    with pytest.raises(InvalidArgument, match=r"^configureDns: "):
        await configure_dns(
            pb.ConfigureDnsRequest(location=str(tmp_path), nameservers=["1.1.1.1\nsearch x"])
        )
    assert not (tmp_path / "etc").exists()
