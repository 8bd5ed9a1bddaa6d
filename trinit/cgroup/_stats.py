"""ContainerStatistics: cgroup v2 files and link counters mapped to ``ContainerStats``.

Theory of operation (docs/protocol.md §4.21 and §7.3). For one container
cgroup directory, :func:`read_stats` reads the interface files of the requested
categories and fills the protobuf message. A sub-message appears only when the category
is requested and its source exists:

* ``process`` needs ``pids.current``; ``memory`` needs ``memory.current``; ``cpu`` needs a
  non-empty ``cpu.stat``;
* ``block_io`` is always present when requested (no devices without ``io.stat``);
* ``memory_events`` is always present when requested (zeros without ``memory.events``);
* ``networks`` is the VM-wide list of ``eth*`` links, the same for every container.

Values: integers, ``max`` -> UINT64_MAX, missing keys and missing limit files -> 0.

Everything here is blocking I/O (files, one netlink socket): callers run it in
``trio.to_thread.run_sync``. Nothing here keeps state or holds resources between calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from trinit import _pyroute2 as pyroute2
from trinit._proto import sandbox_pb2 as pb

from . import _format

PROCESS = int(pb.STAT_CATEGORY_PROCESS)
MEMORY = int(pb.STAT_CATEGORY_MEMORY)
CPU = int(pb.STAT_CATEGORY_CPU)
BLOCK_IO = int(pb.STAT_CATEGORY_BLOCK_IO)
NETWORK = int(pb.STAT_CATEGORY_NETWORK)
MEMORY_EVENTS = int(pb.STAT_CATEGORY_MEMORY_EVENTS)

ALL_STAT_CATEGORIES: frozenset[int] = frozenset(
    {PROCESS, MEMORY, CPU, BLOCK_IO, NETWORK, MEMORY_EVENTS}
)

SYS_CLASS_NET = "/sys/class/net"

# MemoryStats field <- memory.stat key (docs/protocol.md §7.3).
_MEMORY_STAT_FIELDS = {
    "cache_bytes": "file",
    "kernel_stack_bytes": "kernel_stack",
    "slab_bytes": "slab",
    "page_faults": "pgfault",
    "major_page_faults": "pgmajfault",
    "inactive_file": "inactive_file",
    "anon": "anon",
    "workingset_refault_anon": "workingset_refault_anon",
    "workingset_refault_file": "workingset_refault_file",
    "pgsteal_kswapd": "pgsteal_kswapd",
    "pgsteal_direct": "pgsteal_direct",
    "pgsteal_khugepaged": "pgsteal_khugepaged",
}

# CPUStats field <- cpu.stat key.
_CPU_STAT_FIELDS = {
    "usage_usec": "usage_usec",
    "user_usec": "user_usec",
    "system_usec": "system_usec",
    "throttling_periods": "nr_periods",
    "throttled_periods": "nr_throttled",
    "throttled_time_usec": "throttled_usec",
}

# BlockIOEntry field <- io.stat sub-key.
_IO_STAT_FIELDS = {
    "read_bytes": "rbytes",
    "write_bytes": "wbytes",
    "read_operations": "rios",
    "write_operations": "wios",
}

_MEMORY_EVENT_KEYS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")


def read_stats(
    cgroup_dir: str,
    categories: Iterable[int],
    *,
    saved_memory_events: Mapping[str, int] | None = None,
    networks: list[pb.NetworkStats] | None = None,
) -> pb.ContainerStats:
    """Statistics of one cgroup for exactly the given categories.

    ``categories`` is taken literally: the caller expands an empty request to
    :data:`ALL_STAT_CATEGORIES` (and keeps vminitd's quirk that ``[UNSPECIFIED]`` selects
    nothing). ``container_id`` is left for the caller to set. ``saved_memory_events`` are the
    counts to report when ``memory.events`` cannot be read (e.g. a snapshot taken before the
    cgroup went away); a readable file always wins. ``networks`` is the VM-wide link list
    (see :func:`read_network_stats`); None reads it here when NETWORK is requested.

    ``oom_group_kill`` is filled from ``memory.events`` too (vminitd leaves it 0).
    Unexpected read errors (anything but a missing file) propagate as OSError.
    """
    wanted = set(categories)
    stats = pb.ContainerStats()
    if PROCESS in wanted:
        current = _read_single(cgroup_dir, "pids.current")
        if current is not None:
            stats.process.CopyFrom(
                pb.ProcessStats(current=current, limit=_read_single(cgroup_dir, "pids.max") or 0)
            )
    if MEMORY in wanted:
        memory = _read_memory(cgroup_dir)
        if memory is not None:
            stats.memory.CopyFrom(memory)
    if CPU in wanted:
        cpu_text = _read_optional(cgroup_dir, "cpu.stat")
        if cpu_text:
            cpu = _format.parse_flat_keyed(cpu_text)
            stats.cpu.CopyFrom(
                pb.CPUStats(**{field: cpu.get(key, 0) for field, key in _CPU_STAT_FIELDS.items()})
            )
    if BLOCK_IO in wanted:
        stats.block_io.CopyFrom(_read_block_io(cgroup_dir))
    if MEMORY_EVENTS in wanted:
        events_text = _read_optional(cgroup_dir, "memory.events")
        if events_text is not None:
            events: Mapping[str, int] = _format.parse_flat_keyed(events_text)
        else:
            events = saved_memory_events or {}
        stats.memory_events.CopyFrom(
            pb.MemoryEventStats(**{key: events.get(key, 0) for key in _MEMORY_EVENT_KEYS})
        )
    if NETWORK in wanted:
        links = networks if networks is not None else read_network_stats()
        stats.networks.extend(links)
    return stats


def _read_memory(cgroup_dir: str) -> pb.MemoryStats | None:
    usage = _read_single(cgroup_dir, "memory.current")
    if usage is None:
        return None
    memory_stat = _format.parse_flat_keyed(_read_optional(cgroup_dir, "memory.stat") or "")
    return pb.MemoryStats(
        usage_bytes=usage,
        limit_bytes=_read_single(cgroup_dir, "memory.max") or 0,
        swap_usage_bytes=_read_single(cgroup_dir, "memory.swap.current") or 0,
        swap_limit_bytes=_read_single(cgroup_dir, "memory.swap.max") or 0,
        **{field: memory_stat.get(key, 0) for field, key in _MEMORY_STAT_FIELDS.items()},
    )


def _read_block_io(cgroup_dir: str) -> pb.BlockIOStats:
    block_io = pb.BlockIOStats()
    for key, values in _format.parse_nested_keyed(_read_optional(cgroup_dir, "io.stat") or ""):
        device = _format.parse_device(key)
        if device is None:
            continue
        block_io.devices.append(
            pb.BlockIOEntry(
                major=device[0],
                minor=device[1],
                **{field: values.get(sub, 0) for field, sub in _IO_STAT_FIELDS.items()},
            )
        )
    return block_io


def read_network_stats() -> list[pb.NetworkStats]:
    """rx/tx counters of every ``/sys/class/net`` entry named ``eth*``, in directory order.

    One pyroute2 ``IPRoute`` socket per call, closed before returning; an interface that
    disappears between the directory listing and the netlink query is skipped. Blocking:
    run it in a worker thread.
    """
    try:
        names = [name for name in os.listdir(SYS_CLASS_NET) if name.startswith("eth")]
    except FileNotFoundError:
        return []
    if not names:
        return []
    IPRoute, NetlinkError = pyroute2.load()  # lazily: heavy, and only needed here

    result: list[pb.NetworkStats] = []
    with IPRoute() as ipr:
        for name in names:
            indexes = ipr.link_lookup(ifname=name)
            if not indexes:
                continue
            try:
                links = ipr.get_links(indexes[0])
            except NetlinkError:  # removed since link_lookup
                continue
            counters = links[0].get("IFLA_STATS64") if links else None
            if counters is None:
                continue
            result.append(
                pb.NetworkStats(
                    interface=name,
                    receivedPackets=counters.get("rx_packets") or 0,
                    transmittedPackets=counters.get("tx_packets") or 0,
                    receivedBytes=counters.get("rx_bytes") or 0,
                    transmittedBytes=counters.get("tx_bytes") or 0,
                    receivedErrors=counters.get("rx_errors") or 0,
                    transmittedErrors=counters.get("tx_errors") or 0,
                )
            )
    return result


def _read_optional(cgroup_dir: str, filename: str) -> str | None:
    try:
        with open(os.path.join(cgroup_dir, filename), encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _read_single(cgroup_dir: str, filename: str) -> int | None:
    text = _read_optional(cgroup_dir, filename)
    return None if text is None else _format.parse_single(text)
