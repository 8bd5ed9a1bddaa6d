"""Startup benchmark: exec of ``trinit agent`` to its first answered RPC, and idle RSS.

Goals (issue 2): first answer <= 200 ms, idle RSS <= 40 MiB. The agent runs as a plain
child (subreaper mode) on the unix transport in a temporary directory. The baseline printed
alongside is the bare interpreter start (``python -c pass``) measured in the same run.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trinit._proto import sandbox_pb2 as pb  # noqa: E402


def first_answer(directory: str) -> tuple[float, int]:
    """Seconds from exec to a Getenv reply, and the agent's VmRSS (KiB) once idle.

    The host side is warm before the clock starts (grpcio imported, its core initialised),
    as a VMM's long-running host process is: the time measured is trinit's.
    """
    sock_path = os.path.join(directory, "guest_1024")
    request = pb.GetenvRequest(key="PATH").SerializeToString()
    _warm_grpc(directory)
    start = time.perf_counter()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trinit",
            "agent",
            "--transport",
            f"unix:{directory}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        while not os.path.exists(sock_path):
            time.sleep(0.001)
        elapsed = _raw_unary(sock_path, "Getenv", request, start)
        time.sleep(1.0)
        rss = 0
        for line in Path(f"/proc/{agent.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return elapsed, rss
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)


def _warm_grpc(directory: str) -> None:
    import grpc

    with grpc.insecure_channel(f"unix:{directory}/nothing-here") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.05)
        except grpc.FutureTimeoutError:
            pass


def _raw_unary(path: str, method: str, body: bytes, start: float) -> float:
    """One unary call with grpcio, retried until the listener accepts; returns elapsed."""
    import grpc

    from trinit._proto.sandbox_pb2_grpc import SandboxContextStub

    channel = grpc.insecure_channel(f"unix:{path}")
    stub = SandboxContextStub(channel)
    while True:
        try:
            stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=5, wait_for_ready=True)
            break
        except grpc.RpcError:
            continue
    elapsed = time.perf_counter() - start
    channel.close()
    return elapsed


def bare_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    times, rss = [], []
    for _ in range(runs):
        directory = tempfile.mkdtemp(prefix="trn-bench-", dir="/tmp")
        try:
            t, r = first_answer(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        times.append(t)
        rss.append(r)
    base = statistics.median(bare_python() for _ in range(runs))
    med = statistics.median(times)
    print(
        f"startup to first RPC: median {med * 1000:.1f} ms over {runs} runs "
        f"(goal <= 200 ms; bare python start {base * 1000:.1f} ms, ratio {med / base:.2f}x)"
    )
    print(f"idle RSS: median {statistics.median(rss) / 1024:.1f} MiB (goal <= 40 MiB)")


if __name__ == "__main__":
    main()
