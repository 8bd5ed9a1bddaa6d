"""End to end: pods, i.e. containers that join a pause container's namespaces by path.

The host's ``LinuxPod`` runs a pause container first and gives every later container of the
pod ``{type: pid, path: /proc/<pausePid>/ns/pid}`` (with ``shareProcessNamespace``) and the
cgroups path ``/container/pod/<podID>/<id>``. Here ``sleep 100000`` stands in for ``trinit
pause`` (the busybox rootfs has no Python); the pause pid is the one StartProcess returned,
which is trinit's view, and the helper resolves the path inside trinit's namespaces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from agentlib import Container

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent


def _namespaces(pid_path: str = "", ipc_path: str = "", uts_path: str = "") -> list[dict[str, str]]:
    return [
        {"type": "cgroup", "path": ""},
        {"type": "ipc", "path": ipc_path},
        {"type": "mount", "path": ""},
        {"type": "pid", "path": pid_path},
        {"type": "uts", "path": uts_path},
    ]


def _procs(directory: str) -> list[int]:
    with open(os.path.join(directory, "cgroup.procs")) as file:
        return [int(line) for line in file.read().split()]


class Pod:
    """A pause container and the cgroup directory of the pod, for one test."""

    def __init__(self, agent: LocalAgent, name: str) -> None:
        self.agent = agent
        self.name = name
        self.pause = Container(agent.host, f"{name}-pause")
        spec = self.pause.spec(
            ["sleep", "100000"],
            hostname="podhost",
            linux={
                "namespaces": _namespaces(),
                "cgroupsPath": self.cgroups_path(self.pause.id),
            },
        )
        self.pause_proc = agent.host.process(self.pause.id, spec, stdout=False, stderr=False)
        self.pause_proc.create()
        self.pause_pid = self.pause_proc.start()

    def cgroups_path(self, container_id: str) -> str:
        return f"/container/pod/{self.name}/{container_id}"

    def directory(self, container_id: str | None = None) -> str:
        assert self.agent.cgroup_root is not None
        parts = [self.agent.cgroup_root, "container", "pod", self.name]
        return os.path.join(*parts, *([container_id] if container_id else []))

    def member_spec(self, ctr: Container, args: list[str], **linux: Any) -> dict[str, Any]:
        return ctr.spec(
            args,
            linux={
                "namespaces": _namespaces(pid_path=f"/proc/{self.pause_pid}/ns/pid"),
                "cgroupsPath": self.cgroups_path(ctr.id),
                **linux,
            },
        )

    def stop(self) -> None:
        self.pause_proc.kill(9)
        self.pause_proc.wait(timeout=30)
        self.pause_proc.close()
        self.pause_proc.delete()


@pytest.fixture
def pod(agent: LocalAgent) -> Iterator[Pod]:
    made = Pod(agent, f"pod{os.getpid()}")
    try:
        yield made
    finally:
        made.stop()


def test_member_sees_the_pause_process(agent: LocalAgent, pod: Pod) -> None:
    ctr = Container(agent.host)
    spec = pod.member_spec(ctr, ["sh", "-c", "echo $$; ps -o pid,args"])
    result = agent.host.run(ctr.id, spec)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] != "1"  # the pause is PID 1 of the shared namespace
    rows = [line.split(None, 1) for line in lines[2:]]
    assert ["1", "sleep 100000"] in rows, rows


def test_member_cgroup_under_the_pod(agent: LocalAgent, pod: Pod) -> None:
    assert os.path.isdir(pod.directory(pod.pause.id))
    assert len(_procs(pod.directory(pod.pause.id))) == 1
    ctr = Container(agent.host)
    proc = agent.host.process(
        ctr.id, pod.member_spec(ctr, ["sleep", "99999"]), stdout=False, stderr=False
    )
    proc.create()
    proc.start()
    directory = pod.directory(ctr.id)
    assert len(_procs(directory)) == 1
    # an exec in the member joins its pid namespace (the pod's) and its cgroup
    exec_spec = ctr.spec(["sh", "-c", "cat /proc/self/cgroup; ps -o args"])
    result = agent.host.run(ctr.id, exec_spec, process_id="look")
    assert result.exit_code == 0, result.stderr
    text = result.stdout.decode()
    assert "0::/\n" in text
    assert "sleep 100000" in text and "sleep 99999" in text
    proc.kill(9)
    assert proc.wait(timeout=30) == 137
    proc.close()
    proc.delete()
    assert not os.path.exists(directory)
    assert os.path.isdir(pod.directory())  # the pod's directory outlives its members
    assert os.path.isdir(pod.directory(pod.pause.id))


def test_pause_death_ends_the_members(agent: LocalAgent, pod: Pod) -> None:
    ctr = Container(agent.host)
    proc = agent.host.process(
        ctr.id, pod.member_spec(ctr, ["sleep", "99999"]), stdout=False, stderr=False
    )
    proc.create()
    proc.start()
    pod.pause_proc.kill(9)
    assert pod.pause_proc.wait(timeout=30) == 137
    # the pid namespace's init is gone: the kernel kills every other member
    assert proc.wait(timeout=30) == 137
    proc.close()
    proc.delete()


def test_joining_a_missing_namespace_fails_start(agent: LocalAgent, pod: Pod) -> None:
    ctr = Container(agent.host)
    spec = pod.member_spec(ctr, ["true"])
    spec["linux"]["namespaces"] = _namespaces(pid_path="/proc/999999999/ns/pid")
    proc = agent.host.process(ctr.id, spec)
    proc.create()
    with pytest.raises(grpc.RpcError) as info:
        proc.start()
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "/proc/999999999/ns/pid" in info.value.details()
    proc.close()
    proc.delete()
    assert not os.path.exists(pod.directory(ctr.id))


def test_pod_statistics(agent: LocalAgent, pod: Pod) -> None:
    ctr = Container(agent.host)
    proc = agent.host.process(
        ctr.id, pod.member_spec(ctr, ["sleep", "99999"]), stdout=False, stderr=False
    )
    proc.create()
    proc.start()
    reply = agent.host.stub.ContainerStatistics(
        pb.ContainerStatisticsRequest(
            container_ids=[pod.pause.id, ctr.id], categories=[pb.STAT_CATEGORY_CPU]
        )
    )
    assert [s.container_id for s in reply.containers] == [pod.pause.id, ctr.id]
    assert all(s.HasField("cpu") for s in reply.containers)
    proc.kill(9)
    proc.wait(timeout=30)
    proc.close()
    proc.delete()


def test_member_joins_ipc_and_uts_by_path(agent: LocalAgent, pod: Pod) -> None:
    ctr = Container(agent.host)
    links = " ".join(f"/proc/{p}/ns/{n}" for n in ("ipc", "uts", "mnt") for p in ("self", "1"))
    spec = pod.member_spec(ctr, ["sh", "-c", f"hostname; for l in {links}; do readlink $l; done"])
    spec["hostname"] = ""
    ns = f"/proc/{pod.pause_pid}/ns"
    spec["linux"]["namespaces"] = _namespaces(f"{ns}/pid", f"{ns}/ipc", f"{ns}/uts")
    result = agent.host.run(ctr.id, spec)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "podhost"
    ipc, pause_ipc, uts, pause_uts, mnt, pause_mnt = lines[1:]
    assert (ipc, uts) == (pause_ipc, pause_uts)
    assert mnt != pause_mnt  # a mount namespace of its own
