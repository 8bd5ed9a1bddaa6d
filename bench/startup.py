"""Startup benchmark: exec of ``trinit agent`` to its first answered RPC, and idle RSS.

Goals (issue 14): first answer <= 150 ms, idle RSS <= 30 MiB. The agent is started as a host
starts a local one (:class:`trinit.host.LocalAgent`): ``unshare`` into fresh PID, mount,
UTS, IPC and network namespaces, a tmpfs on /run, then ``python -m trinit agent`` on the
unix transport in a temporary directory; the clock runs from the exec of ``unshare`` to the
first answered Getenv. The baseline printed alongside is the bare interpreter start
(``python -c pass``) measured in the same run, interleaved.

Measure the installed package, not the editable tree (an editable install finds modules
through a path hook, and the tree has no compiled bytecode for new files):

    python -m venv /tmp/trn-inst && /tmp/trn-inst/bin/pip install .
    .venv/bin/python bench/startup.py --python /tmp/trn-inst/bin/python [RUNS]

The agent runs with its working directory outside the tree, so ``-m trinit`` imports the
package of the interpreter given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trinit._proto import sandbox_pb2 as pb  # noqa: E402


def first_answer(directory: str, python: str) -> tuple[float, int]:
    """Seconds from exec to a Getenv reply, and the agent's VmRSS (KiB) once idle.

    The host side is warm before the clock starts (grpcio imported, its core initialised),
    as a VMM's long-running host process is: the time measured is trinit's.
    """
    sock_path = os.path.join(directory, "guest_1024")
    request = pb.GetenvRequest(key="PATH").SerializeToString()
    _warm_grpc(directory)
    start = time.perf_counter()
    script = 'mount -t tmpfs -o mode=755 tmpfs /run && exec "$0" -m trinit agent "$@"'
    agent = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--mount-proc",
            "--propagation",
            "private",
            "--kill-child=SIGKILL",
            "sh",
            "-c",
            script,
            python,
            "--transport",
            f"unix:{directory}",
            "--log-level",
            "warning",
        ],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not os.path.exists(sock_path):
            time.sleep(0.001)
        elapsed = _raw_unary(sock_path, "Getenv", request, start)
        time.sleep(1.0)
        rss = 0
        children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
        trinit_pid = int(children[0])
        for line in Path(f"/proc/{trinit_pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return elapsed, rss
    finally:
        try:
            os.kill(trinit_pid, signal.SIGTERM)
        except (NameError, OSError):
            agent.kill()
        agent.wait(10)


def _warm_grpc(directory: str) -> None:
    import grpc

    with grpc.insecure_channel(f"unix:{directory}/nothing-here") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.05)
        except grpc.FutureTimeoutError:
            pass


def _raw_unary(path: str, method: str, body: bytes, start: float) -> float:
    """One unary call with grpcio, retried until the listener accepts; returns elapsed."""
    import grpc

    from trinit._proto.sandbox_pb2_grpc import SandboxContextStub

    channel = grpc.insecure_channel(f"unix:{path}")
    stub = SandboxContextStub(channel)
    while True:
        try:
            stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=5, wait_for_ready=True)
            break
        except grpc.RpcError:
            continue
    elapsed = time.perf_counter() - start
    channel.close()
    return elapsed


def bare_python(python: str) -> float:
    start = time.perf_counter()
    subprocess.run([python, "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=int, nargs="?", default=7)
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter whose trinit package is measured"
    )
    args = parser.parse_args()
    times, rss, bare = [], [], []
    for _ in range(args.runs):
        directory = tempfile.mkdtemp(prefix="trn-bench-", dir="/tmp")
        try:
            t, r = first_answer(directory, args.python)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        times.append(t)
        rss.append(r)
        bare.append(bare_python(args.python))
    base = statistics.median(bare)
    med = statistics.median(times)
    print(
        f"startup to first RPC ({args.python}): median {med * 1000:.1f} ms "
        f"(min-max {min(times) * 1000:.1f}-{max(times) * 1000:.1f}) over {args.runs} runs "
        f"(goal <= 150 ms; bare python start {base * 1000:.1f} ms, ratio {med / base:.2f}x)"
    )
    print(
        f"idle RSS: median {statistics.median(rss) / 1024:.1f} MiB "
        f"(min-max {min(rss) / 1024:.1f}-{max(rss) / 1024:.1f}; goal <= 30 MiB)"
    )


if __name__ == "__main__":
    main()
