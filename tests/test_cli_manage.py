"""``trinit run -d|exec|ps|stats|kill|rm`` against an agent started with LocalAgent and
reached with ``--connect unix:DIR``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from agentlib import busybox_rootfs
from clilib import TRINIT, no_traceback, trinit, trinit_json

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent


def _wait_exit(agent: LocalAgent, container_id: str) -> int:
    """Block until the container's init has exited (WaitProcess has no deadline here)."""
    request = pb.WaitProcessRequest(id=container_id, containerID=container_id)
    return int(agent.host.stub.WaitProcess(request).exitCode)


def test_detached_container_exec_ps_stats_kill_rm(agent: LocalAgent) -> None:
    connect = f"--connect=unix:{agent.directory}"
    started = trinit(
        "run", connect, "-d", "--name", "web", "-e", "ROLE=server", "-w", "/tmp",
        "--rootfs", busybox_rootfs(), "--", "sleep", "100000",
    )  # fmt: skip
    assert (started.returncode, started.stdout) == (0, "web\n"), started.stderr

    root = busybox_rootfs()
    again = trinit("run", connect, "-d", "--name", "web", "--rootfs", root, "--", "true")
    assert again.returncode == 125 and "container web already exists" in again.stderr

    assert trinit_json("ps", connect, "--json") == [{"id": "web", "state": "running"}]
    table = trinit("ps", connect).stdout.splitlines()
    assert table[0].split() == ["ID", "STATE", "PIDS"]
    assert table[1].split()[:2] == ["web", "running"]

    # an exec inherits the container's environment and working directory; -e adds to them
    result = trinit("exec", connect, "-e", "EXTRA=1", "web", "--", "sh", "-c",
                    'echo "$ROLE $EXTRA $(pwd) $(cat /etc/hostname)"')  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "server 1 /tmp web\n"), result.stderr
    assert trinit("exec", connect, "web", "--", "sh", "-c", "exit 5").returncode == 5
    missing = trinit("exec", connect, "web", "--", "nope")
    assert missing.returncode == 127 and no_traceback(missing)
    piped = trinit("exec", connect, "-i", "web", "--", "wc", "-c", input=b"12345")
    assert piped.stdout.strip() == "5"

    stats = trinit_json("stats", connect, "--json", "web")
    assert [entry["container_id"] for entry in stats] == ["web"]
    assert "memory_events" in stats[0]  # always present when asked for (protocol §4.21)
    assert trinit("stats", connect).stdout.splitlines()[1].split()[0] == "web"

    assert trinit("kill", connect, "web", "KILL").returncode == 0
    assert _wait_exit(agent, "web") == 137
    assert trinit_json("ps", connect, "--json") == [
        {"id": "web", "state": "exited", "exit_code": 137}
    ]
    gone = trinit("exec", connect, "nosuch", "--", "true")
    assert gone.returncode == 125 and "no such container: nosuch" in gone.stderr

    removed = trinit("rm", connect, "web")
    assert (removed.returncode, removed.stdout) == (0, "web\n"), removed.stderr
    assert trinit_json("ps", connect, "--json") == []
    again_rm = trinit("rm", connect, "web")
    assert again_rm.returncode == 125 and again_rm.stderr.startswith("trinit: web: ")


def test_attached_run_passes_a_signal_death_through_and_keeps_the_container(
    agent: LocalAgent,
) -> None:
    connect = f"--connect=unix:{agent.directory}"
    proc = subprocess.Popen(
        [TRINIT, "run", connect, "--name", "loop", "--rootfs", busybox_rootfs(), "--",
         "sh", "-c", "echo ready; exec sleep 100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert trinit("kill", connect, "loop").returncode == 0  # KILL by default
        assert proc.wait(timeout=60) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    # without --rm the container stays (its init exited)
    assert trinit_json("ps", connect, "--json") == [
        {"id": "loop", "state": "exited", "exit_code": 137}
    ]
    with_rm = trinit("run", connect, "--rm", "--name", "once", "--rootfs", busybox_rootfs(),
                     "--", "true")  # fmt: skip
    assert with_rm.returncode == 0, with_rm.stderr
    assert [row["id"] for row in trinit_json("ps", connect, "--json")] == ["loop"]
    assert trinit("rm", connect, "loop").returncode == 0


def test_memory_and_cpus_reach_the_spec_and_the_cgroup(agent: LocalAgent) -> None:
    connect = f"--connect=unix:{agent.directory}"
    started = trinit(
        "run", connect, "-d", "--json", "--name", "limited", "--memory", "64M", "--cpus", "1.5",
        "--rootfs", busybox_rootfs(), "--", "sleep", "100000",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    meta = json.loads(started.stdout)
    assert meta["id"] == "limited" and meta["pid"] > 0
    data, _ = agent.host.copy_out("/run/container/limited/config.json")
    resources = json.loads(data)["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20}
    assert resources["cpu"] == {"quota": 150000, "period": 100000}
    # where this machine's cgroup2 has the controllers, the agent applied the limits
    cgroup = os.path.join(agent.cgroup_root or "/nonexistent", "container", "limited")
    controllers = set(open(os.path.join(cgroup, "..", "cgroup.controllers")).read().split())
    if "memory" in controllers:
        assert open(os.path.join(cgroup, "memory.max")).read().strip() == str(64 << 20)
    if "cpu" in controllers:
        assert open(os.path.join(cgroup, "cpu.max")).read().split() == ["150000", "100000"]
    assert trinit("rm", connect, "limited").returncode == 0


def test_commands_without_an_agent_fail_clearly(tmp_path: Path) -> None:
    for args in (["ps"], ["stats"], ["kill", "x"], ["rm", "x"], ["exec", "x", "--", "true"]):
        result = trinit(*args, env={"TRINIT_CONNECT": ""})
        assert result.returncode == 125 and "needs a running agent" in result.stderr, args
    result = trinit("ps", f"--connect=unix:{tmp_path}")
    assert result.returncode == 125 and "no agent at" in result.stderr
    # a socket file nobody listens on (an agent that died): the 10 s readiness wait, then
    # one line that says so, not the catch-all's
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(tmp_path / "guest_1024"))
    result = trinit("ps", f"--connect=unix:{tmp_path}")
    assert result.returncode == 125, result.stderr
    assert f"cannot reach the agent at unix:{tmp_path}" in result.stderr, result.stderr
    result = trinit("ps", "--connect=tcp:1")
    assert result.returncode == 125 and "invalid agent" in result.stderr
