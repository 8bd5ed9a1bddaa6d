"""RPC round-trip benchmark: the real agent (``trinit agent``) versus a grpcio server.

The agent is started the way a host meets it: ``trinit agent`` as PID 1 of fresh namespaces
(:class:`trinit.host.LocalAgent`, unix transport, the CLI's default log level ``info``). The
baseline is a grpcio sync server (4 worker threads) in its own subprocess serving the same
Getenv semantics (the agent's environment; a key with NUL is "not set"). One grpcio client
drives both with unary Getenv calls, each with a deadline (``timeout=10``, so every request
carries ``grpc-timeout`` as a host's do): sequentially, and from several threads sharing
one channel. The rounds alternate between the two servers, so load from elsewhere on the
machine hits both alike; the summary gives each one's median round, the trinit/grpcio
ratio of the medians and the spread (min-max of the per-round ratios).

    .venv/bin/python bench/rpc.py [--calls N] [--threads T] [--rounds R] [--profile FILE]

``--profile FILE`` runs the agent with ``TRINIT_PROFILE=FILE`` (a developer switch, see
``trinit.__main__``): the agent writes a cProfile of its whole life to FILE when it stops,
and this script prints the top of it. Profiling slows the agent; its ratios then mean
nothing. Not a CI gate; numbers depend on the machine. Takes about 10-20 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import grpc

from trinit._proto import sandbox_pb2 as pb
from trinit._proto import sandbox_pb2_grpc as pb_grpc

READY = "ready"
GRPCIO_WORKERS = 4


# -- the baseline server (runs in a subprocess) -----------------------------------------


class _GrpcioServicer(pb_grpc.SandboxContextServicer):
    """Getenv as the agent answers it (``trinit.system.getenv``)."""

    def Getenv(self, request: pb.GetenvRequest, context: Any) -> pb.GetenvResponse:
        key = request.key
        value = None if "\x00" in key else os.environ.get(key)
        return pb.GetenvResponse() if value is None else pb.GetenvResponse(value=value)


def _serve_grpcio_sync(path: str) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPCIO_WORKERS))
    pb_grpc.add_SandboxContextServicer_to_server(_GrpcioServicer(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix:{path}")
    server.start()
    print(READY, flush=True)
    server.wait_for_termination()


def _die_with_parent() -> None:
    """The server subprocess must not outlive an interrupted benchmark (PR_SET_PDEATHSIG)."""
    import signal

    from trinit import _linux

    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)


def _start_grpcio(path: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", path], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != READY:
        process.kill()
        process.wait()
        raise RuntimeError(f"grpcio server did not start (got {line!r})")
    return process


# -- client ----------------------------------------------------------------------------


def _sequential(stub: Any, calls: int) -> float:
    request = pb.GetenvRequest(key="PATH")
    started = time.perf_counter()
    for _ in range(calls):
        stub.Getenv(request, timeout=10)
    return calls / (time.perf_counter() - started)


def _threaded(stub: Any, calls: int, threads: int) -> float:
    request = pb.GetenvRequest(key="PATH")
    per_thread = calls // threads
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(per_thread):
            stub.Getenv(request, timeout=10)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    return per_thread * threads / (time.perf_counter() - started)


def _print_profile(path: str, limit: int = 35) -> None:
    import pstats

    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per measurement")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the agent into FILE")
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _die_with_parent()
        _serve_grpcio_sync(args.serve)
        return

    from trinit.host import LocalAgent

    if args.profile:
        os.environ["TRINIT_PROFILE"] = os.path.abspath(args.profile)
    kinds = ("trinit", "grpcio")
    results: dict[str, list[list[float]]] = {kind: [[], []] for kind in kinds}
    with (
        tempfile.TemporaryDirectory(prefix="trn-rpc-", dir="/tmp") as directory,
        ExitStack() as stack,
    ):
        agent = LocalAgent.start(Path(directory) / "agent", log_level="info", cgroups=False)
        stack.callback(agent.remove)
        stack.callback(agent.stop)
        grpcio_path = os.path.join(directory, "grpcio.sock")
        server = _start_grpcio(grpcio_path)
        stack.callback(server.wait)
        stack.callback(server.kill)
        targets = {"trinit": str(agent.directory / "guest_1024"), "grpcio": grpcio_path}
        stubs = {}
        for kind in kinds:
            channel = grpc.insecure_channel(
                f"unix:{targets[kind]}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            stack.callback(channel.close)
            stubs[kind] = pb_grpc.SandboxContextStub(channel)  # type: ignore[no-untyped-call]
            _sequential(stubs[kind], 200)  # warm up: connection, caches
        for _ in range(args.rounds):
            for kind in kinds:
                results[kind][0].append(_sequential(stubs[kind], args.calls))
                results[kind][1].append(_threaded(stubs[kind], args.calls, args.threads))
    print(
        f"unary Getenv with a deadline, grpcio {grpc.__version__} client, unix socket, "
        f"{args.rounds} interleaved rounds x {args.calls} calls; trinit agent (LocalAgent) vs "
        f"grpcio sync server ({GRPCIO_WORKERS} workers)"
    )
    print(f"{'server':<10}{'sequential (median, min-max)':>34}{f'{args.threads} threads':>30}")
    for kind in kinds:
        cells = []
        for rates in results[kind]:
            cells.append(
                f"{statistics.median(rates):>7.0f} c/s ({min(rates):.0f}-{max(rates):.0f})"
            )
        print(f"{kind:<10}{cells[0]:>34}{cells[1]:>30}")
    row = []
    for index in (0, 1):
        ours, theirs = results["trinit"][index], results["grpcio"][index]
        per_round = [a / b for a, b in zip(ours, theirs, strict=True)]
        ratio = statistics.median(ours) / statistics.median(theirs)
        row.append(f"{ratio:.2f}x ({min(per_round):.2f}-{max(per_round):.2f})")
    print(f"{'ratio':<10}{row[0]:>34}{row[1]:>30}   (trinit / grpcio; per-round spread)")
    if args.profile:
        _print_profile(args.profile)


if __name__ == "__main__":
    main()
