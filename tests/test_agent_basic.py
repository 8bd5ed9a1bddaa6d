"""End to end: a real agent (PID 1 of fresh namespaces) running busybox containers."""

from __future__ import annotations

import grpc
import pytest
from agentlib import Container

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent


def test_true_false_echo(agent: LocalAgent) -> None:
    host = agent.host
    assert Container(host).run(["true"]).exit_code == 0
    assert Container(host).run(["false"]).exit_code == 1
    result = Container(host).run(["echo", "hello", "world"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"hello world\n", b"")
    result = Container(host).run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")


def test_missing_executable(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    proc = agent.host.process(ctr.id, ctr.spec(["nosuchprog"]))
    proc.create()
    with pytest.raises(grpc.RpcError) as info:
        proc.start()
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "failed to find target executable nosuchprog" in info.value.details()
    proc.close()
    proc.delete()
    assert agent.host.stub.Getenv(pb.GetenvRequest(key="PATH")) is not None
