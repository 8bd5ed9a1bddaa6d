"""Scale benchmark: many execs, many containers, exec throughput, cost per operation.

A real agent (``LocalAgent``, unix transport, warm exec helper) driven through the host
library as a host drives it; every figure is measured in this run:

* ``execs N`` (N = 10, 100, 1000): N execs of ``cat`` with stdin and stdout in one
  container, all created and started before any gets its input, so all N are alive at once;
  each then gets its own payload, stdin is closed, and its stdout must equal the payload
  byte for byte. A sampler thread records the agent's peak fds; its peak RSS is ``VmHWM``.
* ``containers N`` (N = 10, 100): N containers running ``sleep``, the agent's RSS with all
  of them alive, then all deleted.
* ``throughput``: ``/bin/true`` execs (stdout and stderr attached) at concurrency 32,
  against ``runc exec`` of the same command at the same concurrency into a runc container
  of the same rootfs (``runc`` optional). Goal: >= 2x runc.
* ``--pin`` adds, in each round, the same pair with the client's threads on CPU 0 and the
  guest side on CPU 1 (the agent, its fork server and everything they start; ``runc
  exec`` and everything it starts): in a VM the host's client does not run on the guest's
  cores, and on this 2-core machine it otherwise takes a share of the cores the guest side
  is measured on.

The table prints milliseconds of wall time per operation for each count, so growth with the
count is visible. Everything the run creates (containers, mounts, cgroups, the runc
container) is removed, also on failure.

    .venv/bin/python bench/scale.py [--execs 10,100,1000] [--containers 10,100] [--pin]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import fork_servers  # noqa: E402

from trinit.host import Host, LocalAgent, Process, build_busybox_rootfs, busybox_spec  # noqa: E402

T = TypeVar("T")
WORKERS = 32
CLIENT_CPU, GUEST_CPU = 0, 1  # --pin


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus``; threads and children made later inherit it."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that ended meanwhile


def agent_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cpu_fields(pid: int) -> tuple[float, float]:
    """(own CPU seconds, CPU seconds of reaped children) of ``pid``; zeros once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def agent_cpu(pid: int, servers: dict[int, float] | None = None) -> tuple[float, float]:
    """(the agent's own CPU seconds, CPU seconds of everything it started: its reaped
    children, i.e. exec helpers and container processes, plus the exec fork server with the
    intermediates it reaped). ``servers`` remembers each server's last figure, so a server
    that was replaced still counts."""
    own, children = _cpu_fields(pid)
    servers = {} if servers is None else servers
    for server in fork_servers(pid):
        servers[server] = sum(_cpu_fields(server))
    return own, children + sum(servers.values())


def client_cpu(children: bool = False) -> float:
    """CPU seconds of this process (the client's threads), plus its reaped children."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    if children:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += usage.ru_utime + usage.ru_stime
    return total


def agent_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class Sampler:
    """Samples the agent's fd count every few ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_fds = agent_fds(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self.peak_fds = max(self.peak_fds, agent_fds(self.pid))
            except OSError:
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def parallel(pool: ThreadPoolExecutor, fn: Callable[[T], object], items: Iterable[T]) -> float:
    """Run ``fn`` over ``items`` in the pool; wall seconds. Waits for every item, then
    re-raises the first failure (so the clean-up never races with items still running)."""
    begin = time.perf_counter()
    futures = [pool.submit(fn, item) for item in items]
    wait(futures)
    seconds = time.perf_counter() - begin
    for future in futures:
        future.result()
    return seconds


def bench_execs(
    host: Host, pid: int, cid: str, spec: dict[str, Any], count: int, pool: ThreadPoolExecutor
) -> dict[str, float]:
    """``count`` concurrent ``cat`` execs with exact byte checks; ms per op for each phase."""
    procs: list[Process] = [
        host.process(cid, spec, process_id=f"x{count}-{i}", stdin=True, stderr=False)
        for i in range(count)
    ]
    payloads = [
        f"exec {i} of {count}: ".encode() + os.urandom(64).hex().encode() for i in range(count)
    ]
    created: list[Process] = []
    failures = 0
    out: dict[str, float] = {}
    try:
        with Sampler(pid) as sampler:

            def create(proc: Process) -> None:
                proc.create()
                created.append(proc)

            out["create"] = parallel(pool, create, procs)
            out["start"] = parallel(pool, lambda p: p.start(), procs)
            out["fds_all_alive"] = agent_fds(pid)

            def feed(index: int) -> None:
                procs[index].write(payloads[index])
                procs[index].close_stdin()

            out["stdin"] = parallel(pool, feed, range(count))

            def finish(index: int) -> None:
                nonlocal failures
                proc = procs[index]
                code = proc.wait(timeout=120)
                proc.join_output()
                if code != 0 or bytes(proc.stdout_data) != payloads[index]:
                    failures += 1

            out["wait"] = parallel(pool, finish, range(count))

            def delete(proc: Process) -> None:
                proc.close()
                proc.delete()

            out["delete"] = parallel(pool, delete, procs)
            created.clear()
        out["peak_fds"] = sampler.peak_fds
    finally:
        for proc in created:  # a failure part-way: leave nothing behind
            proc.close()
            try:
                proc.delete()
            except Exception:
                pass
    out["failures"] = failures
    return out


def bench_containers(
    host: Host, pid: int, rootfs: str, count: int, pool: ThreadPoolExecutor
) -> dict[str, float]:
    """``count`` live ``sleep`` containers: agent RSS with all alive, ms per create/delete."""
    procs: dict[str, Process] = {}
    lock = threading.Lock()
    out: dict[str, float] = {}

    def create(index: int) -> None:
        cid = f"c{count}-{index}"
        root = host.mount_rootfs(cid, rootfs)
        proc = host.process(
            cid, busybox_spec(root, ["/bin/sleep", "3600"]), stdout=False, stderr=False
        )
        try:
            proc.create()
        except BaseException:
            host.unmount_rootfs(cid)
            raise
        with lock:
            procs[cid] = proc
        proc.start()

    def delete(proc: Process) -> None:
        proc.kill(9)
        proc.wait(timeout=60)
        proc.close()
        proc.delete()

    try:
        out["create"] = parallel(pool, create, range(count))
        time.sleep(0.5)  # let the helpers' teardown and the zygote refill settle
        out["rss_kib"] = agent_status(pid, "VmRSS")
        out["fds"] = agent_fds(pid)
        out["delete"] = parallel(pool, delete, list(procs.values()))
        procs.clear()
    finally:
        for proc in procs.values():
            try:
                delete(proc)
            except Exception:
                pass
    return out


def bench_trinit_throughput(
    host: Host, cid: str, spec: dict[str, Any], total: int, workers: int
) -> float:
    """Execs of /bin/true per second at ``workers`` concurrency (create..delete each)."""
    counter = iter(range(total))
    lock = threading.Lock()

    def worker(_: int) -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            result = host.run(cid, spec, process_id=f"t{index}", timeout=60)
            if result.exit_code != 0:
                raise RuntimeError(f"exec {index}: exit {result.exit_code}")

    with ThreadPoolExecutor(workers) as pool:
        seconds = parallel(pool, worker, range(workers))
    return total / seconds


def runc_throughput(
    rootfs: str, total: int, workers: int, guest_cpu: int | None = None
) -> float | None:
    """``runc exec`` of /bin/true per second at ``workers`` concurrency, or None. With
    ``guest_cpu``, each ``runc exec`` (and so what it starts) runs on that CPU only."""
    runc = shutil.which("runc")
    if runc is None:
        return None
    bundle = tempfile.mkdtemp(prefix="trinit-runc-scale-")
    name = f"trinit-scale-{os.getpid()}"
    try:
        subprocess.run([runc, "spec"], cwd=bundle, check=True)
        config_path = os.path.join(bundle, "config.json")
        with open(config_path) as f:
            config = json.load(f)
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/sleep", "3600"]
        config["root"] = {"path": rootfs, "readonly": False}
        with open(config_path, "w") as f:
            json.dump(config, f)
        subprocess.run(
            [runc, "run", "-d", "--bundle", bundle, name],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        counter = iter(range(total))
        lock = threading.Lock()

        # taskset, not a preexec_fn: grpc's fork handlers abort a child forked from Python
        taskset = [] if guest_cpu is None else ["taskset", "-c", str(guest_cpu)]

        def worker(_: int) -> None:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                subprocess.run(
                    [*taskset, runc, "exec", name, "/bin/true"],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                )

        with ThreadPoolExecutor(workers) as pool:
            seconds = parallel(pool, worker, range(workers))
        return total / seconds
    finally:
        subprocess.run([runc, "delete", "-f", name], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)


def pinned_round(
    host: Host, pid: int, rootfs: str, spec: dict[str, Any], args: argparse.Namespace
) -> tuple[float, float | None]:
    """One round with the client on CLIENT_CPU and the guest side on GUEST_CPU: (trinit
    execs/s, runc execs/s or None). Every CPU is given back afterwards."""
    everything = set(range(os.cpu_count() or 1))
    servers = fork_servers(pid)
    pin(os.getpid(), {CLIENT_CPU})
    for guest in (pid, *servers):
        pin(guest, {GUEST_CPU})
    try:
        ours = bench_trinit_throughput(host, "scale", spec, args.throughput_total, WORKERS)
        theirs = runc_throughput(rootfs, args.throughput_total, WORKERS, guest_cpu=GUEST_CPU)
    finally:
        for process in (os.getpid(), pid, *fork_servers(pid)):
            pin(process, everything)
    return ours, theirs


def raise_nofile() -> None:
    """Thousands of stdio sockets on this side too: soft RLIMIT_NOFILE up to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def counts(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=counts, default=[10, 100, 1000])
    parser.add_argument("--containers", type=counts, default=[10, 100])
    parser.add_argument("--throughput-total", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    parser.add_argument(
        "--pin", action="store_true", help="also run each round with client and guest side "
        "on a CPU each (needs 2 CPUs)",
    )  # fmt: skip
    args = parser.parse_args()
    raise_nofile()
    rootfs = tempfile.mkdtemp(prefix="trinit-scale-rootfs-", dir="/tmp")
    rows: list[tuple[str, int, dict[str, float]]] = []
    cpu_per_exec: list[tuple[float, ...]] = []
    runc_cpu_per_exec: list[tuple[float, ...]] = []
    try:
        build_busybox_rootfs(rootfs)
        with LocalAgent.start(log_level="warning") as agent, ThreadPoolExecutor(WORKERS) as pool:
            host, pid = agent.host, agent.pid
            print(
                f"agent idle: RSS {agent_status(pid, 'VmRSS') / 1024:.1f} MiB, {agent_fds(pid)} fds"
            )
            root = host.mount_rootfs("scale", rootfs)
            init = host.process(
                "scale", busybox_spec(root, ["/bin/sleep", "3600"]), stdout=False, stderr=False
            )
            init.create()
            try:
                init.start()
                spec = busybox_spec(root, ["/bin/cat"])
                for count in args.containers:
                    result = bench_containers(host, pid, rootfs, count, pool)
                    rows.append(("containers", count, result))
                    print(
                        f"{count:5} live containers: agent RSS {result['rss_kib'] / 1024:.1f} MiB, "
                        f"{int(result['fds'])} fds (goal <= 60 MiB at 100)"
                    )
                for count in args.execs:
                    result = bench_execs(host, pid, "scale", spec, count, pool)
                    rows.append(("execs", count, result))
                    print(
                        f"{count:5} concurrent cat execs: {int(result['failures'])} failures, "
                        f"agent peak {int(result['peak_fds'])} fds "
                        f"({int(result['fds_all_alive'])} with all alive), "
                        f"VmHWM {agent_status(pid, 'VmHWM') / 1024:.1f} MiB, "
                        f"now RSS {agent_status(pid, 'VmRSS') / 1024:.1f} MiB, {agent_fds(pid)} fds"
                    )
                true_spec = busybox_spec(root, ["/bin/true"])
                bench_trinit_throughput(host, "scale", true_spec, WORKERS, WORKERS)  # warm-up
                ours, theirs = [], []
                pinned: list[tuple[float, float | None]] = []
                servers: dict[int, float] = {}
                for _ in range(args.rounds):
                    cpu_before, client_before = agent_cpu(pid, servers), client_cpu()
                    ours.append(
                        bench_trinit_throughput(
                            host, "scale", true_spec, args.throughput_total, WORKERS
                        )
                    )
                    cpu_after, client_after = agent_cpu(pid, servers), client_cpu()
                    cpu_per_exec.append(
                        (
                            *(
                                (b - a) * 1000 / args.throughput_total
                                for a, b in zip(cpu_before, cpu_after, strict=True)
                            ),
                            (client_after - client_before) * 1000 / args.throughput_total,
                        )
                    )
                    runc_before = (client_cpu(), client_cpu(children=True) - client_cpu())
                    rate = runc_throughput(rootfs, args.throughput_total, WORKERS)
                    runc_after = (client_cpu(), client_cpu(children=True) - client_cpu())
                    if rate is not None:
                        theirs.append(rate)
                        runc_cpu_per_exec.append(
                            tuple(
                                (b - a) * 1000 / args.throughput_total
                                for a, b in zip(runc_before, runc_after, strict=True)
                            )
                        )
                    if args.pin:
                        pinned.append(pinned_round(host, pid, rootfs, true_spec, args))
            finally:
                init.kill(9)
                init.wait(timeout=60)
                init.close()
                init.delete()
            print(
                f"agent at the end: RSS {agent_status(pid, 'VmRSS') / 1024:.1f} MiB, "
                f"{agent_fds(pid)} fds"
            )
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)

    print("\ncost per operation (ms of wall time per item, 32 client threads)")
    phases = ("create", "start", "stdin", "wait", "delete")
    print(f"{'what':12} {'count':>6} " + " ".join(f"{p:>8}" for p in phases))
    for kind, count, result in rows:
        cells = [f"{result[p] * 1000 / count:8.2f}" if p in result else f"{'-':>8}" for p in phases]
        print(f"{kind:12} {count:6} " + " ".join(cells))

    print(
        f"\nexec throughput, /bin/true at concurrency {WORKERS}, "
        f"{args.throughput_total} execs, {args.rounds} interleaved rounds"
    )
    print(
        "trinit: "
        + ", ".join(f"{r:.0f}" for r in ours)
        + f" /s (median {statistics.median(ours):.0f})"
    )
    own = statistics.median(c[0] for c in cpu_per_exec)
    children = statistics.median(c[1] for c in cpu_per_exec)
    client = statistics.median(c[2] for c in cpu_per_exec)
    print(
        f"CPU per trinit exec (medians): agent {own:.1f} ms, what it started (fork server, "
        f"exec helpers, /bin/true) {children:.1f} ms: {own + children:.1f} ms = "
        f"{2000 / (own + children):.0f} /s on 2 cores; the Python client {client:.1f} ms"
    )
    if runc_cpu_per_exec:
        runc_client = statistics.median(c[0] for c in runc_cpu_per_exec)
        runc_own = statistics.median(c[1] for c in runc_cpu_per_exec)
        print(
            f"CPU per runc exec (medians): runc and /bin/true {runc_own:.1f} ms = "
            f"{2000 / runc_own:.0f} /s on 2 cores; the client's threads {runc_client:.1f} ms"
        )
        print(
            f"CPU per exec, trinit/runc (the agent's side vs runc's): "
            f"{(own + children) / runc_own:.2f}x"
        )
    if theirs:
        print(
            "runc exec: "
            + ", ".join(f"{r:.0f}" for r in theirs)
            + f" /s (median {statistics.median(theirs):.0f})"
        )
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"ratio trinit/runc: median {statistics.median(ratios):.2f}x "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x; goal >= 2x)"
        )
    else:
        print("runc not installed: no baseline")
    if pinned:
        print(
            f"\npinned (client threads on CPU {CLIENT_CPU}, the guest side on CPU {GUEST_CPU}): "
            "trinit "
            + ", ".join(f"{a:.0f}" for a, _ in pinned)
            + " /s; runc exec "
            + ", ".join("-" if b is None else f"{b:.0f}" for _, b in pinned)
            + " /s"
        )
        pinned_ratios = [a / b for a, b in pinned if b]
        if pinned_ratios:
            print(
                f"ratio trinit/runc, pinned: median {statistics.median(pinned_ratios):.2f}x "
                f"(rounds {min(pinned_ratios):.2f}-{max(pinned_ratios):.2f}x; goal >= 2x)"
            )


if __name__ == "__main__":
    main()
