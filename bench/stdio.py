"""Stdout pump throughput: trinit's OutputPump against socat, a minimal relay and no relay.

A producer process writes N bytes (default 2 GiB) of zeros to its stdout (1 MiB per write(2)
unless ``--write-size`` says otherwise); a reader (this
process) drains a unix socket and times the transfer from its first byte to EOF, so process
start-up is not counted. Four set-ups:

  (a) no relay: the producer's stdout *is* the unix socket (the ceiling);
  (b) socat -b 1048576: producer -> pipe -> socat -> unix socket;
  (c) minimal relay: producer -> pipe -> bench/minimal_relay.c (a blocking splice loop in C,
      built here with cc) -> unix socket: the floor of what any relay costs on this machine;
  (d) trinit: producer -> pipe -> OutputPump (in its own python process) -> unix socket.

(b)-(d) use the same 1 MiB pipe (trinit.io.make_pipe); every relay and the ceiling get the
4 MiB send buffer trinit's pump sets. The set-ups run interleaved, one of each per round, and
the summary gives the median and the best round of each, so a slow spell of the machine
hits all of them alike. CPU per GiB is shown for each party: the producer (wait4), the
reader (this process, around the transfer) and the relay (socat and the minimal relay from
their own accounting of the whole process; trinit inside the pump process around
``OutputPump.run()`` only, no interpreter start-up or imports).

Run: .venv/bin/python bench/stdio.py [--size 2G] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from trinit.io import SEND_BUFFER, enlarge_send_buffer, make_pipe

BENCH = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
GiB = 1 << 30

PRODUCER = """
import os, sys
left = int(sys.argv[1])
chunk = memoryview(bytes(int(sys.argv[2])))
while left:
    left -= os.write(1, chunk[: min(left, len(chunk))])
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    size: int
    producer_cpu: float
    reader_cpu: float
    relay_cpu: float | None = None
    method: str = ""


@dataclass(frozen=True)
class Context:
    path: str
    listener: socket.socket
    size: int
    write_size: int
    minimal_relay: str | None


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drain(listener: socket.socket, size: int) -> tuple[float, float]:
    """Accept one connection, read it to EOF: (seconds from first byte to EOF, reader CPU)."""
    listener.settimeout(60)  # a relay that died before connecting must not hang the bench
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(None)
        buf = bytearray(MiB)
        view = memoryview(buf)
        got = conn.recv_into(view)
        start, cpu_start = time.perf_counter(), _cpu_self()
        while True:
            count = conn.recv_into(view)
            if count == 0:
                break
            got += count
        elapsed, cpu = time.perf_counter() - start, _cpu_self() - cpu_start
    if got != size:
        raise SystemExit(f"reader got {got} bytes, expected {size}")
    return elapsed, cpu


def producer(ctx: Context, stdout: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", PRODUCER, str(ctx.size), str(ctx.write_size)]
    return subprocess.Popen(argv, stdout=stdout)


def reap(proc: subprocess.Popen[bytes]) -> float:
    """Wait for ``proc``; its CPU seconds. Fails the bench if it did not exit 0."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def bench_no_relay(ctx: Context) -> Run:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(ctx.path)
    enlarge_send_buffer(client)
    with client:
        prod = producer(ctx, client.fileno())
    seconds, reader_cpu = drain(ctx.listener, ctx.size)
    return Run(seconds, ctx.size, reap(prod), reader_cpu)


def _piped(ctx: Context, relay_argv: list[str]) -> tuple[Run, bytes]:
    """Producer -> 1 MiB pipe -> the relay command (its stdin is the pipe) -> the reader."""
    read_end, write_end = make_pipe()
    with read_end, write_end:
        prod = producer(ctx, write_end.fileno())
        relay = subprocess.Popen(relay_argv, stdin=read_end.fileno(), stdout=subprocess.PIPE)
    seconds, reader_cpu = drain(ctx.listener, ctx.size)
    producer_cpu = reap(prod)
    assert relay.stdout is not None
    out = relay.stdout.read()
    relay_cpu = reap(relay)
    return Run(seconds, ctx.size, producer_cpu, reader_cpu, relay_cpu), out


def bench_socat(ctx: Context) -> Run:
    target = f"UNIX-CONNECT:{ctx.path},sndbuf={SEND_BUFFER}"
    run, _ = _piped(ctx, ["socat", "-u", "-b", "1048576", "STDIN", target])
    return run


def bench_minimal(ctx: Context) -> Run:
    assert ctx.minimal_relay is not None
    run, out = _piped(ctx, [ctx.minimal_relay, ctx.path, str(SEND_BUFFER)])
    moved, cpu = out.split()
    if int(moved) != ctx.size:
        raise SystemExit(f"minimal relay moved {moved.decode()} bytes, expected {ctx.size}")
    return Run(run.seconds, run.size, run.producer_cpu, run.reader_cpu, float(cpu))


def bench_trinit(ctx: Context) -> Run:
    run, out = _piped(ctx, [sys.executable, __file__, "--pump-child", ctx.path])
    report = json.loads(out)
    if report["bytes"] != ctx.size:
        raise SystemExit(f"pump moved {report['bytes']} bytes, expected {ctx.size}")
    cpu, method = report["cpu"], report["method"]
    return Run(run.seconds, run.size, run.producer_cpu, run.reader_cpu, cpu, method)


def pump_child(path: str) -> None:
    """Runs in its own process: pump stdin (a pipe) into the unix socket at ``path``."""
    import trio

    from trinit.io import OutputPump, OwnedFd

    async def main() -> None:
        stream = await trio.open_unix_socket(path)
        pump = OutputPump("bench", OwnedFd(os.dup(0)), stream)
        os.close(0)  # the pump's copy must be the only read end left here
        before = _cpu_self()
        await pump.run()
        cpu = _cpu_self() - before
        method = pump._copier.method
        print(json.dumps({"cpu": cpu, "bytes": pump.bytes_moved, "method": method}))

    trio.run(main)


def build_minimal_relay(directory: str) -> str | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    binary = os.path.join(directory, "minimal_relay")
    source = os.path.join(BENCH, "minimal_relay.c")
    subprocess.run([compiler, "-O2", "-o", binary, source], check=True)
    return binary


def per_gib(runs: list[Run], cpu: Callable[[Run], float | None]) -> str:
    values = [value for value in map(cpu, runs) if value is not None]
    return f"{statistics.median(values) / (runs[0].size / GiB):5.3f}" if values else "    -"


def mib_per_s(run: Run) -> float:
    return run.size / MiB / run.seconds


def report(results: dict[str, list[Run]], ctx: Context) -> None:
    rounds = len(next(iter(results.values())))
    print(
        f"transfer size {ctx.size / MiB:.0f} MiB in writes of {ctx.write_size} bytes, "
        f"{rounds} interleaved rounds, "
        f"{os.cpu_count()} CPUs, kernel {os.uname().release}"
    )
    print(f"  {'set-up':<22} {'median':>8} {'best':>8} MiB/s   CPU s/GiB: producer reader relay")
    medians: dict[str, float] = {}
    bests: dict[str, float] = {}
    for name, runs in results.items():
        speeds = [mib_per_s(run) for run in runs]
        medians[name], bests[name] = statistics.median(speeds), max(speeds)
        label = f"{name} ({runs[0].method})" if runs[0].method else name
        print(
            f"  {label:<22} {medians[name]:8.0f} {bests[name]:8.0f}"
            f"               {per_gib(runs, lambda r: r.producer_cpu)}"
            f"  {per_gib(runs, lambda r: r.reader_cpu)} {per_gib(runs, lambda r: r.relay_cpu)}"
        )
    print("  ratios (of medians; of best rounds):")
    for top, bottom in (
        ("trinit", "no relay"),
        ("trinit", "socat"),
        ("trinit", "minimal relay"),
        ("minimal relay", "no relay"),
    ):
        if top in medians and bottom in medians:
            print(
                f"    {top + ' / ' + bottom:<28} {medians[top] / medians[bottom]:5.2f}"
                f"  {bests[top] / bests[bottom]:5.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="bytes per run (suffix K, M, G)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of all set-ups")
    parser.add_argument(
        "--write-size", default="1M", help="bytes per write(2) of the producer (default 1M)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["none", "socat", "minimal", "trinit"],
        help="run only these",
    )
    parser.add_argument("--pump-child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pump_child:
        pump_child(args.pump_child)
        return
    size = parse_size(args.size)
    setups: dict[str, tuple[str, Callable[[Context], Run]]] = {
        "none": ("no relay", bench_no_relay),
        "socat": ("socat", bench_socat),
        "minimal": ("minimal relay", bench_minimal),
        "trinit": ("trinit", bench_trinit),
    }
    if args.only:
        setups = {key: value for key, value in setups.items() if key in args.only}
    if shutil.which("socat") is None:
        print("socat not found: skipping (b)")
        setups.pop("socat", None)
    with tempfile.TemporaryDirectory() as tmp:
        minimal = build_minimal_relay(tmp) if "minimal" in setups else None
        if minimal is None and "minimal" in setups:
            print("no C compiler: skipping (c)")
            del setups["minimal"]
        path = os.path.join(tmp, "host_1")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener:
            listener.bind(path)
            listener.listen()
            ctx = Context(path, listener, size, parse_size(args.write_size), minimal)
            results: dict[str, list[Run]] = {name: [] for name, _ in setups.values()}
            for _ in range(args.rounds):
                for name, run in setups.values():
                    results[name].append(run(ctx))
    report(results, ctx)


if __name__ == "__main__":
    main()
