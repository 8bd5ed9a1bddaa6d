"""The supervision tree: reaper, containers, their processes (docs/architecture.md)."""

from ._backend import HelperBackend, Launched, ProcessBackend
from ._cgroups import ContainerCgroups, container_statistics, is_cgroup2
from ._container import CgroupHooks, Container, remove_bundle
from ._process import NEVER_RAN_EXIT_CODE, Dial, ManagedProcess, StdioPorts
from ._proxies import ProxyTable
from ._reaper import ExitStatus, ExitWatch, Reaper
from ._registry import ContainerRegistry

__all__ = [
    "NEVER_RAN_EXIT_CODE",
    "CgroupHooks",
    "Container",
    "ContainerCgroups",
    "ContainerRegistry",
    "Dial",
    "ExitStatus",
    "ExitWatch",
    "HelperBackend",
    "Launched",
    "ManagedProcess",
    "ProcessBackend",
    "ProxyTable",
    "Reaper",
    "StdioPorts",
    "container_statistics",
    "is_cgroup2",
    "remove_bundle",
]
