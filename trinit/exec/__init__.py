"""Starting container processes: the exec helper (trinit's vmexec) and everything around it.

Public names:
* :func:`launch` / :class:`LaunchResult`: spawn the helper and run the start protocol.
* :func:`decode_spec` / :func:`alter_spec`: CreateProcess's OCI spec handling
  (docs/protocol.md §5.2).
* :func:`resolve_user` / :class:`ResolvedUser`: user strings against a rootfs.
* :class:`Lifecycle`, :class:`State`, :class:`Event`, :class:`InvalidTransition`,
  :data:`SETTLED`, :data:`LIVE`: the pure process state machine.
* :func:`parse_mount_options` / :class:`MountOptions`: mount(8)-style option parsing
  (shared with the Mount RPC).
* :class:`HelperPool`: the exec fork server (zygote) a launch's helper is forked from.
* :func:`locate`, :func:`open_root`, :func:`open_in_root`, :func:`open_regular_in_root`,
  :func:`open_regular_at`, :func:`reopen`, :func:`makedirs_in_root`, :func:`read_bounded`,
  :func:`require_regular`, :func:`kind_of`, :func:`add_root`, :func:`remove_root`: paths
  inside a container rootfs, resolved there (``openat2(RESOLVE_IN_ROOT)``), and files
  opened only once they are known to be what is wanted.

The helper itself (``_child``) is started as a separate process and never imported here.
"""

from trinit.exec._inroot import (
    Located,
    add_root,
    kind_of,
    locate,
    makedirs_in_root,
    open_in_root,
    open_regular_at,
    open_regular_in_root,
    open_root,
    read_bounded,
    remove_root,
    reopen,
    require_regular,
    split_parent,
)
from trinit.exec._launch import LaunchResult, launch
from trinit.exec._lifecycle import LIVE, SETTLED, Event, InvalidTransition, Lifecycle, State
from trinit.exec._mountopts import MountOptions
from trinit.exec._mountopts import parse_options as parse_mount_options
from trinit.exec._oci import alter_spec, decode_spec
from trinit.exec._user import ResolvedUser, resolve_user
from trinit.exec._zygote import HelperPool

__all__ = [
    "LIVE",
    "SETTLED",
    "Event",
    "HelperPool",
    "InvalidTransition",
    "LaunchResult",
    "Lifecycle",
    "Located",
    "MountOptions",
    "ResolvedUser",
    "State",
    "add_root",
    "alter_spec",
    "decode_spec",
    "kind_of",
    "launch",
    "locate",
    "makedirs_in_root",
    "open_in_root",
    "open_regular_at",
    "open_regular_in_root",
    "open_root",
    "parse_mount_options",
    "read_bounded",
    "remove_root",
    "reopen",
    "require_regular",
    "resolve_user",
    "split_parent",
]
