"""The pure cgroup interface-file parsers (no filesystem)."""

from __future__ import annotations

import pytest

from trinit._cgrouppath import directory_of, v2_path
from trinit.cgroup import UINT64_MAX, parse_flat_keyed, parse_nested_keyed, parse_single
from trinit.cgroup._format import (
    parse_controllers,
    parse_device,
    parse_procs,
    parse_value,
)


def test_single_value() -> None:
    assert parse_single("12345\n") == 12345
    assert parse_single("max\n") == UINT64_MAX
    assert parse_single("") is None
    assert parse_single("garbage") is None


def test_values_clamp_to_uint64() -> None:
    assert parse_value("-5") == 0
    assert parse_value(str(2**70)) == UINT64_MAX
    assert parse_value(" 7 ") == 7


def test_flat_keyed() -> None:
    text = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nbogus\nweird x\nlimit max\n"
    assert parse_flat_keyed(text) == {
        "usage_usec": 100,
        "user_usec": 60,
        "system_usec": 40,
        "limit": UINT64_MAX,
    }
    assert parse_flat_keyed("") == {}


def test_nested_keyed() -> None:
    text = (
        "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n\n253:1 rbytes=10 junk wbytes=max\n"
    )
    assert parse_nested_keyed(text) == [
        ("8:0", {"rbytes": 1, "wbytes": 2, "rios": 3, "wios": 4, "dbytes": 0, "dios": 0}),
        ("253:1", {"rbytes": 10, "wbytes": UINT64_MAX}),
    ]


def test_device_keys() -> None:
    assert parse_device("8:16") == (8, 16)
    assert parse_device("8") is None
    assert parse_device("a:b") is None


def test_controllers_procs_and_own_cgroup() -> None:
    assert parse_controllers("cpuset cpu io memory hugetlb pids rdma misc\n") == [
        "cpuset",
        "cpu",
        "io",
        "memory",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    ]
    assert parse_procs("1\n22\n\nx\n") == [1, 22]


def test_proc_cgroup_to_directory() -> None:
    """``/proc/<pid>/cgroup`` text to a directory: the exec helper and CgroupManager."""
    text = "12:memory:/foo\n0::/container/c1\n"
    assert v2_path(text) == "/container/c1"
    assert v2_path("1:name=systemd:/\n") is None
    assert directory_of(text, "/sys/fs/cgroup", "/") == "/sys/fs/cgroup/container/c1"
    # a mount showing a subtree: the path is relative to the hierarchy, not to the mount
    assert directory_of("0::/sub/container/c1\n", "/mnt/cg", "/sub") == "/mnt/cg/container/c1"
    assert directory_of("0::/\n", "/sys/fs/cgroup", "/") == "/sys/fs/cgroup"
    for bad, reason in (("1:cpu:/x\n", "no cgroup v2"), ("0::/../other\n", "outside")):
        with pytest.raises(ValueError, match=reason):
            directory_of(bad, "/sys/fs/cgroup", "/")
