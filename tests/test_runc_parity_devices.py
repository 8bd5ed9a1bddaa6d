"""Devices: the same spec through runc and through trinit gives the same observations.

runc (tests/runclib.py) enforces ``linux.resources.devices`` with its cgroup device rules
plus its default allow list, and creates ``linux.devices`` in the container's /dev; trinit
must match what a process sees: whether mknod and open succeed (and with which errno), and
the mode, owner and numbers of each created node. The probes (tests/devicelib.py) only make
nodes in the container's tmpfs /dev and open them without reading or writing.
"""

from __future__ import annotations

import devicelib as dl
from rootfs import test_spec
from runclib import compare

from trinit.host import LocalAgent


def linux_with(**extra: object) -> dict[str, object]:
    linux: dict[str, object] = test_spec("/", ["true"])["linux"]
    linux.update(extra)
    return linux


def both(
    agent: LocalAgent, script: str, **overrides: object
) -> tuple[dict[str, str], dict[str, str]]:
    trinit, runc = compare(agent, ["sh", "-c", script], **overrides)
    assert trinit.exit_code == runc.exit_code == 0, (trinit, runc)
    return dl.parse(trinit.stdout), dl.parse(runc.stdout)


def test_default_rules_match(agent: LocalAgent) -> None:
    trinit, runc = both(agent, dl.UNGRANTED_BLOCK)
    assert trinit == runc
    assert trinit["open_r"] == "EPERM"  # the comparison is not vacuous


def test_granted_node_matches(agent: LocalAgent) -> None:
    linux = linux_with(resources={"devices": dl.GRANTED_LOOP0_RULES})
    trinit, runc = both(agent, dl.GRANTED_LOOP0, linux=linux)
    assert trinit == runc
    assert trinit["open_other"] == "EPERM" and trinit["open_rw"] != "EPERM"


def test_access_letters_match(agent: LocalAgent) -> None:
    linux = linux_with(resources={"devices": dl.READ_ONLY_LOOP0_RULES})
    trinit, runc = both(agent, dl.READ_ONLY_LOOP0, linux=linux)
    assert trinit == runc
    assert trinit["open_rw"] == "EPERM"


def test_linux_devices_match(agent: LocalAgent) -> None:
    trinit, runc = both(agent, dl.STAT_DEVICES, linux=linux_with(devices=dl.LINUX_DEVICES))
    assert trinit == runc
    assert trinit["/dev/loopx"] == dl.EXPECTED_STAT["/dev/loopx"]
