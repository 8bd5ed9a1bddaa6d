"""Host-side library: drive a trinit (or vminitd) agent and stream process stdio."""

from ._client import Host, Process, Result, oci_spec
from ._local import LocalAgent
from ._ports import HostPort, PortAllocator
from ._rootfs import build_busybox_rootfs, busybox_spec
from ._seccomp import default_seccomp
from ._vsock import VsockConnectError

__all__ = [
    "Host",
    "HostPort",
    "LocalAgent",
    "PortAllocator",
    "Process",
    "Result",
    "VsockConnectError",
    "build_busybox_rootfs",
    "busybox_spec",
    "default_seccomp",
    "oci_spec",
]
