"""End to end: users, capabilities, filesystem hardening, limits, namespaces, cgroups, stats.

Every test drives a real agent (PID 1 of fresh namespaces) over gRPC and runs busybox
containers; the assertions are made on what the workload sees from the inside (``id``,
``/proc/self/status``, ``/proc/self/mountinfo``...) and, for cgroups, on the agent's cgroup
directory in this machine's cgroup2 hierarchy (which has no controllers).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from agentlib import Container, busybox_rootfs
from rootfs import MASKED_PATHS

from trinit._proto import sandbox_pb2 as pb
from trinit.exec._child import RLIMITS
from trinit.host import LocalAgent, Process

CAP_SYSLOG = 34
PTY_SLAVE_MAJOR = 136


def _caps(*names: str, ambient: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """A capabilities object granting exactly ``names`` (bounding = effective = permitted)."""
    listed = list(names)
    return {
        "bounding": listed,
        "effective": listed,
        "permitted": listed,
        "inheritable": list(ambient),
        "ambient": list(ambient),
    }


def _status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"{name} not in /proc/self/status:\n{text}")


def _mountinfo(text: str) -> dict[str, tuple[str, str]]:
    """mount point -> (fstype, per-mount options) of the last mount on each point."""
    result = {}
    for line in text.splitlines():
        head, _, tail = line.partition(" - ")
        fields = head.split()
        result[fields[4]] = (tail.split()[0], fields[5])
    return result


def _limits(text: str, name: str) -> tuple[str, str]:
    for line in text.splitlines():
        if line.startswith(name):
            soft, hard = line[len(name) :].split()[:2]
            return soft, hard
    raise AssertionError(f"{name} not in /proc/self/limits:\n{text}")


def _rpc_error(call: Callable[..., object], *args: object, **kw: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    return info.value


def _cgroup(agent: LocalAgent, *parts: str) -> str:
    """A directory under the agent's cgroup root (this machine has a cgroup2 hierarchy)."""
    assert agent.cgroup_root is not None, "no cgroup2 hierarchy on this machine"
    return os.path.join(agent.cgroup_root, *parts)


def _stop(init: Process) -> None:
    init.kill(9)
    assert init.wait(timeout=30) == 137
    init.close()
    init.delete()


# --- users ---------------------------------------------------------------------------------


def test_user_from_passwd(agent: LocalAgent) -> None:
    result = Container(agent.host).run(["id"], process={"user": {"uid": 1, "gid": 1}})
    assert (result.exit_code, result.stdout) == (0, b"uid=1(bin) gid=1(bin) groups=1(bin)\n")


def test_numeric_user_without_passwd_entry(agent: LocalAgent) -> None:
    result = Container(agent.host).run(["id"], process={"user": {"uid": 40000, "gid": 40000}})
    assert (result.exit_code, result.stdout) == (0, b"uid=40000 gid=40000 groups=40000\n")


def test_user_by_name(agent: LocalAgent) -> None:
    result = Container(agent.host).run(
        ["sh", "-c", "id; echo $HOME"], process={"user": {"uid": 0, "gid": 0, "username": "bin"}}
    )
    assert result.stdout == b"uid=1(bin) gid=1(bin) groups=1(bin)\n/bin\n"


def test_unknown_user_name_fails_create(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    spec = ctr.spec(["id"], process={"user": {"uid": 0, "gid": 0, "username": "nosuchuser"}})
    request = pb.CreateProcessRequest(
        id=ctr.id, containerID=ctr.id, configuration=json.dumps(spec).encode()
    )
    error = _rpc_error(agent.host.stub.CreateProcess, request)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "nosuchuser" in error.details()
    # nothing was registered: the same id can be created properly afterwards
    assert ctr.run(["true"]).exit_code == 0


# --- capabilities --------------------------------------------------------------------------

MOUNT_TMPFS = "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo mounted"
CHOWN = "touch /tmp/f && chown 1:1 /tmp/f && stat -c %u:%g /tmp/f"


def test_no_capabilities(agent: LocalAgent) -> None:
    host = agent.host
    result = Container(host).run(["sh", "-c", MOUNT_TMPFS], process={"capabilities": _caps()})
    assert result.exit_code != 0 and b"mounted" not in result.stdout
    assert b"permission denied" in result.stderr
    result = Container(host).run(["sh", "-c", CHOWN], process={"capabilities": _caps()})
    assert result.exit_code != 0 and b"Operation not permitted" in result.stderr
    result = Container(host).run(
        ["grep", "^Cap", "/proc/self/status"], process={"capabilities": _caps()}
    )
    status = result.stdout.decode()
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(_status_field(status, name), 16) == 0, status


def test_sys_admin_and_chown_capabilities(agent: LocalAgent) -> None:
    host = agent.host
    result = Container(host).run(
        ["sh", "-c", MOUNT_TMPFS], process={"capabilities": _caps("CAP_SYS_ADMIN")}
    )
    assert (result.exit_code, result.stdout) == (0, b"mounted\n"), result.stderr
    # lower case and without the CAP_ prefix are accepted too
    result = Container(host).run(["sh", "-c", CHOWN], process={"capabilities": _caps("chown")})
    assert (result.exit_code, result.stdout) == (0, b"1:1\n"), result.stderr


def test_capability_above_31(agent: LocalAgent) -> None:
    host = agent.host
    result = Container(host).run(
        ["cat", "/proc/self/status"], process={"capabilities": _caps("CAP_SYSLOG")}
    )
    status = result.stdout.decode()
    for name in ("CapPrm", "CapEff", "CapBnd"):
        assert int(_status_field(status, name), 16) == 1 << CAP_SYSLOG, status
    # a non-root user keeps it through execve only as an ambient capability
    caps = _caps("CAP_SYSLOG", "CAP_CHOWN", ambient=("syslog",))
    result = Container(host).run(
        ["cat", "/proc/self/status"], process={"capabilities": caps, "user": {"uid": 1, "gid": 1}}
    )
    status = result.stdout.decode()
    assert _status_field(status, "Uid").split()[0] == "1"
    for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(_status_field(status, name), 16) == 1 << CAP_SYSLOG, (name, status)
    assert int(_status_field(status, "CapBnd"), 16) == (1 << CAP_SYSLOG) | 1


def test_every_capability_the_machine_has(agent: LocalAgent) -> None:
    from trinit.exec._child import CAPABILITIES

    with open("/proc/self/status") as file:
        available = int(_status_field(file.read(), "CapBnd"), 16)
    names = [name for index, name in enumerate(CAPABILITIES) if available >> index & 1]
    assert len(CAPABILITIES) == 41
    result = Container(agent.host).run(
        ["grep", "^Cap", "/proc/self/status"], process={"capabilities": _caps(*names, "CAP_BOGUS")}
    )
    status = result.stdout.decode()
    for field in ("CapPrm", "CapEff", "CapBnd"):
        assert int(_status_field(status, field), 16) == available, status


def test_default_capabilities_for_non_root_are_dropped_on_exec(agent: LocalAgent) -> None:
    result = Container(agent.host).run(
        ["grep", "^CapEff", "/proc/self/status"], process={"user": {"uid": 1, "gid": 1}}
    )
    assert int(_status_field(result.stdout.decode(), "CapEff"), 16) == 0


# --- filesystem hardening ------------------------------------------------------------------


def test_readonly_paths(agent: LocalAgent) -> None:
    result = Container(agent.host).run(
        ["sh", "-c", "echo evil > /proc/sys/kernel/hostname; hostname"]
    )
    assert b"Read-only file system" in result.stderr
    assert result.stdout == b"testbox\n"


def test_masked_paths_are_mount_points(agent: LocalAgent) -> None:
    masked = [*MASKED_PATHS, "/proc/trinit-does-not-exist"]
    script = (
        "for p in " + " ".join(MASKED_PATHS) + "; do "
        "if [ -d $p ]; then echo dir $p; "
        "elif [ -e $p ]; then echo file $p $(stat -c %t:%T $p); fi; "
        "done; echo ---; cat /proc/self/mountinfo"
    )
    result = Container(agent.host).run(["sh", "-c", script], linux={"maskedPaths": masked})
    assert result.exit_code == 0, result.stderr
    listing, _, mountinfo = result.stdout.decode().partition("---\n")
    mounts = _mountinfo(mountinfo)
    seen = listing.splitlines()
    assert seen, "no masked path exists on this machine"
    for line in seen:
        kind, path, *rest = line.split()
        assert path in mounts, (path, mountinfo)
        if kind == "dir":
            fstype, options = mounts[path]
            assert fstype == "tmpfs" and options.split(",")[0] == "ro", (path, mounts[path])
        else:
            assert rest == ["1:3"], line  # /dev/null bound over it


def test_readonly_rootfs(agent: LocalAgent) -> None:
    result = Container(agent.host).run(
        ["sh", "-c", "touch /x; touch /tmp/x && echo tmp-ok"], root={"readonly": True}
    )
    assert b"Read-only file system" in result.stderr
    assert result.stdout == b"tmp-ok\n"
    assert not os.path.exists(os.path.join(busybox_rootfs(), "x"))


def test_writable_rootfs_by_default(agent: LocalAgent) -> None:
    name = f"trinit-rw-{os.getpid()}"
    try:
        result = Container(agent.host).run(["touch", f"/{name}"])
        assert result.exit_code == 0, result.stderr
        assert os.path.exists(os.path.join(busybox_rootfs(), name))
    finally:
        try:
            os.unlink(os.path.join(busybox_rootfs(), name))
        except FileNotFoundError:
            pass


def test_terminal_init_console_is_the_pty(agent: LocalAgent) -> None:
    host = agent.host
    ctr = Container(host)
    script = "stat -c %t:%T /dev/console $(tty); grep ' /dev/console ' /proc/self/mountinfo"
    result = ctr.run(["sh", "-c", script], process={"terminal": True})
    assert result.exit_code == 0
    lines = result.stdout.replace(b"\r\n", b"\n").decode().splitlines()
    console, slave = lines[0], lines[1]
    assert console == slave, lines
    assert int(console.split(":")[0], 16) == PTY_SLAVE_MAJOR, lines
    assert lines[2].split()[4] == "/dev/console", lines


def test_exec_has_no_console_bind_of_its_own(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    init = ctr.start_init()
    result = ctr.exec(
        "t", ["sh", "-c", "tty; test -e /dev/console || echo none"], process={"terminal": True}
    )
    assert result.exit_code == 0
    assert result.stdout.replace(b"\r\n", b"\n").decode().startswith("/dev/pts/")
    _stop(init)


# --- limits and privileges -----------------------------------------------------------------

LIMITS_SCRIPT = (
    "ulimit -n; grep 'Max open files' /proc/self/limits; grep 'Max core' /proc/self/limits"
)


def test_rlimits_init_and_exec(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    rlimits = [
        {"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
    ]
    result = ctr.run(["sh", "-c", LIMITS_SCRIPT], process={"rlimits": rlimits})
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "321"
    assert _limits(lines[1], "Max open files") == ("321", "654")
    assert _limits(lines[2], "Max core file size") == ("0", "4096")

    ctr = Container(agent.host)
    init = ctr.start_init()
    rlimits = [{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 88}]
    result = ctr.exec("lim", ["sh", "-c", LIMITS_SCRIPT], process={"rlimits": rlimits})
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "77"
    assert _limits(lines[1], "Max open files") == ("77", "88")
    # the init kept its own limits (the spec's 1024)
    result = ctr.exec("lim1", ["grep", "Max open files", "/proc/1/limits"])
    assert _limits(result.stdout.decode(), "Max open files") == ("1024", "1024")
    _stop(init)


def test_unknown_rlimit_fails_start(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    spec = ctr.spec(["true"], process={"rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]})
    proc = agent.host.process(ctr.id, spec)
    proc.create()
    error = _rpc_error(proc.start)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "RLIMIT_BOGUS" in error.details()
    proc.close()
    proc.delete()


def test_no_new_privileges(agent: LocalAgent) -> None:
    for flag, expected in ((False, "0"), (True, "1")):
        result = Container(agent.host).run(
            ["grep", "NoNewPrivs", "/proc/self/status"], process={"noNewPrivileges": flag}
        )
        assert _status_field(result.stdout.decode(), "NoNewPrivs") == expected


# --- hostname and sysctls ------------------------------------------------------------------


def test_hostname(agent: LocalAgent) -> None:
    name = f"box-{os.getpid()}"
    result = Container(agent.host).run(["sh", "-c", "hostname; cat /etc/hostname"], hostname=name)
    assert result.stdout == f"{name}\n{name}".encode()
    with open(os.path.join(busybox_rootfs(), "etc", "hostname")) as file:
        assert file.read() == name  # written by CreateProcess, without a newline
    # the container had a UTS namespace of its own: the agent's hostname is untouched
    agent_hostname = subprocess.run(
        ["nsenter", "-t", str(agent.pid), "-u", "hostname"],
        check=True,
        capture_output=True,
        timeout=10,
    ).stdout
    assert agent_hostname.strip() != name.encode()


def test_sysctl_applied_inside(agent: LocalAgent) -> None:
    sysctl = {"kernel.domainname": "trinit.test", "net.ipv4.ip_forward": "1"}
    result = Container(agent.host).run(
        ["cat", "/proc/sys/kernel/domainname", "/proc/sys/net/ipv4/ip_forward"],
        linux={"sysctl": sysctl},
    )
    assert (result.exit_code, result.stdout) == (0, b"trinit.test\n1\n"), result.stderr


def test_bad_sysctl_fails_start(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    spec = ctr.spec(["true"], linux={"sysctl": {"kernel.no_such_key": "1"}})
    proc = agent.host.process(ctr.id, spec)
    proc.create()
    error = _rpc_error(proc.start)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "kernel.no_such_key" in error.details()
    proc.close()
    proc.delete()


# --- pid namespace -------------------------------------------------------------------------


def test_init_is_pid_1_and_exec_sees_it(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    assert ctr.run(["sh", "-c", "echo $$"]).stdout == b"1\n"
    ctr = Container(agent.host)
    init = ctr.start_init(["sleep", "100000"])
    result = ctr.exec("ps", ["ps", "-o", "pid,args"])
    rows = [line.split(None, 1) for line in result.stdout.decode().splitlines()[1:]]
    assert ["1", "sleep 100000"] in rows, rows
    assert len(rows) == 2, rows  # the init and ps itself: no helper is left behind
    result = ctr.exec("cmd", ["cat", "/proc/1/cmdline"])
    assert result.stdout == b"sleep\x00100000\x00"
    _stop(init)


# --- cgroups -------------------------------------------------------------------------------


def _procs(directory: str) -> list[int]:
    with open(os.path.join(directory, "cgroup.procs")) as file:
        return [int(line) for line in file.read().split()]


def _v2_line(proc_self_cgroup: bytes) -> str:
    """The cgroup v2 line (this machine also has v1 hierarchies, listed before it)."""
    lines = [line for line in proc_self_cgroup.decode().splitlines() if line.startswith("0::")]
    assert len(lines) == 1, proc_self_cgroup
    return lines[0]


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().decode().split("\0")[:-1]


def test_cgroup_membership_and_removal(agent: LocalAgent) -> None:
    assert agent.cgroup_root is not None, "no cgroup2 hierarchy on this machine"
    host = agent.host
    ctr = Container(host)
    directory = _cgroup(agent, "container", ctr.id)
    init = ctr.start_init(["sleep", "100000"])
    assert [_cmdline(pid) for pid in _procs(directory)] == [["sleep", "100000"]]
    # inside, the cgroup namespace is rooted at the container's cgroup
    result = ctr.exec("cg", ["cat", "/proc/self/cgroup"])
    assert _v2_line(result.stdout) == "0::/"
    exec_proc = host.process(ctr.id, ctr.spec(["sleep", "99999"]), process_id="bg")
    exec_proc.create()
    exec_proc.start()
    assert sorted(_cmdline(pid) for pid in _procs(directory)) == [
        ["sleep", "100000"],
        ["sleep", "99999"],
    ]
    init.kill(9)
    assert init.wait(timeout=30) == 137
    assert exec_proc.wait(timeout=30) == 137
    exec_proc.close()
    init.close()
    assert os.path.isdir(directory)
    init.delete()
    assert not os.path.exists(directory)
    assert os.path.isdir(_cgroup(agent, "container"))  # ancestors stay


def test_init_cgroup_namespace_root(agent: LocalAgent) -> None:
    result = Container(agent.host).run(["cat", "/proc/self/cgroup"])
    assert _v2_line(result.stdout) == "0::/"


def test_delete_kills_running_container(agent: LocalAgent) -> None:
    host = agent.host
    ctr = Container(host)
    directory = _cgroup(agent, "container", ctr.id)
    init = ctr.start_init(["sleep", "100000"])
    exec_proc = host.process(ctr.id, ctr.spec(["sleep", "99999"]), process_id="bg")
    exec_proc.create()
    exec_proc.start()
    pids = _procs(directory)
    assert len(pids) == 2
    init.close()
    init.delete()  # cgroup.kill, then rmdir with retries
    assert not os.path.exists(directory)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}/cmdline") or _cmdline(pid) == []
    exec_proc.close()


def test_missing_controllers_never_fail_a_container(agent: LocalAgent) -> None:
    resources = {
        "memory": {"limit": 64 * 1024 * 1024},
        "cpu": {"quota": 200000, "period": 100000},
        "pids": {"limit": 64},
        "devices": [],
        "hugepageLimits": [],
    }
    ctr = Container(agent.host)
    directory = _cgroup(agent, "container", ctr.id)
    result = ctr.run(
        ["sh", "-c", "cat /proc/self/cgroup; ls /sys/fs/cgroup 2>/dev/null; echo ok"],
        linux={"resources": resources},
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(b"ok\n")
    assert not os.path.exists(directory)
    assert Container(agent.host).run(["true"], linux={"resources": resources}).exit_code == 0
    # each missing controller is logged once, however many containers ask for it
    log = agent.log()
    for controller in ("memory", "cpu", "pids"):
        if not os.path.exists(_cgroup(agent, f"{controller}.max")):
            assert log.count(f"cgroup controller '{controller}' is not available") == 1, log


def test_custom_cgroups_path(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    path = f"/custom/{ctr.id}"
    directory = _cgroup(agent, "custom", ctr.id)
    init = agent.host.process(
        ctr.id,
        ctr.spec(["sleep", "100000"], linux={"cgroupsPath": path}),
        stdout=False,
        stderr=False,
    )
    init.create()
    init.start()
    assert [_cmdline(pid) for pid in _procs(directory)] == [["sleep", "100000"]]
    _stop(init)
    assert not os.path.exists(directory)


# --- ContainerStatistics -------------------------------------------------------------------


def test_container_statistics(agent: LocalAgent) -> None:
    stub = agent.host.stub
    ctr = Container(agent.host)
    directory = _cgroup(agent, "container", ctr.id)
    init = ctr.start_init(["sleep", "100000"])
    reply = stub.ContainerStatistics(pb.ContainerStatisticsRequest(container_ids=[ctr.id]))
    assert [s.container_id for s in reply.containers] == [ctr.id]
    stats = reply.containers[0]

    def has(name: str) -> bool:
        return os.path.exists(os.path.join(directory, name))

    assert stats.HasField("process") == has("pids.current")
    assert stats.HasField("memory") == has("memory.current")
    with open(os.path.join(directory, "cpu.stat")) as file:
        cpu_stat = dict(line.split() for line in file)  # core cgroup2 file, always there
    assert stats.HasField("cpu")
    assert 0 < stats.cpu.usage_usec <= int(cpu_stat["usage_usec"])
    assert stats.HasField("block_io")
    if not has("io.stat"):
        assert list(stats.block_io.devices) == []
    assert stats.HasField("memory_events")
    if not has("memory.events"):
        assert stats.memory_events == pb.MemoryEventStats()
    # eth* links of this (private) network namespace: the agent's has none
    assert list(stats.networks) == []

    # every container when no id is given
    other = Container(agent.host)
    other_init = other.start_init(["sleep", "100000"])
    reply = stub.ContainerStatistics(pb.ContainerStatisticsRequest())
    assert sorted(s.container_id for s in reply.containers) == sorted([ctr.id, other.id])

    # a category list selects exactly those categories
    reply = stub.ContainerStatistics(
        pb.ContainerStatisticsRequest(container_ids=[ctr.id], categories=[pb.STAT_CATEGORY_CPU])
    )
    only_cpu = reply.containers[0]
    assert [f.name for f, _ in only_cpu.ListFields()] == ["container_id", "cpu"]

    # vminitd's quirk kept: [UNSPECIFIED] alone selects nothing
    reply = stub.ContainerStatistics(
        pb.ContainerStatisticsRequest(
            container_ids=[ctr.id, other.id], categories=[pb.STAT_CATEGORY_UNSPECIFIED]
        )
    )
    for entry in reply.containers:
        assert [f.name for f, _ in entry.ListFields()] == ["container_id"]

    # an unknown id is NOT_FOUND (vminitd: INTERNAL for the whole call)
    error = _rpc_error(
        stub.ContainerStatistics, pb.ContainerStatisticsRequest(container_ids=[ctr.id, "ghost"])
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    _stop(init)
    _stop(other_init)
    assert list(stub.ContainerStatistics(pb.ContainerStatisticsRequest()).containers) == []


# --- more users, capabilities and limits ----------------------------------------------------


def test_user_group_forms_and_additional_gids(agent: LocalAgent) -> None:
    def run_id(**user: object) -> str:
        user = {"uid": 0, "gid": 0, **user}
        return Container(agent.host).run(["id"], process={"user": user}).stdout.decode()

    assert run_id(username="bin:tty") == "uid=1(bin) gid=5(tty) groups=5(tty)\n"
    expected = "uid=1(bin) gid=1(bin) groups=1(bin),5(tty)\n"
    assert run_id(uid=1, gid=1, additionalGids=[5]) == expected
    assert run_id(username="bin:nogroup") == "uid=1(bin) gid=65534(nogroup) groups=65534(nogroup)\n"


def test_exec_user_and_capabilities_are_its_own(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    init = ctr.start_init()
    result = ctr.exec("u", ["id"], process={"user": {"uid": 1, "gid": 1}})
    assert result.stdout == b"uid=1(bin) gid=1(bin) groups=1(bin)\n"
    result = ctr.exec("c", ["sh", "-c", CHOWN], process={"capabilities": _caps()})
    assert result.exit_code != 0 and b"Operation not permitted" in result.stderr
    result = ctr.exec(
        "s",
        ["grep", "CapEff", "/proc/self/status"],
        process={"capabilities": _caps("CAP_SYSLOG", "CAP_SYS_ADMIN")},
    )
    assert int(_status_field(result.stdout.decode(), "CapEff"), 16) == (1 << CAP_SYSLOG) | (1 << 21)
    result = ctr.exec(
        "n", ["grep", "NoNewPrivs", "/proc/self/status"], process={"noNewPrivileges": True}
    )
    assert _status_field(result.stdout.decode(), "NoNewPrivs") == "1"
    _stop(init)


def test_stdio_owned_by_the_user(agent: LocalAgent) -> None:
    host = agent.host
    script = "stat -L -c %u /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2"
    ctr = Container(host)
    # stdin connected but never written: Host.run(input=...) races the exit (EPIPE on write)
    spec = ctr.spec(["sh", "-c", script], process={"user": {"uid": 1, "gid": 1}})
    proc = host.process(ctr.id, spec, stdin=True)
    proc.create()
    proc.start()
    assert proc.wait(timeout=30) == 0
    proc.join_output()
    assert proc.stdout_data.split() == [b"1", b"1", b"1"], proc.stderr_data
    proc.close()
    proc.delete()
    ctr = Container(host)
    init = ctr.start_init()
    result = ctr.exec(
        "t",
        ["sh", "-c", "stat -c %u $(tty); echo done"],
        process={"terminal": True, "user": {"uid": 40000, "gid": 40000}},
    )
    assert result.stdout.replace(b"\r\n", b"\n") == b"40000\ndone\n"
    _stop(init)


def test_every_rlimit_name(agent: LocalAgent) -> None:
    names = {  # every type vmexec knows, and its /proc/self/limits label
        "RLIMIT_AS": "Max address space",
        "RLIMIT_CORE": "Max core file size",
        "RLIMIT_CPU": "Max cpu time",
        "RLIMIT_DATA": "Max data size",
        "RLIMIT_FSIZE": "Max file size",
        "RLIMIT_LOCKS": "Max file locks",
        "RLIMIT_MEMLOCK": "Max locked memory",
        "RLIMIT_MSGQUEUE": "Max msgqueue size",
        "RLIMIT_NICE": "Max nice priority",
        "RLIMIT_NOFILE": "Max open files",
        "RLIMIT_NPROC": "Max processes",
        "RLIMIT_RSS": "Max resident set",
        "RLIMIT_RTPRIO": "Max realtime priority",
        "RLIMIT_RTTIME": "Max realtime timeout",
        "RLIMIT_SIGPENDING": "Max pending signals",
        "RLIMIT_STACK": "Max stack size",
    }
    unlimited = (1 << 64) - 1  # how a host encodes RLIM_INFINITY
    values: dict[str, tuple[int, int]] = {}
    for index, name in enumerate(names):
        # raising a hard limit needs CAP_SYS_RESOURCE, which this machine withholds: stay
        # at or below the limits the agent inherited from us
        hard = resource.getrlimit(RLIMITS[name])[1]
        if hard == resource.RLIM_INFINITY:
            values[name] = ((1 << 40) + index, unlimited if index % 2 else (1 << 41) + index)
        else:
            values[name] = (hard // 2, hard)
    values["RLIMIT_NOFILE"] = (500, 600)
    rlimits = [{"type": name, "soft": soft, "hard": hard} for name, (soft, hard) in values.items()]
    result = Container(agent.host).run(["cat", "/proc/self/limits"], process={"rlimits": rlimits})
    assert result.exit_code == 0, result.stderr
    text = result.stdout.decode()
    for name, label in names.items():
        soft, hard = values[name]
        shown = tuple("unlimited" if v == unlimited else str(v) for v in (soft, hard))
        assert _limits(text, label) == shown, (name, text)
    assert sorted(names) == sorted(RLIMITS)


def test_hostname_never_written_through_an_image_symlink(agent: LocalAgent, tmp_path: Path) -> None:
    """An image whose ``etc`` is a symlink must not redirect the hostname write into the
    VM's own files: CreateProcess fails cleanly and nothing outside the rootfs changes."""
    outside = tmp_path / "vm-etc"
    outside.mkdir()
    (outside / "hostname").write_text("vm")
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to(outside)
    ctr = Container(agent.host)
    spec = ctr.spec(["true"], hostname="evil")
    spec["root"]["path"] = str(root)
    proc = agent.host.process(ctr.id, spec)
    with pytest.raises(grpc.RpcError) as info:
        proc.create()
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details().startswith(
        "createProcess: failed to create process: failed to write etc/hostname: "
    )
    assert "symlink" in info.value.details()
    assert os.listdir(outside) == ["hostname"]
    assert (outside / "hostname").read_text() == "vm"
    # the id was not taken by the failed attempt
    result = ctr.run(["hostname"], hostname=f"ok-{os.getpid()}")
    assert result.stdout == f"ok-{os.getpid()}\n".encode()


def test_empty_hostname_keeps_the_agents(agent: LocalAgent) -> None:
    path = os.path.join(busybox_rootfs(), "etc", "hostname")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    result = Container(agent.host).run(["hostname"], hostname="")
    assert result.exit_code == 0
    assert result.stdout != b"testbox\n"
    assert not os.path.exists(path)


def test_statistics_networks(agent: LocalAgent) -> None:
    """``networks`` lists the ``eth*`` entries of /sys/class/net that the agent's network
    namespace has as links, with their netlink counters. LocalAgent does not remount sysfs,
    so the listing is this machine's; a veth link named like one of them (or ``eth0``)
    is made in the agent's private namespace to give the netlink query something to find."""
    sys_class_net = f"/proc/{agent.pid}/root/sys/class/net"
    listing = sorted(n for n in os.listdir(sys_class_net) if n.startswith("eth"))
    if not listing:
        pytest.skip("this machine's /sys/class/net has no eth* entry")
    name = listing[0]

    def in_agent_netns(*args: str) -> None:
        subprocess.run(
            ["nsenter", "-t", str(agent.pid), "-n", *args],
            check=True,
            capture_output=True,
            timeout=10,
        )

    in_agent_netns("ip", "link", "add", name, "type", "veth", "peer", "name", "trinitpeer")
    in_agent_netns("ip", "link", "set", "trinitpeer", "up")
    in_agent_netns("ip", "link", "set", name, "up")
    in_agent_netns("ip", "addr", "add", "192.0.2.1/24", "dev", name)
    with open(f"/proc/{agent.pid}/net/dev") as file:
        assert name in file.read()
    ctr = Container(agent.host)
    init = ctr.start_init()
    reply = agent.host.stub.ContainerStatistics(
        pb.ContainerStatisticsRequest(container_ids=[ctr.id], categories=[pb.STAT_CATEGORY_NETWORK])
    )
    stats = reply.containers[0]
    assert [n.interface for n in stats.networks] == [name]
    before = stats.networks[0].transmittedPackets
    # traffic from the container (it shares the agent's network namespace): ping's first
    # ARP request leaves at once; poll the counters rather than wait for ping to time out
    ctr.exec("ping", ["sh", "-c", "ping -c 1 192.0.2.2 >/dev/null 2>&1 &"])
    deadline = time.monotonic() + 10
    while True:
        reply = agent.host.stub.ContainerStatistics(
            pb.ContainerStatisticsRequest(
                container_ids=[ctr.id], categories=[pb.STAT_CATEGORY_NETWORK]
            )
        )
        network = reply.containers[0].networks[0]
        if network.transmittedPackets > before:
            break
        assert time.monotonic() < deadline, network
        time.sleep(0.01)
    assert network.transmittedBytes > 0
    _stop(init)


def test_readonly_bind_mount(agent: LocalAgent, tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.mkdir()
    (source / "file").write_text("content")
    ctr = Container(agent.host)
    mounts = [
        *ctr.spec(["true"])["mounts"],
        {
            "type": "none",
            "source": str(source),
            "destination": "/data",
            "options": ["rbind", "ro", "nosuid"],
        },
    ]
    result = ctr.run(["sh", "-c", "cat /data/file; echo; touch /data/new"], mounts=mounts)
    assert result.stdout == b"content\n"
    assert b"Read-only file system" in result.stderr
    assert sorted(os.listdir(source)) == ["file"]


def test_cwd_created_for_a_non_root_user(agent: LocalAgent) -> None:
    result = Container(agent.host).run(
        ["pwd"], process={"cwd": "/tmp/a/b", "user": {"uid": 1, "gid": 1}}
    )
    assert (result.exit_code, result.stdout) == (0, b"/tmp/a/b\n"), result.stderr


def test_terminal_init_for_a_non_root_user(agent: LocalAgent) -> None:
    script = "stat -c %u $(tty); stat -c %t:%T /dev/console $(tty); id -u"
    result = Container(agent.host).run(
        ["sh", "-c", script], process={"terminal": True, "user": {"uid": 1, "gid": 1}}
    )
    assert result.exit_code == 0
    lines = result.stdout.replace(b"\r\n", b"\n").decode().splitlines()
    assert lines[0] == "1" and lines[1] == lines[2] and lines[3] == "1", lines


def test_container_owns_its_cgroup_subtree(agent: LocalAgent) -> None:
    """With cgroup2 mounted inside, the container sees its cgroup as the root, can make
    child cgroups and move into them; DeleteProcess kills and removes the whole subtree."""
    host = agent.host
    ctr = Container(host)
    directory = _cgroup(agent, "container", ctr.id)
    mounts = [
        *ctr.spec(["true"])["mounts"],
        {
            "type": "cgroup2",
            "source": "cgroup",
            "destination": "/sys/fs/cgroup",
            "options": ["nosuid", "noexec", "nodev"],
        },
    ]
    script = (
        "mkdir /sys/fs/cgroup/sub && echo $$ > /sys/fs/cgroup/sub/cgroup.procs && exec sleep 100000"
    )
    init = host.process(
        ctr.id, ctr.spec(["sh", "-c", script], mounts=mounts), stdout=False, stderr=False
    )
    init.create()
    init.start()
    # wait (inside) until the init has moved itself and exec'd sleep
    result = ctr.exec(
        "look",
        ["sh", "-c", "while ! grep -q sleep /proc/1/cmdline; do :; done; cat /proc/1/cgroup"],
    )
    assert _v2_line(result.stdout) == "0::/sub", result
    # an exec joins the init's current cgroup, the one the init moved itself to
    result = ctr.exec("own", ["cat", "/proc/self/cgroup"])
    assert _v2_line(result.stdout) == "0::/sub", result
    sub_procs = _procs(os.path.join(directory, "sub"))
    assert [_cmdline(pid) for pid in sub_procs] == [["sleep", "100000"]]
    init.close()
    init.delete()  # still running: cgroup.kill, then rmdir sub and the leaf
    assert not os.path.exists(directory)


def test_statistics_before_start_and_after_exit(agent: LocalAgent) -> None:
    stub = agent.host.stub
    ctr = Container(agent.host)
    proc = agent.host.process(ctr.id, ctr.spec(["true"]), stdout=False, stderr=False)
    proc.create()  # the cgroup exists from CreateProcess on, still empty

    def stats() -> pb.ContainerStats:
        reply = stub.ContainerStatistics(pb.ContainerStatisticsRequest(container_ids=[ctr.id]))
        result: pb.ContainerStats = reply.containers[0]
        return result

    before = stats()
    assert before.HasField("cpu") and before.cpu.usage_usec == 0
    proc.start()
    assert proc.wait(timeout=30) == 0
    after = stats()  # exited, not deleted: the cgroup and its counters are still there
    assert after.HasField("cpu") and after.HasField("memory_events")
    proc.close()
    proc.delete()
    error = _rpc_error(
        stub.ContainerStatistics, pb.ContainerStatisticsRequest(container_ids=[ctr.id])
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_oom_score_adj_from_the_spec(agent: LocalAgent) -> None:
    """Every container process gets ``process.oomScoreAdj`` (0 when absent), never the
    agent's own value, which children inherit (-1000 for PID 1 of a VM). Here the agent is
    set to +300: this machine's root lacks CAP_SYS_RESOURCE, so values stay >= 0."""
    Path(f"/proc/{agent.pid}/oom_score_adj").write_text("300")
    read = ["cat", "/proc/self/oom_score_adj"]

    def run_init(**process: object) -> str:
        return Container(agent.host).run(read, process=process).stdout.decode().strip()

    assert [run_init(), run_init()] == ["0", "0"]  # a warm helper, then a fresh one
    assert run_init(oomScoreAdj=500) == "500"
    ctr = Container(agent.host)
    init = ctr.start_init()
    assert ctr.exec("adj0", read).stdout.decode().strip() == "0"
    result = ctr.exec("adj1", read, process={"oomScoreAdj": 200})
    assert result.stdout.decode().strip() == "200"
    _stop(init)
