"""Host-side library: drive a trinit (or vminitd) agent and stream process stdio."""

from ._attach import FORWARDED_SIGNALS, attach, fd_sink
from ._client import Host, Process, Result, oci_spec
from ._local import LocalAgent, in_fresh_namespaces
from ._ports import HostPort, PortAllocator
from ._rootfs import build_busybox_rootfs, busybox_spec
from ._seccomp import default_seccomp
from ._vsock import VsockConnectError

__all__ = [
    "FORWARDED_SIGNALS",
    "Host",
    "HostPort",
    "LocalAgent",
    "PortAllocator",
    "Process",
    "Result",
    "VsockConnectError",
    "attach",
    "build_busybox_rootfs",
    "busybox_spec",
    "default_seccomp",
    "fd_sink",
    "in_fresh_namespaces",
    "oci_spec",
]
