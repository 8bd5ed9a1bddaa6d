"""Abusive HTTP/2 peers against a real agent: memory held, and latency for everyone else.

Starts a real trinit agent the way a host uses it (``trinit.host.LocalAgent``: PID 1 of
fresh namespaces, unix transport in a temporary directory) and measures:

- memory: the agent's VmRSS (from /proc/<pid>/status) at baseline, while 8 connections
  each send a frame header declaring 16 MiB and then its payload, and 8 more each hold
  partial request bodies up to the per-connection cap, and after all of them have closed;
- fairness: the latency of Getenv on a grpcio connection (deadline on every call), first
  alone, then while another process floods a second connection with
  HEADERS+DATA+RST_STREAM triples; printed as p50/p99 and as a ratio to the baseline
  measured in the same run.

    .venv/bin/python bench/h2_abuse.py [--seconds S] [--calls N]

Only the agent's own unix socket is used. Takes about 15-25 s. Not a CI gate; numbers
depend on the machine (2 cores here: the flooder, the agent and the client share them).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import hpack  # type: ignore[import-untyped, unused-ignore]

from trinit._proto import sandbox_pb2 as pb
from trinit._proto import sandbox_pb2_grpc as pb_grpc
from trinit.host import LocalAgent

MiB = 1024 * 1024
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS = 0, 1, 3, 4
END_STREAM, END_HEADERS = 0x1, 0x4
CANCEL = 0x8
SERVICE = "com.apple.containerization.sandbox.v3.SandboxContext"
CALL_DEADLINE = 5.0


def frame(
    kind: int, flags: int, stream_id: int, payload: bytes, length: int | None = None
) -> bytes:
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def request_headers(encoder: hpack.Encoder, method: str) -> bytes:
    block: bytes = encoder.encode(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", f"/{SERVICE}/{method}".encode()),
            (b":authority", b"localhost"),
            (b"te", b"trailers"),
            (b"content-type", b"application/grpc"),
        ]
    )
    return block


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def settle_rss(pid: int, seconds: float = 10.0) -> float:
    """RSS once it has not fallen for a second (connections are torn down asynchronously,
    and the agent may still be reading what was sent before the close)."""
    deadline = time.monotonic() + seconds
    lowest = rss_mib(pid)
    stable_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < 1.0:
        time.sleep(0.1)
        now = rss_mib(pid)
        if now < lowest - 0.1:
            lowest = now
            stable_since = time.monotonic()
    return rss_mib(pid)


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5.0)
    sock.connect(path)
    return sock


def drain(sock: socket.socket) -> None:
    """Read and discard what the agent sends (a thread per connection, daemon)."""

    def run() -> None:
        try:
            while sock.recv(1 << 20):
                pass
        except OSError:
            pass

    threading.Thread(target=run, daemon=True).start()


def oversized_frames(path: str, count: int) -> list[socket.socket]:
    """Connections that each announce a 16 MiB DATA frame and try to send all of it."""
    socks = []
    payload = b"x" * MiB
    for _ in range(count):
        sock = connect(path)
        drain(sock)
        try:
            sock.sendall(
                PREFACE + frame(SETTINGS, 0, 0, b"") + frame(DATA, 0, 1, b"", 16 * MiB - 1)
            )
            for _ in range(16):
                sock.sendall(payload)
        except OSError:
            pass  # the agent refused the frame and closed the connection
        socks.append(sock)
    return socks


def partial_requests(path: str, count: int) -> list[socket.socket]:
    """Connections that each hold unfinished WriteFile bodies up to (and past) the cap."""
    socks = []
    part = 4 * MiB - 64 * 1024
    for _ in range(count):
        sock = connect(path)
        drain(sock)
        encoder = hpack.Encoder()
        try:
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
            for index in range(5):  # 5 x ~4 MiB: the fifth goes over a 16 MiB cap
                sid = 1 + 2 * index
                sock.sendall(
                    frame(HEADERS, END_HEADERS, sid, request_headers(encoder, "WriteFile"))
                )
                body = b"\x00" + (4 * MiB).to_bytes(4, "big") + b"w" * part
                for offset in range(0, len(body), 64 * 1024):
                    sock.sendall(frame(DATA, 0, sid, body[offset : offset + 64 * 1024]))
        except OSError:
            pass
        socks.append(sock)
    return socks


def flood(path: str, seconds: float) -> None:
    """(Subprocess) HEADERS+DATA+RST_STREAM triples on one connection as fast as possible."""
    sock = connect(path)
    sock.settimeout(None)
    drain(sock)
    encoder = hpack.Encoder()
    message = pb.GetenvRequest(key="PATH").SerializeToString()
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    rst = CANCEL.to_bytes(4, "big")
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
    sid = 1
    announced = False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = []
        for _ in range(300):
            batch.append(frame(HEADERS, END_HEADERS, sid, request_headers(encoder, "Getenv")))
            batch.append(frame(DATA, END_STREAM, sid, body))
            batch.append(frame(RST_STREAM, 0, sid, rst))
            sid += 2
        try:
            sock.sendall(b"".join(batch))
        except OSError as exc:
            print(f"flood connection ended: {exc}", flush=True)
            return
        if not announced:
            print("flooding", flush=True)
            announced = True
    print(f"flood sent {(sid - 1) // 2} requests", flush=True)


def getenv_latencies(
    stub: pb_grpc.SandboxContextStub, calls: int, seconds: float
) -> tuple[list[float], int]:
    """Sequential Getenv latencies (ms) for ``calls`` calls or ``seconds``, and failures."""
    request = pb.GetenvRequest(key="PATH")
    latencies: list[float] = []
    failures = 0
    stop = time.monotonic() + seconds
    while len(latencies) < calls and time.monotonic() < stop:
        started = time.perf_counter()
        try:
            stub.Getenv(request, timeout=CALL_DEADLINE)
        except grpc.RpcError:
            failures += 1
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, failures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="flood duration")
    parser.add_argument("--calls", type=int, default=2000, help="Getenv calls per measurement")
    parser.add_argument("--flood", nargs=2, metavar=("PATH", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        flood(args.flood[0], float(args.flood[1]))
        return

    with LocalAgent.start(log_level="info", cgroups=False) as agent:
        path = str(agent.directory / "guest_1024")
        pid = agent.pid
        channel = grpc.insecure_channel(
            f"unix:{path}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        stub = pb_grpc.SandboxContextStub(channel)  # type: ignore[no-untyped-call]
        getenv_latencies(stub, 200, 5.0)  # warm up
        baseline_rss = settle_rss(pid)

        frames = oversized_frames(path, 8)
        frames_rss = settle_rss(pid)
        partial = partial_requests(path, 8)
        partial_rss = settle_rss(pid)
        for sock in frames + partial:
            # shutdown first: a drain thread blocked in recv keeps a bare close() from
            # ending the connection.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        after_rss = settle_rss(pid)

        quiet, quiet_failures = getenv_latencies(stub, args.calls, 10.0)
        flooder = subprocess.Popen(
            [sys.executable, __file__, "--flood", path, str(args.seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert flooder.stdout is not None
        first = flooder.stdout.readline().strip()
        if first != "flooding":
            raise RuntimeError(f"flooder did not start: {first!r}")
        loud, loud_failures = getenv_latencies(stub, args.calls, args.seconds - 1.0)
        flood_rss = rss_mib(pid)
        flood_end = flooder.stdout.read().strip()
        flooder.wait()
        channel.close()
        agent_alive = agent.alive()

    def rss(label: str, value: float) -> None:
        print(f"  {label:<42}{value:7.1f} ({value - baseline_rss:+.1f})")

    def latency(label: str, values: list[float], failures: int) -> None:
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"  {label:<13}p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  ", end="")
        print(f"({len(values)} calls, {failures} failed)")

    print(f"agent RSS (MiB): baseline {baseline_rss:.1f}")
    rss("8 connections announcing 16 MiB frames:", frames_rss)
    rss("+ 8 connections holding partial requests:", partial_rss)
    rss("after all of them closed:", after_rss)
    rss("during the flood:", flood_rss)
    print(f"Getenv on a second connection, deadline {CALL_DEADLINE:g} s per call:")
    latency("alone:", quiet, quiet_failures)
    latency("under flood:", loud, loud_failures)
    ratio50 = percentile(loud, 0.5) / percentile(quiet, 0.5)
    ratio99 = percentile(loud, 0.99) / percentile(quiet, 0.99)
    print(f"  {'ratio:':<13}p50 {ratio50:8.1f}x     p99 {ratio99:8.1f}x")
    print(f"flooder: {flood_end}; agent alive afterwards: {agent_alive}")


if __name__ == "__main__":
    main()
