"""Stdout pump throughput: trinit's OutputPump against socat and against no relay at all.

A producer process writes N bytes (default 2 GiB) of zeros to its stdout; a reader (this
process) drains a unix socket and times the transfer from its first byte to EOF, so process
start-up is not counted. Three set-ups:

  (a) no relay: the producer's stdout *is* the unix socket (the ceiling);
  (b) socat -b 1048576: producer -> pipe -> socat -> unix socket;
  (c) trinit: producer -> pipe -> OutputPump (in its own python process) -> unix socket.

(b) and (c) use the same 1 MiB pipe (trinit.io.make_pipe). CPU per GiB is the relay process's
user+system time: for socat from wait4(), for trinit measured inside the pump process around
``OutputPump.run()`` only (no interpreter start-up or imports).

Run: .venv/bin/python bench/stdio.py [--size 2G] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from trinit.io import enlarge_send_buffer

MiB = 1 << 20
GiB = 1 << 30

PRODUCER = """
import os, sys
left = int(sys.argv[1])
chunk = memoryview(bytes(1 << 20))
while left:
    left -= os.write(1, chunk[: min(left, len(chunk))])
"""


@dataclass
class Result:
    name: str
    seconds: float
    size: int
    relay_cpu: float | None = None

    @property
    def mib_per_s(self) -> float:
        return self.size / MiB / self.seconds

    @property
    def cpu_per_gib(self) -> float | None:
        return None if self.relay_cpu is None else self.relay_cpu / (self.size / GiB)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def drain(listener: socket.socket, size: int) -> float:
    """Accept one connection, read it to EOF, return seconds from first byte to EOF."""
    conn, _ = listener.accept()
    with conn:
        buf = bytearray(MiB)
        view = memoryview(buf)
        got = conn.recv_into(view)
        start = time.perf_counter()
        while True:
            count = conn.recv_into(view)
            if count == 0:
                break
            got += count
        elapsed = time.perf_counter() - start
    if got != size:
        raise SystemExit(f"reader got {got} bytes, expected {size}")
    return elapsed


def producer(size: int, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PRODUCER, str(size)], stdout=stdout)


def bench_no_relay(path: str, listener: socket.socket, size: int) -> Result:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    # the ceiling gets the same socket buffer trinit's pump uses (trinit.io.enlarge_send_buffer)
    enlarge_send_buffer(client)
    with client:
        proc = producer(size, client.fileno())
    seconds = drain(listener, size)
    proc.wait()
    return Result("no relay", seconds, size)


def bench_socat(path: str, listener: socket.socket, size: int) -> Result:
    from trinit.io import make_pipe

    read_end, write_end = make_pipe()
    with read_end, write_end:
        prod = producer(size, write_end.fileno())
        relay = subprocess.Popen(
            ["socat", "-u", "-b", "1048576", "STDIN", f"UNIX-CONNECT:{path}"],
            stdin=read_end.fileno(),
        )
    seconds = drain(listener, size)
    prod.wait()
    _, status, usage = os.wait4(relay.pid, 0)
    relay.returncode = os.waitstatus_to_exitcode(status)
    return Result("socat -b 1048576", seconds, size, usage.ru_utime + usage.ru_stime)


def bench_trinit(path: str, listener: socket.socket, size: int) -> Result:
    from trinit.io import make_pipe

    read_end, write_end = make_pipe()
    with read_end, write_end:
        prod = producer(size, write_end.fileno())
        pump = subprocess.Popen(
            [sys.executable, __file__, "--pump-child", path, str(read_end.fileno())],
            pass_fds=[read_end.fileno()],
            stdout=subprocess.PIPE,
        )
    seconds = drain(listener, size)
    prod.wait()
    out, _ = pump.communicate()
    report = json.loads(out)
    if report["bytes"] != size:
        raise SystemExit(f"pump moved {report['bytes']} bytes, expected {size}")
    return Result(f"trinit OutputPump ({report['method']})", seconds, size, report["cpu"])


def pump_child(path: str, fd: int) -> None:
    """Runs in its own process: pump pipe ``fd`` into the unix socket at ``path``."""
    import trio

    from trinit.io import OutputPump, OwnedFd

    async def main() -> None:
        stream = await trio.open_unix_socket(path)
        pump = OutputPump("bench", OwnedFd(fd), stream)
        before = resource.getrusage(resource.RUSAGE_SELF)
        await pump.run()
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        method = pump._copier.method
        print(json.dumps({"cpu": cpu, "bytes": pump.bytes_moved, "method": method}))

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="bytes per run (suffix K, M, G)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per set-up (best kept)")
    parser.add_argument(
        "--only", action="append", choices=["none", "socat", "trinit"], help="run only these"
    )
    parser.add_argument("--pump-child", nargs=2, metavar=("PATH", "FD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pump_child:
        pump_child(args.pump_child[0], int(args.pump_child[1]))
        return
    size = parse_size(args.size)
    setups = [("no relay", bench_no_relay), ("socat", bench_socat), ("trinit", bench_trinit)]
    if args.only:
        wanted = {"none": "no relay", "socat": "socat", "trinit": "trinit"}
        setups = [s for s in setups if s[0] in {wanted[o] for o in args.only}]
    if shutil.which("socat") is None:
        print("socat not found: skipping (b)")
        setups = [s for s in setups if s[0] != "socat"]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "host_1")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener:
            listener.bind(path)
            listener.listen()
            for key, run in setups:
                for _ in range(args.repeat):
                    result = run(path, listener, size)
                    best = results.get(key)
                    if best is None or result.seconds < best.seconds:
                        results[key] = result
    print(f"transfer size {size / MiB:.0f} MiB, {os.cpu_count()} CPUs, kernel {os.uname().release}")
    for result in results.values():
        cpu = result.cpu_per_gib
        cpu_text = f"   relay CPU {cpu:.3f} s/GiB" if cpu is not None else ""
        print(f"  {result.name:<34} {result.mib_per_s:9.0f} MiB/s{cpu_text}")
    trinit = results.get("trinit")
    if trinit is None:
        return
    if "no relay" in results:
        print(f"  trinit / no relay: {trinit.mib_per_s / results['no relay'].mib_per_s:.2f}")
    if "socat" in results:
        socat = results["socat"]
        print(f"  trinit / socat:    {trinit.mib_per_s / socat.mib_per_s:.2f}")
        if socat.cpu_per_gib and trinit.cpu_per_gib:
            print(f"  CPU per GiB, trinit / socat: {trinit.cpu_per_gib / socat.cpu_per_gib:.2f}")


if __name__ == "__main__":
    main()
