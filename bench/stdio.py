"""Stdout throughput: the real agent and trinit's OutputPump against socat, a minimal relay
and no relay.

A producer writes N bytes (default 2 GiB) of zeros to its stdout: busybox ``dd
if=/dev/zero bs=W`` (1 MiB per write(2) unless ``--write-size`` says otherwise), the same
static binary in every set-up, taken from the busybox root file system built here. A reader
(this process) drains a unix socket and times the transfer from its first byte to EOF, so
process start-up is not counted. Five set-ups:

  (a) no relay: the producer's stdout *is* the unix socket (the ceiling);
  (b) socat -b 1048576: producer -> pipe -> socat -> unix socket;
  (c) minimal relay: producer -> pipe -> bench/minimal_relay.c (a blocking splice loop in C,
      built here with cc) -> unix socket: the floor of what any relay costs on this machine;
  (d) pump: producer -> pipe -> OutputPump (in its own python process) -> unix socket;
  (e) agent: the real agent as a host drives it (``LocalAgent``, unix transport): the
      producer is an exec in a busybox container, its stdout is the agent's pipe, and the
      agent dials the host's stdout port, where this process reads. Its gRPC calls carry
      deadlines.

(b)-(d) use the same 1 MiB pipe (trinit.io.make_pipe); the agent makes its own (the same
size); every relay and the ceiling get the 4 MiB send buffer trinit's pump sets. The
set-ups run interleaved, one of each per round, and the summary gives the median and the
best round of each, so a slow spell of the machine hits all of them alike. CPU per GiB is
shown for each party: the producer (wait4; not available inside the agent's container),
the reader (this process, around the transfer) and the relay: socat and the minimal relay
from their own accounting of the whole process; the pump inside its process around
``OutputPump.run()`` only; the agent from ``/proc/PID/stat`` (every thread) from the
transfer's first byte to EOF.

Run: .venv/bin/python bench/stdio.py [--size 2G] [--rounds 5] [--write-size 64K]
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
from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent, build_busybox_rootfs, busybox_spec
from trinit.host._ports import HostPort
from trinit.io import SEND_BUFFER, enlarge_send_buffer, make_pipe

BENCH = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
GiB = 1 << 30


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
    busybox: str  # the static busybox of the root file system built for the agent
    agent: AgentSetup | None = None


@dataclass
class AgentSetup:
    """The running agent of set-up (e) and the container its producers run in."""

    agent: LocalAgent
    container: str
    rootfs: str
    execs: int = 0

    def dd_spec(self, ctx: Context) -> dict[str, object]:
        return busybox_spec(self.rootfs, dd_argv("/bin/busybox", ctx))

    def cpu_seconds(self) -> float:
        fields = open(f"/proc/{self.agent.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dd_argv(busybox: str, ctx: Context) -> list[str]:
    count = ctx.size // ctx.write_size
    return [busybox, "dd", "if=/dev/zero", f"bs={ctx.write_size}", f"count={count}"]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drain(
    listener: socket.socket, size: int, first_byte: Callable[[], None] | None = None
) -> tuple[float, float]:
    """Accept one connection, read it to EOF: (seconds from first byte to EOF, reader CPU).
    ``first_byte`` is called when the first bytes are in (e.g. to read a relay's CPU)."""
    listener.settimeout(60)  # a relay that died before connecting must not hang the bench
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(None)
        buf = bytearray(MiB)
        view = memoryview(buf)
        got = conn.recv_into(view)
        if first_byte is not None:
            first_byte()
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
    return subprocess.Popen(dd_argv(ctx.busybox, ctx), stdout=stdout, stderr=subprocess.DEVNULL)


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


def bench_agent(ctx: Context) -> Run:
    """(e): an exec's stdout through the real agent, as a host reads it."""
    setup = ctx.agent
    assert setup is not None
    host = setup.agent.host
    setup.execs += 1
    exec_id = f"dd-{setup.execs}"
    port = host.ports.next()
    listener = HostPort.listen(host.transport, port)
    ids = {"id": exec_id, "containerID": setup.container}
    configuration = json.dumps(setup.dd_spec(ctx)).encode()
    cpu: list[float] = []
    try:
        request = pb.CreateProcessRequest(
            id=exec_id, containerID=setup.container, configuration=configuration, stdout=port
        )
        host.stub.CreateProcess(request, timeout=30)
        host.stub.StartProcess(pb.StartProcessRequest(**ids), timeout=30)
        seconds, reader_cpu = drain(
            listener.sock, ctx.size, first_byte=lambda: cpu.append(setup.cpu_seconds())
        )
        cpu.append(setup.cpu_seconds())
        status = host.stub.WaitProcess(pb.WaitProcessRequest(**ids), timeout=60)
        if status.exitCode != 0:
            raise SystemExit(f"dd in the container exited with {status.exitCode}")
    finally:
        listener.close()
        host.stub.DeleteProcess(pb.DeleteProcessRequest(**ids), timeout=30)
    return Run(seconds, ctx.size, float("nan"), reader_cpu, cpu[1] - cpu[0])


def start_agent(rootfs: str) -> AgentSetup:
    """An agent with one long-running container whose execs are the producers of (e)."""
    agent = LocalAgent.start(log_level="warning")
    try:
        container = "stdio-bench"
        root = agent.host.mount_rootfs(container, rootfs)
        init = agent.host.process(
            container, busybox_spec(root, ["/bin/sleep", "3600"]), stdout=False, stderr=False
        )
        init.create()
        init.start()
        return AgentSetup(agent, container, root)
    except BaseException:
        agent.stop()
        agent.remove()
        raise


def stop_agent(setup: AgentSetup) -> None:
    host = setup.agent.host
    try:
        host.stub.KillProcess(
            pb.KillProcessRequest(id=setup.container, containerID=setup.container, signal=9),
            timeout=30,
        )
        host.stub.WaitProcess(
            pb.WaitProcessRequest(id=setup.container, containerID=setup.container), timeout=30
        )
        host.stub.DeleteProcess(
            pb.DeleteProcessRequest(id=setup.container, containerID=setup.container), timeout=30
        )
    finally:
        setup.agent.stop()
        setup.agent.remove()


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
    values = [value for value in map(cpu, runs) if value is not None and value == value]
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
        ("agent", "minimal relay"),
        ("agent", "socat"),
        ("agent", "no relay"),
        ("pump", "minimal relay"),
        ("agent", "pump"),
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
        choices=["none", "socat", "minimal", "pump", "agent"],
        help="run only these",
    )
    parser.add_argument("--pump-child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pump_child:
        pump_child(args.pump_child)
        return
    size = parse_size(args.size)
    if size % parse_size(args.write_size):
        raise SystemExit("--size must be a multiple of --write-size (dd writes whole blocks)")
    setups: dict[str, tuple[str, Callable[[Context], Run]]] = {
        "none": ("no relay", bench_no_relay),
        "socat": ("socat", bench_socat),
        "minimal": ("minimal relay", bench_minimal),
        "pump": ("pump", bench_trinit),
        "agent": ("agent", bench_agent),
    }
    if args.only:
        setups = {key: value for key, value in setups.items() if key in args.only}
    if shutil.which("socat") is None:
        print("socat not found: skipping (b)")
        setups.pop("socat", None)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        minimal = build_minimal_relay(tmp) if "minimal" in setups else None
        if minimal is None and "minimal" in setups:
            print("no C compiler: skipping (c)")
            del setups["minimal"]
        rootfs = os.path.join(tmp, "rootfs")
        build_busybox_rootfs(rootfs)
        agent = start_agent(rootfs) if "agent" in setups else None
        path = os.path.join(tmp, "host_1")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with listener:
                listener.bind(path)
                listener.listen()
                busybox = os.path.join(rootfs, "bin", "busybox")
                write_size = parse_size(args.write_size)
                ctx = Context(path, listener, size, write_size, minimal, busybox, agent)
                results: dict[str, list[Run]] = {name: [] for name, _ in setups.values()}
                for _ in range(args.rounds):
                    for name, run in setups.values():
                        results[name].append(run(ctx))
        finally:
            if agent is not None:
                stop_agent(agent)
    report(results, ctx)


if __name__ == "__main__":
    main()
