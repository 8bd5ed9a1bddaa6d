"""End to end: user namespaces (``linux.namespaces`` ``user`` with uid/gid mappings) and
idmapped bind mounts (``mounts[].uidMappings``/``gidMappings``).

Every container maps its root to VM uid/gid 100000 (65536 ids), so the VM's own root (0) is
outside the mapping. Directories the tests hand to containers are made here in /tmp with
mode 0755 (the mapped root must be able to walk to them) and removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from agentlib import Container, Output

from trinit.host import LocalAgent, Process

BASE = 100000
SIZE = 65536
MAPPING = [{"containerID": 0, "hostID": BASE, "size": SIZE}]
NAMESPACES = ["cgroup", "ipc", "mount", "pid", "uts", "user"]


def userns_linux(**extra: Any) -> dict[str, Any]:
    """``linux`` overrides: the usual namespaces plus a new user namespace mapping 0->100000."""
    return {
        "namespaces": [{"type": kind, "path": ""} for kind in NAMESPACES],
        "uidMappings": MAPPING,
        "gidMappings": MAPPING,
        **extra,
    }


@pytest.fixture
def vm_dir() -> Iterator[str]:
    """A directory owned by the VM's root (0:0, 0755) holding ``vmfile`` (0:0, 0644)."""
    path = tempfile.mkdtemp(prefix="trinit-userns-", dir="/tmp")
    try:
        os.chmod(path, 0o755)
        with open(os.path.join(path, "vmfile"), "w") as file:
            file.write("vm\n")
        os.chmod(os.path.join(path, "vmfile"), 0o644)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _bind(source: str, destination: str, mapped: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "none", "source": source, "destination": destination, "options": ["bind"],
    }  # fmt: skip
    if mapped:
        entry["uidMappings"] = MAPPING
        entry["gidMappings"] = MAPPING
    return entry


def _mounts(ctr: Container, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [*ctr.spec(["true"])["mounts"], *extra]


def _stop(init: Process) -> None:
    init.kill(9)
    assert init.wait(timeout=30) == 137
    init.close()
    init.delete()


def test_root_inside_is_mapped_outside(agent: LocalAgent) -> None:
    script = (
        "id; cat /proc/self/uid_map /proc/self/gid_map; grep -E '^(Uid|Gid):' /proc/self/status"
    )
    result = Container(agent.host).run(["sh", "-c", script], linux=userns_linux())
    assert result.exit_code == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.decode().splitlines()]
    assert lines[0].startswith("uid=0(root) gid=0(root)")
    assert lines[1:3] == [f"0 {BASE} {SIZE}"] * 2
    assert lines[3:] == ["Uid: 0 0 0 0", "Gid: 0 0 0 0"]


def test_init_is_outside_root_seen_from_the_vm(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    proc = agent.host.process(
        ctr.id, ctr.spec(["sleep", "100000"], linux=userns_linux()), stdout=False, stderr=False
    )
    proc.create()
    pid = proc.start()  # in the agent's PID namespace: read it through the agent's /proc
    try:
        with open(f"/proc/{agent.pid}/root/proc/{pid}/status") as file:
            status = file.read()
        assert f"Uid:\t{BASE}\t{BASE}\t{BASE}\t{BASE}\n" in status
        assert f"Gid:\t{BASE}\t{BASE}\t{BASE}\t{BASE}\n" in status
    finally:
        _stop(proc)


def test_write_outside_the_mapping_fails(agent: LocalAgent, vm_dir: str) -> None:
    ctr = Container(agent.host)
    script = (
        "cat /tmp/data/vmfile; stat -c '%u:%g' /tmp/data/vmfile; "
        "echo x >> /tmp/data/vmfile && echo WROTE; touch /tmp/data/new && echo CREATED; "
        "echo x >> /etc/passwd && echo WROTE-ROOTFS; true"
    )
    result = ctr.run(
        ["sh", "-c", script],
        linux=userns_linux(),
        mounts=_mounts(ctr, _bind(vm_dir, "/tmp/data", mapped=False)),
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout.decode()
    assert out.splitlines()[:2] == ["vm", "65534:65534"]  # VM root is "nobody" in here
    assert "WROTE" not in out and "CREATED" not in out
    assert result.stderr.count(b"Permission denied") == 3, result.stderr
    with open(os.path.join(vm_dir, "vmfile")) as file:
        assert file.read() == "vm\n"
    assert os.listdir(vm_dir) == ["vmfile"]


def test_idmapped_bind_mount(agent: LocalAgent, vm_dir: str) -> None:
    ctr = Container(agent.host)
    script = (
        "stat -c '%u:%g' /tmp/data/vmfile; echo x >> /tmp/data/vmfile; "
        "touch /tmp/data/made && mkdir /tmp/data/dir && touch /tmp/data/seven && "
        "chown 7:8 /tmp/data/seven"
    )
    result = ctr.run(
        ["sh", "-c", script],
        linux=userns_linux(),
        mounts=_mounts(ctr, _bind(vm_dir, "/tmp/data", mapped=True)),
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == b"0:0\n"  # the VM's root, seen through the mount as root
    owners = {
        name: (st.st_uid, st.st_gid)
        for name in os.listdir(vm_dir)
        for st in [os.stat(os.path.join(vm_dir, name))]
    }
    # created by the container's root (VM uid 100000): on disk as the mount maps it back
    assert owners == {"vmfile": (0, 0), "made": (0, 0), "dir": (0, 0), "seven": (7, 8)}
    with open(os.path.join(vm_dir, "vmfile")) as file:
        assert file.read() == "vm\nx\n"


def test_idmapped_mount_without_user_namespace(agent: LocalAgent, vm_dir: str) -> None:
    ctr = Container(agent.host)
    result = ctr.run(
        ["sh", "-c", "touch /tmp/data/made; stat -c '%u:%g' /tmp/data/vmfile"],
        mounts=_mounts(ctr, _bind(vm_dir, "/tmp/data", mapped=True)),
    )
    assert result.exit_code == 0, result.stderr
    # the VM's root owns vmfile on disk and is seen as 100000 through the mount; the
    # container's root is the VM's root here, which the mount cannot write as (unmapped)
    assert result.stdout == b"100000:100000\n"
    assert b"touch: /tmp/data/made: Value too large for defined data type" in result.stderr
    assert os.listdir(vm_dir) == ["vmfile"]


def test_idmapped_mount_must_be_a_bind(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    tmpfs = {
        "type": "tmpfs", "source": "tmpfs", "destination": "/tmp/data", "options": [],
        "uidMappings": MAPPING, "gidMappings": MAPPING,
    }  # fmt: skip
    proc = agent.host.process(ctr.id, ctr.spec(["true"], mounts=_mounts(ctr, tmpfs)))
    proc.create()
    with pytest.raises(grpc.RpcError) as info:
        proc.start()
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "mount /tmp/data: only bind mounts can be idmapped" in info.value.details()
    proc.close()
    proc.delete()


def test_exec_joins_the_init_user_namespace(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    init = agent.host.process(
        ctr.id, ctr.spec(["sleep", "100000"], linux=userns_linux()), stdout=False, stderr=False
    )
    init.create()
    init.start()
    try:
        result = ctr.exec(
            "e1", ["sh", "-c", "id -u; cat /proc/self/uid_map; readlink /proc/1/ns/user; "
                   "readlink /proc/self/ns/user"],
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.decode().split("\n")
        assert lines[0] == "0"
        assert " ".join(lines[1].split()) == f"0 {BASE} {SIZE}"
        assert lines[2] == lines[3] and lines[2].startswith("user:[")
    finally:
        _stop(init)


def test_exec_of_a_user_namespace_is_moved_into_the_init_cgroup(agent: LocalAgent) -> None:
    """Joining a user namespace, an exec cannot be born in its cgroup (the kernel checks a
    CLONE_INTO_CGROUP against the new credentials): the helper moves it through the
    ``cgroup.procs`` it opened as the VM's root, before it reports the pid."""
    assert agent.cgroup_root is not None, "no cgroup2 hierarchy on this machine"
    ctr = Container(agent.host)
    directory = os.path.join(agent.cgroup_root, "container", ctr.id)
    init = agent.host.process(
        ctr.id, ctr.spec(["sleep", "100000"], linux=userns_linux()), stdout=False, stderr=False
    )
    init.create()
    init.start()
    try:
        # shell builtins only: no child of the exec's in the cgroup when it is counted
        script = (
            "while read -r line; do case $line in 0::*) echo $line;; esac; done"
            " < /proc/self/cgroup; exec sleep 99999"
        )
        spec = ctr.spec(["sh", "-c", script])
        output = Output(b"\n")
        exec_proc = agent.host.process(
            ctr.id, spec, process_id="bg", stderr=False, stdout_sink=output.sink
        )
        exec_proc.create()
        exec_proc.start()
        with open(os.path.join(directory, "cgroup.procs")) as file:
            assert len(file.read().split()) == 2  # the init and the exec (pids of this test)
        # inside, its cgroup namespace is the init's, rooted at the container's cgroup; the
        # line must be in before the kill, or the kill can beat the shell's echo
        assert output.seen.wait(30), f"no line from the exec: {bytes(output.data)!r}"
        exec_proc.kill(9)
        assert exec_proc.wait(timeout=30) == 137
        exec_proc.join_output()
        assert output.data == b"0::/\n"
        exec_proc.close()
        exec_proc.delete()
    finally:
        _stop(init)


def test_join_a_user_namespace_by_path(agent: LocalAgent) -> None:
    first = Container(agent.host)
    init = agent.host.process(
        first.id, first.spec(["sleep", "100000"], linux=userns_linux()), stdout=False,
        stderr=False,
    )  # fmt: skip
    init.create()
    pid = init.start()
    try:
        namespaces = [{"type": kind, "path": ""} for kind in NAMESPACES[:-1]]
        namespaces.append({"type": "user", "path": f"/proc/{pid}/ns/user"})
        second = Container(agent.host)
        result = second.run(
            ["sh", "-c", "id -u; cat /proc/self/uid_map; touch /tmp/x && stat -c %u /tmp/x"],
            linux={"namespaces": namespaces},
        )
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert lines[0] == "0" and lines[2] == "0"
        assert " ".join(lines[1].split()) == f"0 {BASE} {SIZE}"
    finally:
        _stop(init)


@pytest.mark.parametrize(
    ("linux", "text"),
    [
        ({"uidMappings": None}, "user namespace: linux.uidMappings: needs at least one mapping"),
        (
            {"gidMappings": [{"containerID": 0, "hostID": -1, "size": 1}]},
            "user namespace: linux.gidMappings: mapping 0 -1 1 is out of range",
        ),
        (
            {"uidMappings": [{"containerID": 1, "hostID": BASE, "size": 10}]},
            "user namespace: become root in the user namespace (is 0 mapped?)",
        ),
    ],
)
def test_bad_mappings_fail_the_start(agent: LocalAgent, linux: dict[str, Any], text: str) -> None:
    ctr = Container(agent.host)
    proc = agent.host.process(ctr.id, ctr.spec(["true"], linux=userns_linux(**linux)))
    proc.create()
    with pytest.raises(grpc.RpcError) as info:
        proc.start()
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert text in info.value.details()
    proc.close()
    proc.delete()
