"""Soak: thousands of container lifecycles and fast-exit execs against one agent; leak check.

Not part of the default benchmark set (it runs for many minutes). One ``LocalAgent`` (unix
transport, as a host drives it) serves, after a warm-up:

* ``--cycles`` container lifecycles (default 10,000): Mount + CreateProcess + StartProcess
  + WaitProcess + DeleteProcess of ``echo -n <unique payload>``, stdout checked byte for byte;
* ``--execs`` fast-exit execs (default 10,000) in one long-lived container, alternating a
  pipe and a PTY for stdio, each ``echo -n <unique payload>`` checked byte for byte.

The agent's fd count and RSS are printed at the start, every ``--every`` operations and at
the end, with the growth per operation. Goal: fds equal at start and end, RSS within
+5 MiB. ``--tracemalloc N`` starts the agent with ``TRINIT_TRACEMALLOC=N`` (a developer
switch, ``trinit/_memtrace.py``): it logs the top allocation growth sites on SIGUSR2, which
the soak sends after each phase's warm-up and at the end; the log tail is printed.

    .venv/bin/python bench/soak.py [--cycles 10000] [--execs 10000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trinit.host import Host, LocalAgent, build_busybox_rootfs, busybox_spec  # noqa: E402

WARM_UP = 50


def agent_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def agent_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


class Failures:
    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        with self._lock:
            self.count += 1
            if self.first is None:
                self.first = text


def lifecycle(host: Host, rootfs: str, index: int, failures: Failures) -> None:
    cid = f"soak{index}"
    payload = f"cycle {index} {os.urandom(8).hex()}"
    root = host.mount_rootfs(cid, rootfs)
    result = host.run(cid, busybox_spec(root, ["/bin/echo", "-n", payload]), timeout=60)
    if result.exit_code != 0 or result.stdout != payload.encode():
        failures.add(f"cycle {index}: exit {result.exit_code}, stdout {result.stdout[:100]!r}")


def fast_exec(host: Host, root: str, index: int, failures: Failures) -> None:
    payload = f"exec {index} {os.urandom(8).hex()}"
    pty = index % 2 == 1
    spec = busybox_spec(root, ["/bin/echo", "-n", payload], process={"terminal": pty})
    result = host.run("soakbox", spec, process_id=f"e{index}", timeout=60)
    if result.exit_code != 0 or result.stdout != payload.encode():
        kind = "pty" if pty else "pipe"
        failures.add(f"{kind} exec {index}: exit {result.exit_code}, {result.stdout[:100]!r}")


def snapshot(pid: int) -> None:
    """With ``--tracemalloc``: ask the agent to log its allocation growth (SIGUSR2)."""
    if os.environ.get("TRINIT_TRACEMALLOC"):
        os.kill(pid, signal.SIGUSR2)
        time.sleep(1.0)


def run_phase(
    name: str,
    total: int,
    workers: int,
    every: int,
    pid: int,
    op: Callable[[int], None],
) -> tuple[int, int, float]:
    """Warm up, then ``total`` ops; prints fds/RSS along the way. Returns start fds/RSS, s."""
    for index in range(WARM_UP):
        op(-1 - index)
    time.sleep(1.0)  # the zygote refill and the last teardown settle
    fds0, rss0 = agent_fds(pid), agent_rss_kib(pid)
    print(f"{name}: start {fds0} fds, RSS {rss0 / 1024:.1f} MiB", flush=True)
    snapshot(pid)
    counter = iter(range(total))
    lock = threading.Lock()
    done = [0]
    begin = time.perf_counter()

    def worker(_: int) -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            op(index)
            with lock:
                done[0] += 1
                if done[0] % every == 0:
                    print(
                        f"{name}: {done[0]:6} done, {time.perf_counter() - begin:6.0f} s, "
                        f"{agent_fds(pid)} fds, RSS {agent_rss_kib(pid) / 1024:.1f} MiB",
                        flush=True,
                    )

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(worker, range(workers)):
            pass
    seconds = time.perf_counter() - begin
    time.sleep(1.0)
    snapshot(pid)
    fds1, rss1 = agent_fds(pid), agent_rss_kib(pid)
    growth = (rss1 - rss0) / 1024
    print(
        f"{name}: end {fds1} fds ({fds1 - fds0:+d}), RSS {rss1 / 1024:.1f} MiB ({growth:+.1f} MiB, "
        f"{(rss1 - rss0) * 1024 / max(total, 1):+.0f} B/op) after {total} ops in {seconds:.0f} s "
        f"({seconds * 1000 / max(total, 1):.1f} ms/op)",
        flush=True,
    )
    return fds0, rss0, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--execs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES")
    args = parser.parse_args()
    rootfs = tempfile.mkdtemp(prefix="trinit-soak-rootfs-", dir="/tmp")
    failures = Failures()
    if args.tracemalloc:
        os.environ["TRINIT_TRACEMALLOC"] = str(args.tracemalloc)
    try:
        build_busybox_rootfs(rootfs)
        with LocalAgent.start(log_level="warning") as agent:
            host, pid = agent.host, agent.pid
            first_fds, first_rss = agent_fds(pid), agent_rss_kib(pid)
            print(f"agent idle: {first_fds} fds, RSS {first_rss / 1024:.1f} MiB", flush=True)
            if args.cycles:
                run_phase(
                    "lifecycles", args.cycles, args.workers, args.every, pid,
                    lambda i: lifecycle(host, rootfs, i, failures),
                )  # fmt: skip
            if args.execs:
                root = host.mount_rootfs("soakbox", rootfs)
                box = host.process("soakbox", busybox_spec(root, ["/bin/sleep", "1000000"]),
                                   stdout=False, stderr=False)  # fmt: skip
                box.create()
                try:
                    box.start()
                    run_phase(
                        "execs (pipe/pty)", args.execs, args.workers, args.every, pid,
                        lambda i: fast_exec(host, root, i, failures),
                    )  # fmt: skip
                finally:
                    box.kill(9)
                    box.wait(timeout=60)
                    box.close()
                    box.delete()
            time.sleep(1.0)
            last_fds, last_rss = agent_fds(pid), agent_rss_kib(pid)
            print(
                f"agent overall: {first_fds} -> {last_fds} fds, RSS {first_rss / 1024:.1f} -> "
                f"{last_rss / 1024:.1f} MiB ({(last_rss - first_rss) / 1024:+.1f} MiB)",
                flush=True,
            )
            if args.tracemalloc:
                time.sleep(2.0)
                print(agent.log()[-30000:])
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    print(f"failures: {failures.count}" + (f" (first: {failures.first})" if failures.first else ""))


if __name__ == "__main__":
    main()
