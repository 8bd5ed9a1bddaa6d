"""Starting container processes: the exec helper (trinit's vmexec) and everything around it.

Public names:
* :func:`launch` / :class:`LaunchResult`: spawn the helper and run the start protocol.
* :func:`decode_spec` / :func:`alter_spec`: CreateProcess's OCI spec handling (section 6.2).
* :func:`resolve_user` / :class:`ResolvedUser`: user strings against a rootfs.
* :class:`Lifecycle`, :class:`State`, :class:`Event`, :class:`InvalidTransition`,
  :data:`SETTLED`, :data:`LIVE`: the pure process state machine.
* :func:`parse_mount_options`: mount(8)-style option parsing (shared with the Mount RPC).

The helper itself (``_child``) is started as a separate process and never imported here.
"""

from trinit.exec._launch import LaunchResult, launch
from trinit.exec._lifecycle import LIVE, SETTLED, Event, InvalidTransition, Lifecycle, State
from trinit.exec._mountopts import parse_options as parse_mount_options
from trinit.exec._oci import alter_spec, decode_spec
from trinit.exec._user import ResolvedUser, resolve_user

__all__ = [
    "LIVE",
    "SETTLED",
    "Event",
    "InvalidTransition",
    "LaunchResult",
    "Lifecycle",
    "ResolvedUser",
    "State",
    "alter_spec",
    "decode_spec",
    "launch",
    "parse_mount_options",
    "resolve_user",
]
