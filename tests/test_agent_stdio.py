"""End to end stdio: stdin through CloseProcessStdin, large and concurrent outputs."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from agentlib import Container, log_shows

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent


@pytest.mark.parametrize("size", [0, 5, 128 * 1024, 10 * 1024 * 1024])
def test_stdin_delivered_then_eof(agent: LocalAgent, size: int) -> None:
    data = os.urandom(size)
    result = Container(agent.host).run(["sh", "-c", "cat; echo done >&2"], input=data)
    assert result.exit_code == 0
    assert len(result.stdout) == size and result.stdout == data
    assert result.stderr == b"done\n"


def test_stdin_chunked(agent: LocalAgent) -> None:
    host = agent.host
    ctr = Container(host)
    proc = host.process(ctr.id, ctr.spec(["md5sum"]), stdin=True)
    proc.create()
    proc.start()
    digest = hashlib.md5()
    for i in range(200):
        chunk = bytes([i % 256]) * (i * 37 % 5000 + 1)
        digest.update(chunk)
        proc.write(chunk)
    proc.close_stdin()
    assert proc.wait(timeout=60) == 0
    proc.join_output()
    assert proc.stdout_data.split()[0].decode() == digest.hexdigest()
    proc.close()
    proc.delete()


def test_250mib_stdout_and_stderr_exact(agent: LocalAgent) -> None:
    host = agent.host
    ctr = Container(host)
    counts = {"out": 0, "err": 0}
    lock = threading.Lock()

    def sink(name: str) -> Callable[[bytes], None]:
        def add(data: bytes) -> None:
            # the producers write only zero bytes: count and verify without storing 500 MiB
            assert data.count(0) == len(data)
            with lock:
                counts[name] += len(data)

        return add

    size = 250 * 1024 * 1024
    script = f"head -c {size} /dev/zero & head -c {size} /dev/zero >&2; wait"
    proc = host.process(
        ctr.id, ctr.spec(["sh", "-c", script]), stdout_sink=sink("out"), stderr_sink=sink("err")
    )
    proc.create()
    proc.start()
    assert proc.wait(timeout=300) == 0
    proc.join_output()
    assert counts == {"out": size, "err": size}
    proc.close()
    proc.delete()


def test_81_concurrent_execs(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    init = ctr.start_init()

    def one(i: int) -> tuple[int, bytes]:
        result = ctr.exec(f"e{i}", ["sh", "-c", f"echo exec {i}; exit {i % 7}"])
        return result.exit_code, result.stdout

    with ThreadPoolExecutor(81) as pool:
        results = list(pool.map(one, range(81)))
    assert results == [(i % 7, f"exec {i}\n".encode()) for i in range(81)]
    init.kill(9)
    assert init.wait(timeout=30) == 137
    init.delete()


def test_200_fast_exits_keep_every_byte(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    init = ctr.start_init()
    for i in range(200):
        size = (i * 7919) % 70000
        result = ctr.exec("fast", ["head", "-c", str(size), "/dev/zero"])
        assert (result.exit_code, len(result.stdout)) == (0, size), i
    init.kill(9)
    init.wait(timeout=30)
    init.delete()


def test_descendant_holding_stdout_is_cut_after_the_drain_grace(agent: LocalAgent) -> None:
    import time

    ctr = Container(agent.host)
    init = ctr.start_init()
    start = time.monotonic()
    # the exec exits at once; its background child keeps stdout open for 60 s
    result = ctr.exec("bg", ["sh", "-c", "sleep 60 & echo before-exit"])
    elapsed = time.monotonic() - start
    assert (result.exit_code, result.stdout) == (0, b"before-exit\n")
    assert 1.5 < elapsed < 20, elapsed  # the agent's --drain-grace is 2 s
    assert log_shows(agent, "truncat"), agent.log()[-3000:]
    init.kill(9)
    init.wait(timeout=30)
    init.delete()


def test_stdio_port_nobody_listens_on_is_unavailable_naming_it(agent: LocalAgent) -> None:
    """The host may still be setting up its listener: the guest retries briefly, then
    fails the CreateProcess with UNAVAILABLE naming the stream and the port."""
    ctr = Container(agent.host)
    port = agent.host.ports.next()
    request = pb.CreateProcessRequest(
        id=ctr.id,
        containerID=ctr.id,
        stdout=port,
        configuration=json.dumps(ctr.spec(["true"])).encode(),
    )
    with pytest.raises(grpc.RpcError) as info:
        agent.host.stub.CreateProcess(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details().startswith(
        "createProcess: failed to create process: failed to connect stdout: "
    )
    assert f"host_{port} is not accepting connections: ENOENT" in info.value.details()
    # nothing half-made is left: the id is free again
    assert ctr.run(["echo", "ok"]).stdout == b"ok\n"
