"""RPC round-trip benchmark: trinit.rpc.serve versus a grpcio server, same proto, same client.

Each server runs in its own subprocess (so neither shares a GIL with the client) on a unix
socket in a temporary directory, with a servicer whose Getenv returns a fixed value. The
grpcio client then drives each one with N unary Getenv calls, sequentially and from
several threads sharing one channel, and prints calls/s and the trinit/grpcio ratio.

    .venv/bin/python bench/rpc.py [--calls N] [--threads T] [--rounds R]
                                  [--grpcio-server sync|aio]

Both servers run at once and the rounds alternate between them, so that load from
elsewhere on the machine hits both alike; each server's best round is reported. Not a CI
gate; numbers depend on the machine. Takes about 20-30 s with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from contextlib import ExitStack
from typing import Any

import grpc

from trinit._proto import sandbox_pb2 as pb
from trinit._proto import sandbox_pb2_grpc as pb_grpc

READY = "ready"


# -- servers (run in subprocesses) -----------------------------------------------------


def _serve_trinit(path: str) -> None:
    import socket

    import trio

    from trinit._proto.sandbox_grpc import SandboxContextServicer
    from trinit.rpc import serve

    class Servicer(SandboxContextServicer):
        async def Getenv(self, request: pb.GetenvRequest) -> pb.GetenvResponse:
            return pb.GetenvResponse(value="bench")

    async def main() -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(128)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, trio.SocketListener(sock), Servicer())
            print(READY, flush=True)

    trio.run(main)


class _GrpcioServicer(pb_grpc.SandboxContextServicer):
    def Getenv(self, request: pb.GetenvRequest, context: Any) -> pb.GetenvResponse:
        return pb.GetenvResponse(value="bench")


class _GrpcioAioServicer(pb_grpc.SandboxContextServicer):
    async def Getenv(self, request: pb.GetenvRequest, context: Any) -> pb.GetenvResponse:
        return pb.GetenvResponse(value="bench")


def _serve_grpcio_sync(path: str) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_SandboxContextServicer_to_server(_GrpcioServicer(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix:{path}")
    server.start()
    print(READY, flush=True)
    server.wait_for_termination()


def _serve_grpcio_aio(path: str) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_SandboxContextServicer_to_server(_GrpcioAioServicer(), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        print(READY, flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


SERVERS: dict[str, Callable[[str], None]] = {
    "trinit": _serve_trinit,
    "grpcio-sync": _serve_grpcio_sync,
    "grpcio-aio": _serve_grpcio_aio,
}


def _die_with_parent() -> None:
    """A server subprocess must not outlive an interrupted benchmark (PR_SET_PDEATHSIG)."""
    import signal

    from trinit import _linux

    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)


def _start_server(kind: str, path: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != READY:
        process.kill()
        process.wait()
        raise RuntimeError(f"{kind} server did not start (got {line!r})")
    return process


# -- client ----------------------------------------------------------------------------


def _sequential(stub: Any, calls: int) -> float:
    request = pb.GetenvRequest(key="HOME")
    started = time.perf_counter()
    for _ in range(calls):
        stub.Getenv(request, timeout=10)
    return calls / (time.perf_counter() - started)


def _threaded(stub: Any, calls: int, threads: int) -> float:
    request = pb.GetenvRequest(key="HOME")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per measurement")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--grpcio-server", choices=["sync", "aio"], default="sync")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _die_with_parent()
        kind, path = args.serve
        SERVERS[kind](path)
        return

    reference = f"grpcio-{args.grpcio_server}"
    kinds = ("trinit", reference)
    best = {kind: [0.0, 0.0] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="trinit-bench-") as directory, ExitStack() as stack:
        stubs = {}
        for kind in kinds:
            path = os.path.join(directory, f"{kind}.sock")
            server = _start_server(kind, path)
            stack.callback(server.wait)
            stack.callback(server.kill)
            channel = grpc.insecure_channel(
                f"unix:{path}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            stack.callback(channel.close)
            stubs[kind] = pb_grpc.SandboxContextStub(channel)  # type: ignore[no-untyped-call]
            _sequential(stubs[kind], 500)  # warm up: connection, caches
        # Interleave the servers so that load from elsewhere on the machine hits both alike;
        # keep each one's best round.
        for _ in range(args.rounds):
            for kind in kinds:
                best[kind][0] = max(best[kind][0], _sequential(stubs[kind], args.calls))
                best[kind][1] = max(best[kind][1], _threaded(stubs[kind], args.calls, args.threads))
    print(
        f"unary Getenv, grpcio {grpc.__version__} client, unix socket, "
        f"best of {args.rounds} x {args.calls} calls"
    )
    print(f"{'server':<14}{'sequential':>16}{f'{args.threads} threads':>16}")
    for kind in kinds:
        sequential, concurrent = best[kind]
        print(f"{kind:<14}{sequential:>12.0f} c/s{concurrent:>12.0f} c/s")
    ours, theirs = best["trinit"], best[reference]
    print(
        f"{'ratio':<14}{ours[0] / theirs[0]:>16.2f}{ours[1] / theirs[1]:>16.2f}"
        f"   (trinit / {reference})"
    )


if __name__ == "__main__":
    main()
