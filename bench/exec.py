"""Container start benchmark: Create+Start+Wait+Delete of /bin/true in a fresh container.

trinit (a LocalAgent over the unix transport, rootfs bind-mounted per container through the
Mount RPC, as a host does) versus ``runc run`` of the same busybox rootfs, measured in the
same run. Goal (issue 14): trinit <= 0.5x runc's wall time. runc is optional: without it
only trinit's numbers print.

``--phases N`` also breaks N more runs down by phase: the client's own timestamps around
each RPC (uninstrumented), and, inside StartProcess, WaitProcess and DeleteProcess, the
agent's syscalls as ``strace -f -ttt`` sees them (hand-off to the warm helper, namespaces,
fork, mounts, pivot_root, exec, exit, reap, unmounts). strace slows every traced syscall,
so those rows are a breakdown, not a speed: compare them with each other.

    .venv/bin/python bench/exec.py [RUNS] [--phases N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import fork_servers  # noqa: E402

from trinit.host import LocalAgent, build_busybox_rootfs, busybox_spec  # noqa: E402


def bench_trinit(rootfs: str, runs: int) -> tuple[list[float], list[float]]:
    """Wall times of the whole sequence and of StartProcess alone (what ``host.run`` does,
    with the start timed separately)."""
    times, starts = [], []
    with LocalAgent.start(log_level="warning") as agent:
        host = agent.host
        for i in range(runs + 2):
            cid = f"bench{i}"
            begin = time.perf_counter()
            root = host.mount_rootfs(cid, rootfs)
            proc = host.process(cid, busybox_spec(root, ["/bin/true"]))
            try:
                proc.create()
                before_start = time.perf_counter()
                proc.start()
                started = time.perf_counter() - before_start
                code = proc.wait()
                proc.join_output()
            finally:
                proc.close()
                proc.delete()
            elapsed = time.perf_counter() - begin
            assert code == 0, code
            if i >= 2:  # warm-up (the first start also has no warm exec helper yet)
                times.append(elapsed)
                starts.append(started)
    return times, starts


def bench_runc(rootfs: str, runs: int) -> list[float] | None:
    runc = shutil.which("runc")
    if runc is None:
        return None
    bundle = tempfile.mkdtemp(prefix="trinit-runc-")
    try:
        subprocess.run([runc, "spec"], cwd=bundle, check=True)
        config_path = os.path.join(bundle, "config.json")
        with open(config_path) as f:
            config = json.load(f)
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/true"]
        config["root"] = {"path": rootfs, "readonly": False}
        with open(config_path, "w") as f:
            json.dump(config, f)
        times = []
        for i in range(runs + 2):
            start = time.perf_counter()
            subprocess.run(
                [runc, "run", "--bundle", bundle, f"trinit-bench-{os.getpid()}-{i}"],
                check=True,
                stdin=subprocess.DEVNULL,
            )
            elapsed = time.perf_counter() - start
            if i >= 2:
                times.append(elapsed)
        return times
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


STRACE_SYSCALLS = "sendmsg,unshare,clone,clone3,mount,pivot_root,execve,exit_group,wait4,umount2"
_LINE = re.compile(r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?(\d+\.\d+)\s+(.*)$")


def _strace_events(path: str) -> list[tuple[float, int, str]]:
    """(time, pid, text) of every completed traced syscall (``resumed`` lines complete)."""
    events = []
    with open(path) as f:
        for line in f:
            match = _LINE.match(line.strip())
            if match is None or "<unfinished" in line:
                continue
            pid = int(match.group(1) or match.group(2) or 0)
            events.append((float(match.group(3)), pid, match.group(4)))
    return events


def _first(events: list[tuple[float, int, str]], after: float, pattern: str) -> float | None:
    rx = re.compile(pattern)
    return next((t for t, _, text in events if t >= after and rx.search(text)), None)


def _last(
    events: list[tuple[float, int, str]], after: float, before: float, pattern: str
) -> float | None:
    rx = re.compile(pattern)
    found = [t for t, _, text in events if after <= t <= before and rx.search(text)]
    return found[-1] if found else None


def bench_phases(rootfs: str, runs: int) -> None:
    """Client-side RPC timings (clean) and an strace timeline of the agent (instrumented)."""
    strace = shutil.which("strace")
    marks: list[dict[str, float]] = []  # runs without strace
    traced: list[dict[str, float]] = []  # runs under strace
    trace_path = tempfile.mktemp(prefix="trinit-phases-", suffix=".strace")
    with LocalAgent.start(log_level="warning") as agent:
        host = agent.host
        tracer = None
        for i in range(2 * runs + 2):
            if i == runs + 2 and strace is not None:
                # the agent's threads and the exec fork server (helpers are forked from it)
                tids = [f"{pid}/task/{t}" for pid in (agent.pid, *fork_servers(agent.pid))
                        for t in os.listdir(f"/proc/{pid}/task")]  # fmt: skip
                pids = [arg for tid in tids for arg in ("-p", tid.rsplit("/", 1)[1])]
                tracer = subprocess.Popen(
                    [strace, "-f", "-ttt", "-qq", "-e", f"trace={STRACE_SYSCALLS}",
                     "-o", trace_path, *pids],
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)  # attached
            cid = f"phase{i}"
            mark = {"mount": time.time()}
            root = host.mount_rootfs(cid, rootfs)
            proc = host.process(cid, busybox_spec(root, ["/bin/true"]))
            try:
                mark["create"] = time.time()
                proc.create()
                mark["start"] = time.time()
                proc.start()
                mark["wait"] = time.time()
                code = proc.wait()
                proc.join_output()
            finally:
                mark["delete"] = time.time()
                proc.close()
                proc.delete()
                mark["end"] = time.time()
            assert code == 0, code
            if i >= 2:
                (marks if i < runs + 2 else traced).append(mark)
        if tracer is not None:
            time.sleep(0.5)
            tracer.send_signal(2)
            tracer.wait(timeout=30)
    print(f"\nphases over {runs} runs, medians in ms (client clock; no instrumentation):")
    for name, a, b in (
        ("Mount (rootfs bind)", "mount", "create"),
        ("CreateProcess + stdio accept", "create", "start"),
        ("StartProcess", "start", "wait"),
        ("WaitProcess + stdio EOF", "wait", "delete"),
        ("DeleteProcess (+ close)", "delete", "end"),
        ("total", "mount", "end"),
    ):
        values = [m[b] - m[a] for m in marks]
        print(f"  {name:34} {statistics.median(values) * 1000:6.2f}  "
              f"(spread {min(values) * 1000:.2f}-{max(values) * 1000:.2f})")  # fmt: skip
    if strace is None or not os.path.exists(trace_path):
        print("strace not installed: no in-agent breakdown")
        return
    events = _strace_events(trace_path)
    os.unlink(trace_path)
    rows: dict[str, list[float]] = {}
    for m in traced:
        t: dict[str, float | None] = {"start": m["start"]}
        t["handoff"] = _first(events, m["start"], r"^sendmsg\(.*SCM_RIGHTS")
        t["unshare"] = _first(events, t["handoff"] or m["start"], r"^unshare\(")
        t["fork"] = _first(events, t["unshare"] or m["start"], r"^clone3?\(")
        t["mounts"] = _first(events, t["fork"] or m["start"], r"^mount\(")
        t["pivot"] = _first(events, t["fork"] or m["start"], r"^pivot_root\(")
        t["exec"] = _first(events, m["start"], r'^execve\("/bin/true"')
        t["reply"] = m["wait"]
        t["exit"] = _first(events, t["exec"] or m["start"], r"^exit_group\(")
        t["reaped"] = _first(events, t["exit"] or m["start"], r"^wait4\(.*= [1-9]")
        t["waited"] = m["delete"]
        t["umount_first"] = _first(events, m["delete"], r"^umount2\(")
        t["umount_last"] = _last(events, m["delete"], m["end"], r"^umount2\(")
        t["end"] = m["end"]
        steps = (
            # the fork server forks the init itself (exec._child.DirectInit): its
            # unshare(CLONE_NEWPID) and clone3, then the init's own namespaces and set-up
            ("StartProcess RPC to hand-off to the fork server", "start", "handoff"),
            ("server: request to unshare (spec, cgroup)", "handoff", "unshare"),
            ("PID namespace (unshare) to fork", "unshare", "fork"),
            ("fork to first mount (ack, namespaces)", "fork", "mounts"),
            ("mounts (first mount to pivot_root)", "mounts", "pivot"),
            ("pivot_root to exec (caps, setsid, AckPid)", "pivot", "exec"),
            ("exec to StartProcess reply at client", "exec", "reply"),
            ("/bin/true runs (exec to exit_group)", "exec", "exit"),
            ("exit to reap (wait4)", "exit", "reaped"),
            ("reap to WaitProcess + EOF at client", "reaped", "waited"),
            ("DeleteProcess to first umount", "waited", "umount_first"),
            ("unmounts (first to last umount2)", "umount_first", "umount_last"),
            ("last umount to Delete reply", "umount_last", "end"),
        )
        for name, a, b in steps:
            ta, tb = t[a], t[b]
            if ta is not None and tb is not None:
                rows.setdefault(name, []).append(tb - ta)
    print(f"in-agent breakdown under strace (medians in ms, {len(traced)} more runs; "
          "strace inflates every traced syscall):")  # fmt: skip
    for name, values in rows.items():
        print(f"  {name:44} {statistics.median(values) * 1000:6.2f}  (n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=20, help="runs per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved trinit/runc rounds")
    parser.add_argument("--phases", type=int, default=0, metavar="N")
    options = parser.parse_args()
    runs = options.runs
    rootfs = tempfile.mkdtemp(prefix="trinit-bench-rootfs-", dir="/tmp")
    try:
        build_busybox_rootfs(rootfs)
        ratios = []
        for round_no in range(options.rounds):
            ours_all, starts = bench_trinit(rootfs, runs)
            ours = statistics.median(ours_all)
            line = (
                f"round {round_no + 1}: trinit mount+create+start+wait+delete of /bin/true "
                f"{ours * 1000:.1f} ms (StartProcess {statistics.median(starts) * 1000:.1f} ms)"
            )
            theirs_all = bench_runc(rootfs, runs)
            if theirs_all is None:
                print(line + "; runc not installed: no baseline (apt-get install runc)")
                continue
            theirs = statistics.median(theirs_all)
            ratios.append(ours / theirs)
            print(f"{line}, runc run {theirs * 1000:.1f} ms: {ours / theirs:.2f}x", flush=True)
        if ratios:
            print(
                f"ratio trinit/runc (medians of {runs} runs per round): median "
                f"{statistics.median(ratios):.2f}x, rounds {min(ratios):.2f}-{max(ratios):.2f}x "
                "(goal <= 0.5x)"
            )
        if options.phases:
            bench_phases(rootfs, options.phases)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


if __name__ == "__main__":
    main()
