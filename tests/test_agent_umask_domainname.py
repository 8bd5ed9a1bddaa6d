"""End to end: ``process.user.umask`` and the OCI top-level ``domainname``.

The agent here is started with umask 0077, so a workload that merely inherited the agent's
umask would show it (the default must be runc's 0022 instead).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from agentlib import Container

from trinit.host import LocalAgent


@pytest.fixture
def strict_agent() -> Iterator[LocalAgent]:
    old = os.umask(0o077)
    try:
        running = LocalAgent.start()
    finally:
        os.umask(old)
    try:
        yield running
    finally:
        running.stop()
        running.remove()


def test_umask_defaults_to_0022(strict_agent: LocalAgent) -> None:
    ctr = Container(strict_agent.host)
    init = ctr.start_init()
    try:
        result = ctr.exec("e1", ["sh", "-c", "umask"])
        assert (result.exit_code, result.stdout) == (0, b"0022\n")
    finally:
        init.kill(9)
        init.wait(timeout=30)
        init.close()
        init.delete()
    result = Container(strict_agent.host).run(
        ["sh", "-c", "umask; touch /tmp/f; stat -c %a /tmp/f"]
    )
    assert (result.exit_code, result.stdout) == (0, b"0022\n644\n")


def test_umask_from_the_spec(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    init = ctr.start_init()
    try:
        user = {"uid": 0, "gid": 0, "umask": 0o027}
        result = ctr.exec("e1", ["sh", "-c", "umask"], process={"user": user})
        assert (result.exit_code, result.stdout) == (0, b"0027\n")
    finally:
        init.kill(9)
        init.wait(timeout=30)
        init.close()
        init.delete()
    result = Container(agent.host).run(
        ["sh", "-c", "umask; mkdir /tmp/d; stat -c %a /tmp/d"],
        process={"user": {"uid": 0, "gid": 0, "umask": 0o077}},
    )
    assert (result.exit_code, result.stdout) == (0, b"0077\n700\n")


def test_domainname_is_set_in_the_container_uts_namespace(agent: LocalAgent) -> None:
    result = Container(agent.host).run(
        ["cat", "/proc/sys/kernel/domainname", "/proc/sys/kernel/hostname"],
        domainname="example.test",
    )
    assert (result.exit_code, result.stdout) == (0, b"example.test\ntestbox\n")
    # the agent's own UTS namespace keeps its domain name
    outside = subprocess.run(
        ["nsenter", "-t", str(agent.pid), "-u", "cat", "/proc/sys/kernel/domainname"],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    assert outside.stdout == "(none)\n"
    result = Container(agent.host).run(["cat", "/proc/sys/kernel/domainname"])
    assert result.stdout == b"(none)\n"


def test_domainname_in_a_user_namespace(agent: LocalAgent) -> None:
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    namespaces = [{"type": kind, "path": ""} for kind in ("ipc", "mount", "pid", "uts", "user")]
    result = Container(agent.host).run(
        ["cat", "/proc/sys/kernel/domainname"],
        domainname="userns.test",
        linux={"namespaces": namespaces, "uidMappings": mapping, "gidMappings": mapping},
    )
    assert (result.exit_code, result.stdout) == (0, b"userns.test\n"), result.stderr
