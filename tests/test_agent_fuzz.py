"""Hypothesis against a real agent: no request crashes it or leaves it unable to answer.

Requests are fuzzed through the grpcio client, both as arbitrary bytes (malformed protobuf)
and as well-formed messages with arbitrary field values. RPCs whose effects reach beyond the
agent's own namespaces are left out (SetTime, Sysctl, SetupEmulator, Kill, FIFREEZE/FITRIM,
COPY_IN, ProxyVsock, Mount/Umount); paths of the writing RPCs stay under the agent's
private /run. After every request the agent must still answer Getenv.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent

SERVICE = "/com.apple.containerization.sandbox.v3.SandboxContext/"
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.text(max_size=40)
ids = st.one_of(st.just(""), st.text(alphabet="abc/.\0-", max_size=6), text)
run_paths = (
    st.text(alphabet="abcxyz/._- \0\n", max_size=30)
    .filter(lambda p: ".." not in p)
    .map(lambda p: "/run/fuzz/" + p)
)


@pytest.fixture(scope="module")
def fuzz_agent() -> Iterator[LocalAgent]:
    # no dial retries: COPY_OUT to a port nobody listens on would wait 2 s per example
    agent = LocalAgent.start(log_level="info", extra_args=("--dial-retry", "0"))
    try:
        yield agent
    finally:
        agent.stop()
        agent.remove()


def _call(agent: LocalAgent, method: str, body: bytes) -> None:
    call = agent.host.channel.unary_unary(
        SERVICE + method, request_serializer=None, response_deserializer=None
    )
    try:
        call(body, timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() in {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.ALREADY_EXISTS,
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }, (method, exc.code(), exc.details())
        assert "Traceback" not in (exc.details() or "")


def _still_serving(agent: LocalAgent) -> None:
    agent.host.stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=10)
    assert agent.alive()


SAFE_METHODS = [
    "Stat",
    "Getenv",
    "CreateProcess",
    "StartProcess",
    "WaitProcess",
    "KillProcess",
    "DeleteProcess",
    "ResizeProcess",
    "CloseProcessStdin",
    "ContainerStatistics",
    "StopVsockProxy",
    "IpLinkSet",
    "IpAddrAdd",
    "IpRouteAddLink",
    "IpRouteAddDefault",
]


@FUZZ
@given(method=st.sampled_from(SAFE_METHODS), body=st.binary(max_size=200))
def test_arbitrary_bytes(fuzz_agent: LocalAgent, method: str, body: bytes) -> None:
    _call(fuzz_agent, method, body)
    _still_serving(fuzz_agent)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
spec_like = st.fixed_dictionaries(
    {"ociVersion": st.just("")},
    optional={
        "process": json_values,
        "root": json_values,
        "linux": json_values,
        "mounts": json_values,
        "hostname": json_values,
    },
)


@FUZZ
@given(cid=ids, same=st.booleans(), spec=spec_like, stdin=st.none() | st.integers(0, 2**32 - 1))
def test_create_process_with_odd_specs(
    fuzz_agent: LocalAgent, cid: str, same: bool, spec: dict[str, Any], stdin: int | None
) -> None:
    request = pb.CreateProcessRequest(
        id=cid if same else cid + "x", containerID=cid, configuration=json.dumps(spec).encode()
    )
    if stdin is not None:
        request.stdin = stdin
    _call(fuzz_agent, "CreateProcess", request.SerializeToString())
    # whatever got created is deleted again, so the next example starts clean
    try:
        fuzz_agent.host.stub.DeleteProcess(
            pb.DeleteProcessRequest(id=cid, containerID=cid), timeout=10
        )
    except grpc.RpcError:
        pass
    _still_serving(fuzz_agent)


@FUZZ
@given(
    path=run_paths,
    data=st.binary(max_size=64),
    mode=st.integers(0, 2**32 - 1),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    perms=st.integers(0, 2**32 - 1),
    all_=st.booleans(),
)
def test_files_under_run(
    fuzz_agent: LocalAgent,
    path: str,
    data: bytes,
    mode: int,
    flags: tuple[bool, bool, bool],
    perms: int,
    all_: bool,
) -> None:
    stub = fuzz_agent.host.stub
    write = pb.WriteFileRequest(
        path=path,
        data=data,
        mode=mode,
        flags=pb.WriteFileRequest.WriteFileFlags(
            create_parent_dirs=flags[0], append=flags[1], create_if_missing=flags[2]
        ),
    )
    _call(fuzz_agent, "WriteFile", write.SerializeToString())
    _call(
        fuzz_agent, "Mkdir", pb.MkdirRequest(path=path, all=all_, perms=perms).SerializeToString()
    )
    _call(fuzz_agent, "Stat", pb.StatRequest(path=path).SerializeToString())
    dns = pb.ConfigureDnsRequest(location=path, nameservers=[path[-8:]], searchDomains=["a\nb"])
    _call(fuzz_agent, "ConfigureDns", dns.SerializeToString())
    hosts = pb.ConfigureHostsRequest(
        location=path,
        entries=[
            pb.ConfigureHostsRequest.HostsEntry(
                ipAddress=path[-5:], hostnames=[path[:5]], comment=path[3:9]
            )
        ],
    )
    _call(fuzz_agent, "ConfigureHosts", hosts.SerializeToString())
    out = pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=path, vsock_port=1)
    try:
        list(stub.Copy(out, timeout=5))
    except grpc.RpcError as exc:
        assert "Traceback" not in (exc.details() or "")
    _still_serving(fuzz_agent)


@FUZZ
@given(
    interface=st.sampled_from(["lo", "eth0", "", "x" * 20, "lo\0"]),
    v4=st.one_of(
        st.just(""),
        st.from_regex(r"\A[0-9./a-z:]{0,20}\Z"),
        st.ip_addresses(v=4).map(lambda a: f"{a}/24"),
    ),
    v6=st.none() | st.ip_addresses(v=6).map(lambda a: f"{a}/64"),
    mtu=st.none() | st.integers(0, 2**32 - 1),
    up=st.booleans(),
)
def test_netlink_requests(
    fuzz_agent: LocalAgent, interface: str, v4: str, v6: str | None, mtu: int | None, up: bool
) -> None:
    link = pb.IpLinkSetRequest(interface=interface, up=up)
    if mtu is not None:
        link.mtu = mtu
    _call(fuzz_agent, "IpLinkSet", link.SerializeToString())
    addr = pb.IpAddrAddRequest(interface=interface, ipv4Address=v4)
    if v6 is not None:
        addr.ipv6Address = v6
    _call(fuzz_agent, "IpAddrAdd", addr.SerializeToString())
    route = pb.IpRouteAddLinkRequest(
        interface=interface, dstIpv4Addr=v4, srcIpv4Addr=v4.split("/")[0]
    )
    _call(fuzz_agent, "IpRouteAddLink", route.SerializeToString())
    default = pb.IpRouteAddDefaultRequest(interface=interface, ipv4Gateway=v4.split("/")[0])
    _call(fuzz_agent, "IpRouteAddDefault", default.SerializeToString())
    _still_serving(fuzz_agent)
