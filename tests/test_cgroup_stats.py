"""read_stats: cgroup interface files -> ContainerStats, every field (docs/protocol.md §7.3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit.cgroup import ALL_STAT_CATEGORIES, UINT64_MAX, read_network_stats, read_stats

FILES = {
    "pids.current": "7\n",
    "pids.max": "max\n",
    "memory.current": "1000\n",
    "memory.max": "268435456\n",
    "memory.swap.current": "11\n",
    "memory.swap.max": "max\n",
    "memory.stat": (
        "anon 101\nfile 102\nkernel 999\nkernel_stack 103\nslab 104\npgfault 105\n"
        "pgmajfault 106\ninactive_file 107\nworkingset_refault_anon 108\n"
        "workingset_refault_file 109\npgsteal_kswapd 110\npgsteal_direct 111\n"
        "pgsteal_khugepaged 112\n"
    ),
    "cpu.stat": (
        "usage_usec 201\nuser_usec 202\nsystem_usec 203\nnr_periods 204\n"
        "nr_throttled 205\nthrottled_usec 206\nnr_bursts 0\n"
    ),
    "io.stat": (
        "8:0 rbytes=301 wbytes=302 rios=303 wios=304 dbytes=0 dios=0\n"
        "253:16 rbytes=1 wbytes=2 rios=3 wios=4\n"
    ),
    "memory.events": "low 401\nhigh 402\nmax 403\noom 404\noom_kill 405\noom_group_kill 406\n",
}

NET = [
    pb.NetworkStats(
        interface="eth0",
        receivedPackets=1,
        transmittedPackets=2,
        receivedBytes=3,
        transmittedBytes=4,
        receivedErrors=5,
        transmittedErrors=6,
    )
]


def cgroup(tmp_path: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return str(tmp_path)


def test_every_field_is_mapped(tmp_path: Path) -> None:
    stats = read_stats(cgroup(tmp_path, FILES), ALL_STAT_CATEGORIES, networks=NET)
    assert stats.process == pb.ProcessStats(current=7, limit=UINT64_MAX)
    assert stats.memory == pb.MemoryStats(
        usage_bytes=1000,
        limit_bytes=268435456,
        swap_usage_bytes=11,
        swap_limit_bytes=UINT64_MAX,
        cache_bytes=102,
        kernel_stack_bytes=103,
        slab_bytes=104,
        page_faults=105,
        major_page_faults=106,
        inactive_file=107,
        anon=101,
        workingset_refault_anon=108,
        workingset_refault_file=109,
        pgsteal_kswapd=110,
        pgsteal_direct=111,
        pgsteal_khugepaged=112,
    )
    assert stats.cpu == pb.CPUStats(
        usage_usec=201,
        user_usec=202,
        system_usec=203,
        throttling_periods=204,
        throttled_periods=205,
        throttled_time_usec=206,
    )
    assert list(stats.block_io.devices) == [
        pb.BlockIOEntry(
            major=8,
            minor=0,
            read_bytes=301,
            write_bytes=302,
            read_operations=303,
            write_operations=304,
        ),
        pb.BlockIOEntry(
            major=253,
            minor=16,
            read_bytes=1,
            write_bytes=2,
            read_operations=3,
            write_operations=4,
        ),
    ]
    assert stats.memory_events == pb.MemoryEventStats(
        low=401, high=402, max=403, oom=404, oom_kill=405, oom_group_kill=406
    )
    assert list(stats.networks) == NET
    assert stats.container_id == ""
    # Round trip: the message serialises (no value out of uint64 range).
    assert pb.ContainerStats.FromString(stats.SerializeToString()) == stats


def test_only_requested_categories(tmp_path: Path) -> None:
    directory = cgroup(tmp_path, FILES)
    stats = read_stats(directory, {pb.STAT_CATEGORY_CPU, pb.STAT_CATEGORY_MEMORY_EVENTS})
    assert [field.name for field, _ in stats.ListFields()] == ["cpu", "memory_events"]
    nothing = read_stats(directory, {pb.STAT_CATEGORY_UNSPECIFIED})
    assert nothing.ListFields() == []


def test_missing_sources(tmp_path: Path) -> None:
    stats = read_stats(str(tmp_path), ALL_STAT_CATEGORIES, networks=[])
    # process/memory/cpu need their source; block_io and memory_events are always set.
    assert not stats.HasField("process")
    assert not stats.HasField("memory")
    assert not stats.HasField("cpu")
    assert stats.HasField("block_io") and list(stats.block_io.devices) == []
    assert stats.HasField("memory_events")
    assert stats.memory_events == pb.MemoryEventStats()
    assert list(stats.networks) == []


def test_empty_cpu_stat_and_missing_limits(tmp_path: Path) -> None:
    directory = cgroup(tmp_path, {"cpu.stat": "", "pids.current": "0\n", "memory.current": "5\n"})
    stats = read_stats(directory, ALL_STAT_CATEGORIES - {pb.STAT_CATEGORY_NETWORK})
    assert not stats.HasField("cpu")
    # Present although every value is zero: presence follows the source file.
    assert stats.HasField("process") and stats.process == pb.ProcessStats(current=0, limit=0)
    assert stats.memory == pb.MemoryStats(usage_bytes=5)


def test_missing_keys_are_zero(tmp_path: Path) -> None:
    directory = cgroup(
        tmp_path,
        {"cpu.stat": "usage_usec 9\n", "memory.events": "oom 2\n", "io.stat": "8:1 rbytes=5\n"},
    )
    stats = read_stats(directory, ALL_STAT_CATEGORIES - {pb.STAT_CATEGORY_NETWORK})
    assert stats.cpu == pb.CPUStats(usage_usec=9)
    assert stats.memory_events == pb.MemoryEventStats(oom=2)
    assert list(stats.block_io.devices) == [pb.BlockIOEntry(major=8, minor=1, read_bytes=5)]


def test_saved_memory_events_only_when_file_missing(tmp_path: Path) -> None:
    saved = {"oom": 3, "oom_kill": 2, "high": 1}
    events = {pb.STAT_CATEGORY_MEMORY_EVENTS}
    stats = read_stats(str(tmp_path), events, saved_memory_events=saved)
    assert stats.memory_events == pb.MemoryEventStats(oom=3, oom_kill=2, high=1)
    (tmp_path / "memory.events").write_text("oom 7\n")
    stats = read_stats(str(tmp_path), events, saved_memory_events=saved)
    assert stats.memory_events == pb.MemoryEventStats(oom=7)


def test_read_network_stats_on_this_machine() -> None:
    # Read-only netlink query of the machine's own links: harmless.
    links = read_network_stats()
    assert all(link.interface.startswith("eth") for link in links)


NETNS_SCRIPT = r"""
import json, os, socket
for conf in ("all", "default"):  # this netns only: keep IPv6 from sending its own packets
    with open(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "w") as f:
        f.write("1")
from pyroute2 import IPRoute
from trinit.cgroup import read_network_stats, read_stats, ALL_STAT_CATEGORIES
with IPRoute() as ipr:
    ipr.link("add", ifname="eth1", kind="veth", peer="lo2")
    ipr.link("add", ifname="eth0", kind="veth", peer="veth-not")
    for name in ("eth0", "veth-not"):
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
import time
for _ in range(500):  # a veth forwards (and counts) only once its carrier is up: wait for it
    with open("/sys/class/net/eth0/carrier") as f:
        if f.read().strip() == "1":
            break
    time.sleep(0.01)
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
    raw.bind(("eth0", 0))
    raw.send(b"\xff" * 6 + b"\x02" * 6 + b"\x88\xb5" + b"\0" * 46)  # 60 bytes
links = {l.interface: l for l in read_network_stats()}
stats = read_stats("/nonexistent", ALL_STAT_CATEGORIES)
print(json.dumps({
    "names": list(links),
    "dir_order": [n for n in os.listdir("/sys/class/net") if n.startswith("eth")],
    "stat_names": [l.interface for l in stats.networks],
    "eth0_tx": [links["eth0"].transmittedPackets, links["eth0"].transmittedBytes],
    "eth0_rx": [links["eth0"].receivedPackets, links["eth0"].receivedBytes],
    "eth1": [links["eth1"].transmittedPackets, links["eth1"].receivedErrors],
}))
"""


def test_read_network_stats_in_private_netns() -> None:
    # A fresh network + mount namespace (sysfs remounted so /sys/class/net shows it);
    # everything it creates vanishes with the process.
    result = subprocess.run(
        [
            "unshare",
            "--net",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t sysfs sysfs /sys && exec "$0" -c "$1"',
            sys.executable,
            NETNS_SCRIPT,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"cannot create namespaces: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted(data["names"]) == ["eth0", "eth1"]
    assert data["names"] == data["dir_order"]
    assert data["stat_names"] == data["names"]
    assert data["eth0_tx"] == [1, 60]
    assert data["eth0_rx"] == [0, 0]
    assert data["eth1"] == [0, 0]
