"""End to end: the system RPCs through a real agent (grpcio client, unix transport)."""

from __future__ import annotations

import gzip
import io
import os
import socket
import tarfile
import threading
from collections.abc import Callable

import grpc
import pytest
from agentlib import Container, log_shows

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent


def _code(call: Callable[..., object], *args: object, **kw: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    return info.value.code()


def test_files_stat_and_dns(agent: LocalAgent) -> None:
    stub = agent.host.stub
    stub.Mkdir(pb.MkdirRequest(path="/run/t/a/b", all=True, perms=0o750))
    stub.WriteFile(
        pb.WriteFileRequest(
            path="/run/t/a/b/f",
            data=b"hello",
            mode=0o640,
            flags=pb.WriteFileRequest.WriteFileFlags(create_if_missing=True),
        )
    )
    st = stub.Stat(pb.StatRequest(path="/run/t/a/b/f")).stat
    assert (st.size, st.mode & 0o777) == (5, 0o640)
    assert stub.Stat(pb.StatRequest(path="/run/t/a/b")).stat.mode & 0o777 == 0o750
    assert _code(stub.Stat, pb.StatRequest(path="/run/t/missing")) == grpc.StatusCode.NOT_FOUND
    stub.ConfigureDns(
        pb.ConfigureDnsRequest(
            location="/run/t",
            nameservers=["8.8.8.8", "1.1.1.1"],
            domain="example.com",
            searchDomains=["internal.com", "test.com"],
            options=["ndots:2", "timeout:1"],
        )
    )
    data, archive = agent.host.copy_out("/run/t/etc/resolv.conf")
    assert not archive
    assert data == (
        b"nameserver 8.8.8.8\nnameserver 1.1.1.1\ndomain example.com\n"
        b"search internal.com test.com\noptions ndots:2 timeout:1\n"
    )
    stub.ConfigureHosts(
        pb.ConfigureHostsRequest(
            location="/run/t",
            entries=[
                pb.ConfigureHostsRequest.HostsEntry(
                    ipAddress="127.0.0.1", hostnames=["localhost"], comment="Testaroo"
                )
            ],
        )
    )
    assert agent.host.copy_out("/run/t/etc/hosts")[0] == b"127.0.0.1 localhost # Testaroo \n"


def test_copy_round_trips(agent: LocalAgent) -> None:
    host = agent.host
    payload = bytes(range(256)) * 40960  # 10 MiB, patterned
    host.copy_in(payload, "/run/copy/big.bin", create_parents=True, mode=0o600)
    assert host.copy_out("/run/copy/big.bin") == (payload, False)
    host.copy_in(b"", "/run/copy/empty")
    assert host.copy_out("/run/copy/empty") == (b"", False)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content in (
            ("./", tarfile.DIRTYPE, b""),
            ("sub/", tarfile.DIRTYPE, b""),
            ("sub/deep/", tarfile.DIRTYPE, b""),
            ("emptydir/", tarfile.DIRTYPE, b""),
            ("sub/deep/file", tarfile.REGTYPE, b"nested"),
        ):
            info = tarfile.TarInfo(name.rstrip("/") or ".")
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "sub/deep/file"
        tar.addfile(link)
    host.copy_in(buf.getvalue(), "/run/tree", is_archive=True)
    data, archive = host.copy_out("/run/tree")
    assert archive
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        names = {m.name for m in tar.getmembers()}
        assert {"./", "sub/deep/file", "emptydir", "link"} <= names | {"./"}
        member = tar.extractfile("sub/deep/file")
        assert member is not None
        assert member.read() == b"nested"
        assert tar.getmember("link").linkname == "sub/deep/file"
    assert (
        _code(
            lambda: list(
                host.stub.Copy(
                    pb.CopyRequest(
                        direction=pb.CopyRequest.COPY_OUT, path="/run/nope", vsock_port=1
                    )
                )
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


def test_proxy_into_and_out_of_with_half_close(agent: LocalAgent) -> None:
    host, stub = agent.host, agent.host.stub
    # INTO: a host service (listening on DIR/host_<P>) exposed at a unix socket in the guest.
    port = host.ports.next()
    service = socket.socket(socket.AF_UNIX)
    service.bind(str(agent.directory / f"host_{port}"))
    service.listen(1)

    def echo_upper() -> None:
        conn, _ = service.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(data.upper())  # the other direction still flows after half-close

    threading.Thread(target=echo_upper, daemon=True).start()
    guest_sock = f"/tmp/trinit-proxy-test-{os.getpid()}.sock"
    stub.ProxyVsock(
        pb.ProxyVsockRequest(
            id="in",
            vsock_port=port,
            guestPath=guest_sock,
            guestSocketPermissions=0o600,
            action=pb.ProxyVsockRequest.INTO,
        )
    )
    assert _code(
        stub.ProxyVsock,
        pb.ProxyVsockRequest(
            id="in", vsock_port=port, guestPath=guest_sock, action=pb.ProxyVsockRequest.INTO
        ),
    ) in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INTERNAL)
    assert os.stat(guest_sock).st_mode & 0o777 == 0o600
    client = socket.socket(socket.AF_UNIX)
    client.connect(guest_sock)
    payload = os.urandom(3 * 1024 * 1024)
    client.sendall(payload)
    client.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := client.recv(1 << 20):
        got += chunk
    assert got == payload.upper()
    client.close()
    stub.StopVsockProxy(pb.StopVsockProxyRequest(id="in"))
    assert not os.path.exists(guest_sock)
    assert _code(stub.StopVsockProxy, pb.StopVsockProxyRequest(id="in")) in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INTERNAL,
    )
    service.close()

    # OUT_OF: a guest unix service exposed on the guest port (DIR/guest_<P>).
    guest_service_path = f"/tmp/trinit-guest-svc-{os.getpid()}.sock"
    guest_service = socket.socket(socket.AF_UNIX)
    guest_service.bind(guest_service_path)
    guest_service.listen(1)

    def reply_once() -> None:
        conn, _ = guest_service.accept()
        with conn:
            request = conn.recv(100)
            conn.sendall(b"re:" + request)

    threading.Thread(target=reply_once, daemon=True).start()
    out_port = host.ports.next()
    stub.ProxyVsock(
        pb.ProxyVsockRequest(
            id="out",
            vsock_port=out_port,
            guestPath=guest_service_path,
            action=pb.ProxyVsockRequest.OUT_OF,
        )
    )
    c = socket.socket(socket.AF_UNIX)
    c.connect(str(agent.directory / f"guest_{out_port}"))
    c.sendall(b"ping")
    c.shutdown(socket.SHUT_WR)
    assert c.recv(100) == b"re:ping"
    c.close()
    stub.StopVsockProxy(pb.StopVsockProxyRequest(id="out"))
    guest_service.close()
    os.unlink(guest_service_path)


def test_proxies_never_take_over_a_live_socket(agent: LocalAgent) -> None:
    """OUT_OF on the API's own port, a second OUT_OF on a port, a second INTO on a path:
    ALREADY_EXISTS naming the path, and whoever held it keeps it."""
    host, stub = agent.host, agent.host.stub

    def proxy(
        proxy_id: str, port: int, path: str, action: pb.ProxyVsockRequest.Action
    ) -> grpc.RpcError | None:
        try:
            stub.ProxyVsock(
                pb.ProxyVsockRequest(id=proxy_id, vsock_port=port, guestPath=path, action=action)
            )
        except grpc.RpcError as exc:
            return exc
        return None

    out = pb.ProxyVsockRequest.OUT_OF
    api = proxy("api", 1024, "/tmp/nothing-here.sock", out)
    assert api is not None and api.code() == grpc.StatusCode.ALREADY_EXISTS
    assert api.details() == (
        "proxyVsock: failed to setup vsock proxy: "
        f"{agent.directory}/guest_1024 is in use: another process is listening on it"
    )
    stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=10)  # the API still answers

    port = host.ports.next()
    assert proxy("first", port, "/tmp/first.sock", out) is None
    second = proxy("second", port, "/tmp/second.sock", out)
    assert second is not None and second.code() == grpc.StatusCode.ALREADY_EXISTS

    into = pb.ProxyVsockRequest.INTO
    path = f"/tmp/trinit-into-{os.getpid()}.sock"
    assert proxy("in1", host.ports.next(), path, into) is None
    taken = proxy("in2", host.ports.next(), path, into)
    assert taken is not None and taken.code() == grpc.StatusCode.ALREADY_EXISTS
    assert path in taken.details()
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(path)  # still in1's listener
    probe.close()
    for proxy_id in ("first", "in1"):
        stub.StopVsockProxy(pb.StopVsockProxyRequest(id=proxy_id))
    assert not os.path.exists(path)


def _closed_by_the_agent(path: str) -> bytes:
    """Connect to the proxy listening at ``path`` and read until the agent hangs up."""
    client = socket.socket(socket.AF_UNIX)
    with client:
        client.settimeout(30)
        client.connect(path)
        return client.recv(100)


def test_a_proxy_whose_far_end_is_missing_drops_the_connection_not_the_agent(
    agent: LocalAgent,
) -> None:
    """A proxy connection whose far end cannot be reached is closed, and only that
    connection ends. INTO to a host port nobody listens on: the dial gives up after its retry
    budget with UNAVAILABLE (not an OSError), which escaped the proxy and ended the agent,
    PID 1 in a VM, at a container's connect. OUT_OF to a missing socket in a rootfs (an
    OSError, which was already contained)."""
    host, stub = agent.host, agent.host.stub
    guest_sock = f"/tmp/trinit-proxy-nohost-{os.getpid()}.sock"
    into = pb.ProxyVsockRequest.INTO
    stub.ProxyVsock(
        pb.ProxyVsockRequest(id="in", vsock_port=host.ports.next(), guestPath=guest_sock,
                             action=into), timeout=10,
    )  # fmt: skip
    assert _closed_by_the_agent(guest_sock) == b""
    assert log_shows(agent, "proxy dial failed"), agent.log()[-3000:]
    ctr = Container(host)
    out_port = host.ports.next()
    stub.ProxyVsock(
        pb.ProxyVsockRequest(id="out", vsock_port=out_port, guestPath=f"{ctr.root}/run/none.sock",
                             action=pb.ProxyVsockRequest.OUT_OF), timeout=10,
    )  # fmt: skip
    assert _closed_by_the_agent(str(agent.directory / f"guest_{out_port}")) == b""
    assert agent.alive(), agent.log()[-3000:]
    stub.Setenv(pb.SetenvRequest(key="PROXY", value="survived"), timeout=10)
    for proxy_id in ("in", "out"):
        stub.StopVsockProxy(pb.StopVsockProxyRequest(id=proxy_id), timeout=10)
    assert not os.path.exists(guest_sock)
    host.unmount_rootfs(ctr.id)
