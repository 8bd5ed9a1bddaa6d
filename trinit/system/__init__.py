"""The VM-level system calls behind the host's non-process RPCs (docs/protocol.md §4).

Each public coroutine takes a request message of ``trinit._proto.sandbox_pb2`` (plus, for
some, keyword-only hooks that tests use to stay off the real machine) and returns the
response message, or raises a :class:`trinit.errors.TrinitError` with vminitd's code and
message prefix. Differences from vminitd are recorded in ``docs/compat.md``.
"""

from typing import TYPE_CHECKING

from trinit._lazy import lazy_exports

if TYPE_CHECKING:
    from trinit.exec import MountOptions
    from trinit.exec import parse_mount_options as parse_options

    from ._copy import Dial, copy
    from ._dns import configure_dns, configure_hosts, render_hosts, render_resolv_conf
    from ._env import getenv, setenv
    from ._etc import install_etc_file
    from ._files import FsIoctl, filesystem_operation, mkdir, stat, stat_message, write_file
    from ._kill import KillPlan, Me, kill, plan_kill, sync
    from ._mount import MountSyscalls, mount, umount
    from ._net import ip_addr_add, ip_link_set, ip_route_add_default, ip_route_add_link
    from ._sysctl import (
        binfmt_line,
        mount_binfmt_misc,
        set_time,
        setup_emulator,
        sysctl,
        sysctl_path,
    )

__getattr__ = lazy_exports(
    __name__,
    {
        "MountOptions": "trinit.exec",
        "parse_options": "._mount",  # trinit.exec's parse_mount_options
        "Dial": "._copy",
        "copy": "._copy",
        "configure_dns": "._dns",
        "configure_hosts": "._dns",
        "render_hosts": "._dns",
        "render_resolv_conf": "._dns",
        "getenv": "._env",
        "setenv": "._env",
        "install_etc_file": "._etc",
        "FsIoctl": "._files",
        "filesystem_operation": "._files",
        "mkdir": "._files",
        "stat": "._files",
        "stat_message": "._files",
        "write_file": "._files",
        "kill": "._kill",
        "KillPlan": "._kill",
        "Me": "._kill",
        "plan_kill": "._kill",
        "sync": "._kill",
        "MountSyscalls": "._mount",
        "mount": "._mount",
        "umount": "._mount",
        "ip_addr_add": "._net",
        "ip_link_set": "._net",
        "ip_route_add_default": "._net",
        "ip_route_add_link": "._net",
        "binfmt_line": "._sysctl",
        "mount_binfmt_misc": "._sysctl",
        "set_time": "._sysctl",
        "setup_emulator": "._sysctl",
        "sysctl": "._sysctl",
        "sysctl_path": "._sysctl",
    },
)

__all__ = [
    "Dial",
    "FsIoctl",
    "KillPlan",
    "Me",
    "MountOptions",
    "MountSyscalls",
    "binfmt_line",
    "configure_dns",
    "configure_hosts",
    "copy",
    "filesystem_operation",
    "getenv",
    "install_etc_file",
    "ip_addr_add",
    "ip_link_set",
    "ip_route_add_default",
    "ip_route_add_link",
    "kill",
    "mkdir",
    "mount",
    "mount_binfmt_misc",
    "parse_options",
    "plan_kill",
    "render_hosts",
    "render_resolv_conf",
    "set_time",
    "setenv",
    "setup_emulator",
    "stat",
    "stat_message",
    "sync",
    "sysctl",
    "sysctl_path",
    "umount",
    "write_file",
]
