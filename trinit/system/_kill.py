"""Kill and Sync: raw signal delivery and a file system flush for the whole VM.

``Kill`` passes pid and signal to kill(2) untouched, including the host's
``Kill(pid=-1, SIGKILL)`` in ``LinuxContainer.stop()`` that kills every process but PID 1.
The kill function is a parameter so tests never signal anything they did not start.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from trinit._proto import sandbox_pb2 as pb

from ._common import run_blocking


async def kill(
    request: pb.KillRequest, *, kill_fn: Callable[[int, int], None] = os.kill
) -> pb.KillResponse:
    """kill(pid, signal); ``result`` is 0 on success and -1 on any failure (errno is not
    reported, as in vminitd). Never raises. kill(2) does not block, so no thread is used."""
    try:
        kill_fn(request.pid, request.signal)
    except (OSError, ValueError, OverflowError):
        return pb.KillResponse(result=-1)
    return pb.KillResponse(result=0)


async def sync(request: pb.SyncRequest | None = None) -> pb.SyncResponse:
    """sync(2) in a worker thread; always succeeds. Cancellation waits for the sync."""
    await run_blocking(os.sync)
    return pb.SyncResponse()
