"""Startup benchmark: exec of ``trinit agent`` to its first answered RPC, and idle RSS.

Goals (issue 14): first answer <= 150 ms, idle RSS <= 30 MiB. The agent is started as a host
starts a local one (:class:`trinit.host.LocalAgent`): ``unshare`` into fresh PID, mount,
UTS, IPC and network namespaces, a tmpfs on /run, then ``python -m trinit agent`` on the
unix transport in a temporary directory; the clock runs from the exec of ``unshare`` to the
first answered Getenv. Phases are printed too: when the socket file was bound, when the
agent logged "serving on" (its log's ms timestamp), and the answer's delay after that (the
host's connection and request wait in the listen backlog while the agent imports).

Measure the installed package, not the editable tree (an editable install finds modules
through a path hook, and the tree has no compiled bytecode for new files):

    python -m venv /tmp/trn-inst && /tmp/trn-inst/bin/pip install .
    .venv/bin/python bench/startup.py --python /tmp/trn-inst/bin/python [RUNS]

The agent runs with its working directory outside the tree, so ``-m trinit`` imports the
package of the interpreter given.

Baselines, measured in the same run and interleaved with the agent (one of each per round):
the bare interpreter (``python -c pass``); ``python -c 'import trio'``, also with ``-I -S``
(without the site module, the venv's site-packages appended by hand); and ``python -c
'import trio'`` in the agent's own namespaces and tmpfs (ratios are against it), the same
with protobuf's runtime and hpack added (what an agent on this stack imports before it can
answer), and that again with what the agent defers deferred (:mod:`trinit._deferred`: ssl,
hmac, protobuf's pure-Python messages, trio's ldconfig call), the floor no change to
trinit's own code can go below. The idle RSS is compared with the RSS after the same three
imports. ``--compare OTHER_PYTHON`` also starts the
agent of another installation in every round (e.g. the main branch's), for a before/after in
one run.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trinit._proto import sandbox_pb2 as pb  # noqa: E402
from trinit.host import in_fresh_namespaces  # noqa: E402

#: what the agent's idle RSS is compared with: trio alone, and the libraries any agent on
#: this stack must load (trio, protobuf's runtime, hpack for the HTTP/2 header blocks)
_RSS_FLOORS = {
    "trio": "import trio",
    "trio+protobuf+hpack": "import trio, google.protobuf.timestamp_pb2, hpack",
    # the same, with what the agent defers deferred (trinit._deferred): the agent's floor
    "the same, deferred": "from trinit._deferred import defer, libpthread_known\n"
    "defer()\n"
    "with libpthread_known(): import trio\n"
    "import google.protobuf.timestamp_pb2, hpack",
}


def rss_after(python: str, code: str) -> int:
    """VmRSS (KiB) of ``python -c CODE`` at its end."""
    report = "print(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')))"
    out = subprocess.run(
        [python, "-c", f"{code}\n{report}"], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[1])


@dataclass
class Start:
    """One agent start, seconds from the exec of ``unshare``; RSS in KiB."""

    bound: float  # the socket file exists (bound, about to listen)
    serving: float  # the agent logged "serving on" (its ms timestamp: +-1 ms)
    answered: float  # the Getenv reply is in
    rss: int  # VmRSS once idle (1 s after the answer)


def first_answer(directory: str, python: str) -> Start:
    """Start an agent, time it to its first answered Getenv, read its idle RSS.

    The host side is warm before the clock starts (grpcio imported, its core initialised),
    as a VMM's long-running host process is: the time measured is trinit's.
    """
    sock_path = os.path.join(directory, "guest_1024")
    request = pb.GetenvRequest(key="PATH").SerializeToString()
    _warm_grpc(directory)
    log_path = os.path.join(directory, "agent.log")
    with open(log_path, "wb") as log:
        wall = time.time()
        start = time.perf_counter()
        agent = subprocess.Popen(
            in_fresh_namespaces(
                python,
                [
                    "-m",
                    "trinit",
                    "agent",
                    "--transport",
                    f"unix:{directory}",
                    "--log-level",
                    "info",
                ],
            ),
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        while not os.path.exists(sock_path):
            time.sleep(0.001)
        bound = time.perf_counter() - start
        answered = _raw_unary(sock_path, "Getenv", request, start)
        time.sleep(1.0)
        rss = 0
        children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
        trinit_pid = int(children[0])
        for line in Path(f"/proc/{trinit_pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return Start(bound, _logged_at(log_path, "serving on") - wall, answered, rss)
    finally:
        try:
            os.kill(trinit_pid, signal.SIGTERM)
        except (NameError, OSError):
            agent.kill()
        agent.wait(10)


def _logged_at(log_path: str, text: str) -> float:
    """The wall-clock time of the agent's first log line containing ``text``."""
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if text in line:
            stamp = line.split()[0].rstrip("Z")
            moment = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.UTC)
            return moment.timestamp()
    return math.nan


def _warm_grpc(directory: str) -> None:
    import grpc

    with grpc.insecure_channel(f"unix:{directory}/nothing-here") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.05)
        except grpc.FutureTimeoutError:
            pass


#: grpcio waits 1 s before its first reconnect by default: a connect that races the agent's
#: bind() and listen() (the socket file exists before it accepts) added a whole second to a
#: run (the 1.1-1.4 s maxima of earlier runs). Reconnect within a few ms instead.
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 2),
    ("grpc.min_reconnect_backoff_ms", 2),
    ("grpc.max_reconnect_backoff_ms", 5),
]


def _raw_unary(path: str, method: str, body: bytes, start: float) -> float:
    """One unary call with grpcio, retried until the listener accepts; returns elapsed."""
    import grpc

    from trinit._proto.sandbox_pb2_grpc import SandboxContextStub

    channel = grpc.insecure_channel(f"unix:{path}", options=_FAST_RECONNECT)
    stub = SandboxContextStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
    while True:
        try:
            stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=5, wait_for_ready=True)
            break
        except grpc.RpcError:
            continue
    elapsed = time.perf_counter() - start
    channel.close()
    return elapsed


def command_time(command: list[str]) -> float:
    """Seconds from exec to exit of ``command`` (a baseline)."""
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _purelib(python: str) -> str:
    """The site-packages of ``python`` (``-S`` leaves it off ``sys.path``)."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return subprocess.run(
        [python, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def _spread(values: list[float] | list[int], scale: float, unit: str) -> str:
    return (
        f"median {statistics.median(values) * scale:.1f} {unit} "
        f"(min-max {min(values) * scale:.1f}-{max(values) * scale:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=int, nargs="?", default=7)
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter whose trinit package is measured"
    )
    parser.add_argument(
        "--compare",
        metavar="PYTHON",
        help="also measure the trinit package of this interpreter, interleaved (before/after)",
    )
    args = parser.parse_args()
    agents = [args.python] + ([args.compare] if args.compare else [])
    baselines = {
        "python -c pass": [args.python, "-c", "pass"],
        "python -c 'import trio'": [args.python, "-c", "import trio"],
        "python -I -S -c 'import trio'": [
            args.python,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.append({_purelib(args.python)!r}); import trio",
        ],
        "unshare ... python -c 'import trio'": in_fresh_namespaces(
            args.python, ["-c", "import trio"]
        ),
        "unshare ... python -c 'import trio, protobuf, hpack'": in_fresh_namespaces(
            args.python, ["-c", _RSS_FLOORS["trio+protobuf+hpack"]]
        ),
        "the same, deferred as the agent does": in_fresh_namespaces(
            args.python, ["-c", _RSS_FLOORS["the same, deferred"]]
        ),
    }
    starts: dict[str, list[Start]] = {python: [] for python in agents}
    base: dict[str, list[float]] = {name: [] for name in baselines}
    floors: dict[str, list[float]] = {name: [] for name in _RSS_FLOORS}
    for _ in range(args.runs):
        for python in agents:
            directory = tempfile.mkdtemp(prefix="trn-bench-", dir="/tmp")
            try:
                starts[python].append(first_answer(directory, python))
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        for name, command in baselines.items():
            base[name].append(command_time(command))
        for name, code in _RSS_FLOORS.items():
            floors[name].append(rss_after(args.python, code))
    bare = statistics.median(base["python -c pass"])
    trio_floor = statistics.median(base["unshare ... python -c 'import trio'"])
    print(f"{args.runs} interleaved rounds; baselines measured in the same run:")
    for name, values in base.items():
        print(f"  {name}: {_spread(values, 1000, 'ms')}")
    for name, values in floors.items():
        print(f"  RSS after import {name}: {_spread(values, 1 / 1024, 'MiB')}")
    for python in agents:
        times = [run.answered for run in starts[python]]
        med = statistics.median(times)
        print(
            f"startup to first RPC ({python}): {_spread(times, 1000, 'ms')} "
            f"(goal <= 150 ms); {med / bare:.2f}x bare python, {med / trio_floor:.2f}x and "
            f"{(med - trio_floor) * 1000:+.1f} ms against 'import trio' in the same namespaces"
        )
        phases = {
            "socket file bound": [run.bound for run in starts[python]],
            "serving (logged)": [run.serving for run in starts[python]],
            "answer after serving": [run.answered - run.serving for run in starts[python]],
        }
        for name, values in phases.items():
            print(f"  {name}: {_spread(values, 1000, 'ms')}")
        rss = [run.rss for run in starts[python]]
        print(f"  idle RSS: {_spread(rss, 1 / 1024, 'MiB')} (goal <= 30 MiB)")
    if args.compare:
        ratio = statistics.median(run.answered for run in starts[args.python]) / statistics.median(
            run.answered for run in starts[args.compare]
        )
        print(f"first RPC, {args.python} / {args.compare}: {ratio:.2f}x (medians)")


if __name__ == "__main__":
    main()
