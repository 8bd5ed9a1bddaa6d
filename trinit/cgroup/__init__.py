"""cgroup v2: container cgroups, resource limits, statistics and trinit's own cgroup.

Public names only; the code lives in the private modules:

* ``_manager``: :class:`CgroupManager` (create, limits, membership, removal with retries)
  and :func:`setup_own_cgroup` (PID-1 boot, docs/protocol.md §8.2 step 7);
* ``_stats``: :func:`read_stats` / :func:`read_network_stats` (ContainerStatistics,
  docs/protocol.md §7.3);
* ``_monitor``: :class:`MemoryMonitor` (docs/protocol.md §7.2);
* ``_devices``: the device filter (OCI ``linux.resources.devices`` as a
  ``BPF_PROG_TYPE_CGROUP_DEVICE`` program): :func:`device_filter`,
  :func:`attach_device_filter`, :func:`attached_device_filters`, :data:`DEFAULT_DEVICE_RULES`;
* ``_format``: pure parsers of the interface file formats.
"""

from typing import TYPE_CHECKING

from trinit._lazy import lazy_exports

if TYPE_CHECKING:
    from ._devices import (
        DEFAULT_DEVICE_RULES,
        DeviceRule,
        LoadedFilters,
        attach_device_filter,
        attached_device_filters,
        device_filter,
    )
    from ._format import (
        UINT64_MAX,
        parse_flat_keyed,
        parse_nested_keyed,
        parse_single,
    )
    from ._manager import (
        DEFAULT_ROOT,
        OWN_MEMORY_HIGH,
        OWN_MEMORY_LOW,
        REMOVE_RETRY_DELAYS,
        CgroupManager,
        setup_own_cgroup,
    )
    from ._monitor import MemoryMonitor
    from ._stats import ALL_STAT_CATEGORIES, read_network_stats, read_stats

__getattr__ = lazy_exports(
    __name__,
    {
        "DEFAULT_DEVICE_RULES": "._devices",
        "DeviceRule": "._devices",
        "attached_device_filters": "._devices",
        "attach_device_filter": "._devices",
        "LoadedFilters": "._devices",
        "device_filter": "._devices",
        "UINT64_MAX": "._format",
        "parse_flat_keyed": "._format",
        "parse_nested_keyed": "._format",
        "parse_single": "._format",
        "DEFAULT_ROOT": "._manager",
        "OWN_MEMORY_HIGH": "._manager",
        "OWN_MEMORY_LOW": "._manager",
        "REMOVE_RETRY_DELAYS": "._manager",
        "CgroupManager": "._manager",
        "setup_own_cgroup": "._manager",
        "MemoryMonitor": "._monitor",
        "ALL_STAT_CATEGORIES": "._stats",
        "read_network_stats": "._stats",
        "read_stats": "._stats",
    },
)

__all__ = [
    "ALL_STAT_CATEGORIES",
    "DEFAULT_DEVICE_RULES",
    "DEFAULT_ROOT",
    "OWN_MEMORY_HIGH",
    "OWN_MEMORY_LOW",
    "REMOVE_RETRY_DELAYS",
    "UINT64_MAX",
    "CgroupManager",
    "DeviceRule",
    "LoadedFilters",
    "MemoryMonitor",
    "attach_device_filter",
    "attached_device_filters",
    "device_filter",
    "parse_flat_keyed",
    "parse_nested_keyed",
    "parse_single",
    "read_network_stats",
    "read_stats",
    "setup_own_cgroup",
]
