"""runc parity (tests/runclib.py) for user namespaces, ``process.user.umask`` and ``domainname``.

The user-namespace cases map the container's root to 100000 (65536 ids): the shared busybox
rootfs is world-readable, which is all runc's (and trinit's) mapped root needs. Idmapped
mounts are not compared: the runc this machine has (1.1) predates them. Known differences
removed before comparing: the ``Groups`` line (see tests/test_runc_parity.py), and, with runc
older than 1.2, ``domainname`` (runc 1.1 ignores it; docs/compat.md).
"""

from __future__ import annotations

import subprocess
from typing import Any

from agentlib import busybox_rootfs
from rootfs import test_spec
from runclib import Observed, compare, require_runc

from trinit.host import LocalAgent

MAPPING = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def _userns() -> dict[str, Any]:
    kinds = ("cgroup", "ipc", "mount", "pid", "uts", "user")
    return {
        "namespaces": [{"type": kind, "path": ""} for kind in kinds],
        "uidMappings": MAPPING,
        "gidMappings": MAPPING,
    }


def _mounts_without_tty() -> list[dict[str, Any]]:
    """The test spec's mounts less the /dev/tty bind.

    In a user namespace runc binds its default devices (tty among them) by opening the
    destination first; the spec's own bind already sits there, and opening a /dev/tty with
    no controlling terminal fails (ENXIO), so runc could not start the spec as it is.
    """
    mounts = test_spec(busybox_rootfs(), ["true"])["mounts"]
    return [entry for entry in mounts if entry["destination"] != "/dev/tty"]


def _userns_compare(agent: Any, script: str, **overrides: Any) -> tuple[Observed, Observed]:
    return compare(
        agent, ["sh", "-c", script], linux=_userns(), mounts=_mounts_without_tty(), **overrides
    )


def _runc_version() -> tuple[int, int]:
    out = subprocess.run([require_runc(), "--version"], capture_output=True, text=True)
    major, minor = out.stdout.split()[2].split(".")[:2]
    return int(major), int(minor)


def test_user_namespace_credentials_match(agent: LocalAgent) -> None:
    script = (
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; "
        "grep -E '^(Uid|Gid|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/self/status"
    )
    trinit, runc = _userns_compare(agent, script)
    assert trinit.exit_code == runc.exit_code == 0
    assert trinit.stdout == runc.stdout
    assert "0     100000      65536" in trinit.stdout  # (not an empty agreement)


def test_user_namespace_filesystem_view_matches(agent: LocalAgent) -> None:
    script = (
        "stat -c '%n %u:%g' / /etc/passwd /dev/null /dev/pts /tmp /proc/1; "
        "echo x >> /etc/passwd 2>/dev/null || echo rootfs-readonly-for-us; "
        "touch /tmp/mine && stat -c '%u:%g' /tmp/mine; mkdir /dev/shm/d && echo shm-ok; "
        "hostname"
    )
    trinit, runc = _userns_compare(agent, script, hostname="userns")
    assert trinit.exit_code == runc.exit_code == 0
    assert trinit.stdout == runc.stdout
    assert "rootfs-readonly-for-us" in trinit.stdout and "\nuserns\n" in trinit.stdout


def test_user_namespace_with_a_non_root_user_matches(agent: LocalAgent) -> None:
    process = {"user": {"uid": 1, "gid": 1}}
    script = "id -u; id -g; grep -E '^(Uid|Gid|CapEff):' /proc/self/status"
    trinit, runc = _userns_compare(agent, script, process=process)
    assert trinit.exit_code == runc.exit_code == 0
    assert trinit.stdout == runc.stdout
    assert trinit.stdout.startswith("1\n1\n")


def test_umask_matches(agent: LocalAgent) -> None:
    for process in ({}, {"user": {"uid": 0, "gid": 0, "umask": 0o027}}):
        trinit, runc = compare(
            agent, ["sh", "-c", "umask; mkdir /tmp/d; stat -c %a /tmp/d"], process=process
        )
        assert trinit.exit_code == runc.exit_code == 0
        assert trinit.stdout == runc.stdout, process
    assert trinit.stdout == "0027\n750\n"


def test_domainname_matches(agent: LocalAgent) -> None:
    args = ["cat", "/proc/sys/kernel/domainname"]
    trinit, runc = compare(agent, args, domainname="example.test")
    assert (trinit.exit_code, trinit.stdout) == (0, "example.test\n")
    if _runc_version() >= (1, 2):
        assert (runc.exit_code, runc.stdout) == (0, "example.test\n")
    else:  # runc 1.1 ignores domainname: the documented difference, still as documented
        assert (runc.exit_code, runc.stdout) == (0, "(none)\n")
