"""Devices through a real agent: linux.resources.devices enforced, linux.devices created.

Each container is a busybox one with a tmpfs /dev (tests/devicelib.py has the probes). The
agent creates the container cgroup in this machine's cgroup2 hierarchy and attaches the
device filter there, so these run the whole path: spec -> filter -> kernel verdicts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import devicelib as dl
import grpc
import pytest
from agentlib import Container
from rootfs import test_spec

from trinit import _linux as sc
from trinit.exec._devices import create_devices
from trinit.host import LocalAgent


def linux_with(**extra: object) -> dict[str, object]:
    """The busybox spec's ``linux`` section with ``extra`` merged into it."""
    linux: dict[str, object] = test_spec("/", ["true"])["linux"]
    linux.update(extra)
    return linux


def run(agent: LocalAgent, script: str, **overrides: Any) -> dict[str, str]:
    result = Container(agent.host).run(["sh", "-c", script], **overrides)
    assert result.exit_code == 0, result
    return dl.parse(result.stdout.decode())


def test_default_rules_deny_opening_an_ungranted_block_device(agent: LocalAgent) -> None:
    seen = run(agent, dl.UNGRANTED_BLOCK)
    assert seen["mknod"] == "ok"  # runc's default list: mknod of any node is allowed...
    assert seen["open_r"] == "EPERM"  # ...opening it is not
    assert seen["open_rw"] == "EPERM"
    assert seen["mknod_sda"] == "ok" and seen["open_sda"] == "EPERM"
    assert seen["open_null"] == "ok" and seen["open_ptmx"] == "ok"


def test_a_granted_node_opens(agent: LocalAgent) -> None:
    resources = {"devices": dl.GRANTED_LOOP0_RULES}
    seen = run(agent, dl.GRANTED_LOOP0, linux=linux_with(resources=resources))
    assert seen["mknod"] == "ok"
    assert seen["open_rw"] in ("ok", "ENXIO")  # ENXIO: no loop driver; never EPERM
    assert seen["open_other"] == "EPERM"  # b 7:1 was not granted


def test_access_letters_are_enforced(agent: LocalAgent) -> None:
    resources = {"devices": dl.READ_ONLY_LOOP0_RULES}
    seen = run(agent, dl.READ_ONLY_LOOP0, linux=linux_with(resources=resources))
    assert seen["open_r"] in ("ok", "ENXIO")
    assert seen["open_rw"] == "EPERM"


def test_linux_devices_are_created_with_mode_and_owner(agent: LocalAgent) -> None:
    seen = run(agent, dl.STAT_DEVICES, linux=linux_with(devices=dl.LINUX_DEVICES))
    for path, expected in dl.EXPECTED_STAT.items():
        assert seen[path] == expected, path
    assert seen["write_mynull"] == "ok"  # c 1:3 is in the default allow list
    assert seen["open_loopx"] == "EPERM"  # a node is not a grant (as in runc)


def test_bad_device_rule_fails_create_and_leaves_no_cgroup(agent: LocalAgent) -> None:
    rules = [{"allow": True, "type": "b", "major": 7, "access": ""}]
    container = Container(agent.host)
    spec = container.spec(["true"], linux=linux_with(resources={"devices": rules}))
    proc = agent.host.process(container.id, spec)
    with pytest.raises(grpc.RpcError) as info:
        proc.create()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "access cannot be empty" in str(info.value.details())
    assert agent.cgroup_root is not None
    assert not os.path.exists(os.path.join(agent.cgroup_root, "container", container.id))


def _in_private_tmpfs(scratch: str, body: Callable[[int], str]) -> str:
    """Run ``body(root_fd)`` in a forked child with a fresh tmpfs on ``scratch`` in its own
    mount namespace; return what it returned (a str) or the text of its exception."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_end)
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC, None)
            sc.mount("tmpfs", scratch, "tmpfs", 0, "mode=755")
            root_fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            text = str(body(root_fd))
        except BaseException as exc:
            text = f"error: {exc}"
        os.write(write_end, text.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read().decode()
    os.waitpid(pid, 0)
    return data


def test_refused_mknod_falls_back_to_binding_the_vm_node(tmp_path: Path) -> None:
    """Without CAP_MKNOD (as in a user namespace) the VM's node is bind-mounted, as runc."""
    scratch = str(tmp_path)

    def body(root_fd: int) -> str:
        effective, permitted, inheritable = sc.capget()
        no_mknod = ~(1 << 27)  # CAP_MKNOD
        sc.capset(effective & no_mknod, permitted & no_mknod, inheritable)
        entry = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}
        create_devices(root_fd, [entry])
        st = os.stat(os.path.join(scratch, "dev", "null"))
        mounted = os.path.ismount(os.path.join(scratch, "dev", "null"))
        return f"{stat.S_ISCHR(st.st_mode)} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} {mounted}"

    assert _in_private_tmpfs(scratch, body) == "True 1:3 True"


def test_existing_node_is_kept_and_bad_entries_fail(tmp_path: Path) -> None:
    scratch = str(tmp_path)

    def body(root_fd: int) -> str:
        fifo = {"path": "/dev/x", "type": "p", "fileMode": 0o600}
        create_devices(root_fd, [fifo])
        create_devices(root_fd, [{"path": "/dev/x", "type": "c", "major": 1, "minor": 3}])
        kept = stat.S_ISFIFO(os.stat(os.path.join(scratch, "dev", "x")).st_mode)
        try:
            create_devices(root_fd, [{"path": "dev/rel", "type": "c"}])
        except ValueError as exc:
            return f"{kept} {exc}"
        return f"{kept} accepted"

    assert _in_private_tmpfs(scratch, body) == (
        "True create device dev/rel: path 'dev/rel' is not absolute"
    )
