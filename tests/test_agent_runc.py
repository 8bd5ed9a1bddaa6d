"""End to end: ``ociRuntimePath`` (runc mode) through a real agent and Debian's runc.

The container's init is created and started by ``runc --root /run/runc`` (in the agent's
namespaces: its private /run, its cgroup subtree), supervised by trinit's reaper like any
other init; execs still go through trinit's helper. ``scripts/setup.sh`` installs runc.
"""

from __future__ import annotations

import os
import shutil
import signal
from typing import Any

import grpc
import pytest
from agentlib import Container, Output

from trinit.host import LocalAgent, Process

RUNC = shutil.which("runc") or "/usr/sbin/runc"


@pytest.fixture(autouse=True)
def _need_runc() -> None:
    if not os.path.exists(RUNC):
        pytest.fail("runc is not installed: run ./scripts/setup.sh")


def _state(agent: LocalAgent, container_id: str) -> str:
    """runc's state file of the container, seen through the agent's mount namespace."""
    return f"/proc/{agent.pid}/root/run/runc/{container_id}/state.json"


def _v1_mounts() -> list[str]:
    with open("/proc/self/mounts") as file:
        return [fields[1] for fields in (line.split() for line in file) if fields[2] == "cgroup"]


def _agent_pid(host_pid: int) -> int:
    """A pid of this machine as the agent's PID namespace numbers it."""
    with open(f"/proc/{host_pid}/status") as file:
        nspid = next(line for line in file if line.startswith("NSpid:"))
    return int(nspid.split()[2])


def _process(agent: LocalAgent, ctr: Container, args: list[str], **kw: Any) -> Process:
    return agent.host.process(ctr.id, ctr.spec(args), oci_runtime_path=RUNC, **kw)


def test_runc_runs_the_init_output_exact_and_exit_code(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    script = "cat; printf 'to stderr' >&2; grep '^0::' /proc/1/cgroup; exit 3"
    proc = _process(agent, ctr, ["sh", "-c", script], stdin=True)
    proc.create()
    try:
        pid = proc.start()
        assert os.path.exists(_state(agent, ctr.id))  # runc made it, and knows it
        assert agent.cgroup_root is not None
        cgroup = os.path.join(agent.cgroup_root, "container", ctr.id)
        with open(os.path.join(cgroup, "cgroup.procs")) as file:
            members = [_agent_pid(int(line)) for line in file]
        assert pid in members  # runc used trinit's cgroup
        proc.write(data)
        proc.close_stdin()
        assert proc.wait(timeout=60) == 3
        proc.join_output()
        assert bytes(proc.stdout_data) == data + b"0::/\n"
        assert bytes(proc.stderr_data) == b"to stderr"
    finally:
        proc.close()
        proc.delete()
    assert not os.path.exists(_state(agent, ctr.id))  # runc delete --force ran
    assert not os.path.exists(cgroup)
    # on a hybrid host runc also made the path on each cgroup v1 hierarchy: all removed
    top = os.path.basename(agent.cgroup_root)
    assert [m for m in _v1_mounts() if os.path.exists(os.path.join(m, top))] == []


def test_runc_kill_exec_and_delete(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    output = Output(b"ready\n")
    proc = _process(
        agent, ctr, ["sh", "-c", "echo ready; exec sleep 1000"], stdout_sink=output.sink
    )
    proc.create()
    try:
        proc.start()
        assert os.path.exists(_state(agent, ctr.id))
        assert output.seen.wait(60)
        # an exec joins the runc-made init's namespaces through trinit's helper
        # ("ready" comes just before the init's exec of sleep: wait for that too)
        script = "until grep -qx sleep /proc/1/comm; do :; done; cat /proc/1/comm; hostname"
        result = ctr.exec(f"{ctr.id}-x", ["sh", "-c", script])
        assert (result.exit_code, result.stdout) == (0, b"sleep\ntestbox\n")
        proc.kill(signal.SIGKILL)
        assert proc.wait(timeout=60) == 128 + signal.SIGKILL
    finally:
        proc.close()
        proc.delete()
    assert not os.path.exists(_state(agent, ctr.id))


def test_runc_terminal(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    spec = ctr.spec(["sh", "-c", "tty; stty size; exec cat"], process={"terminal": True})
    spec["process"]["consoleSize"] = {"height": 30, "width": 100}
    output = Output(b"30 100")
    proc = agent.host.process(ctr.id, spec, oci_runtime_path=RUNC, stdout_sink=output.sink)
    proc.create()
    try:
        proc.start()
        assert os.path.exists(_state(agent, ctr.id))  # runc's, with its console socket
        assert output.seen.wait(60)
        proc.kill(signal.SIGKILL)  # cat keeps it running until now
        assert proc.wait(timeout=60) == 128 + signal.SIGKILL
        proc.join_output()
        assert output.data.replace(b"\r\n", b"\n") == b"/dev/pts/0\n30 100\n"
    finally:
        proc.close()
        proc.delete()


def test_missing_runtime_is_failed_precondition(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    proc = agent.host.process(ctr.id, ctr.spec(["true"]), oci_runtime_path="/no/such/runc")
    with pytest.raises(grpc.RpcError) as info:
        proc.create()
    proc.close()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "/no/such/runc" in (info.value.details() or "")
