"""Setenv and Getenv on trinit's own environment.

trinit's environment is inherited by every process it spawns (the exec helper falls back to
it, e.g. for ``PATH``), so Setenv changes what later processes see. The mapping is a
parameter only so tests can use a private dict; the daemon uses ``os.environ``, whose writes
also call putenv(3).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import InvalidArgument


async def setenv(
    request: pb.SetenvRequest, *, environ: MutableMapping[str, str] = os.environ
) -> pb.SetenvResponse:
    """Set ``key`` to ``value`` (unset value means ``""``), overwriting.

    A key that setenv(3) refuses (empty, or holding ``=``; or a NUL anywhere) raises
    ``InvalidArgument("setenv: ...")``. Never blocks.
    """
    key = request.key
    value = request.value if request.HasField("value") else ""
    if not key or "=" in key or "\x00" in key or "\x00" in value:
        raise InvalidArgument(f"setenv: invalid variable {key!r}")
    try:
        environ[key] = value
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"setenv: {key!r}: {exc}") from None
    return pb.SetenvResponse()


async def getenv(
    request: pb.GetenvRequest, *, environ: MutableMapping[str, str] = os.environ
) -> pb.GetenvResponse:
    """The value of ``key``, or a response with ``value`` unset when it is not set."""
    key = request.key
    value = None if "\x00" in key else environ.get(key)
    return pb.GetenvResponse() if value is None else pb.GetenvResponse(value=value)
