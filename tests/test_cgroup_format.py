"""The pure cgroup interface-file parsers (no filesystem)."""

from __future__ import annotations

from trinit.cgroup import UINT64_MAX, parse_flat_keyed, parse_nested_keyed, parse_single
from trinit.cgroup._format import (
    parse_controllers,
    parse_device,
    parse_own_cgroup,
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
    assert parse_own_cgroup("12:memory:/foo\n0::/container/c1\n") == "/container/c1"
    assert parse_own_cgroup("1:name=systemd:/\n") is None
