"""Kill (raw pid/signal, result 0/-1) against a child the test starts, and Sync."""

from __future__ import annotations

import os
import signal
import subprocess

import trio

from trinit._proto import sandbox_pb2 as pb
from trinit.system import kill, sync


def _spawn(*argv: str) -> subprocess.Popen[bytes]:
    """A child of the test (not of trinit: these tests run no reaper)."""
    return subprocess.Popen(argv)


async def test_kill_signals_a_real_process() -> None:
    child = _spawn("sleep", "60")
    try:
        response = await kill(pb.KillRequest(pid=child.pid, signal=signal.SIGTERM))
        assert response.result == 0
        with trio.fail_after(10):
            assert await trio.to_thread.run_sync(child.wait) == -signal.SIGTERM
    finally:
        child.kill()
        await trio.to_thread.run_sync(child.wait)


async def test_kill_failure_is_minus_one() -> None:
    child = _spawn("true")
    await trio.to_thread.run_sync(child.wait)  # reaped: the pid is free (not reused this soon)
    assert (await kill(pb.KillRequest(pid=child.pid, signal=0))).result == -1
    assert (await kill(pb.KillRequest(pid=os.getpid(), signal=99999))).result == -1


async def test_kill_passes_raw_values() -> None:
    calls: list[tuple[int, int]] = []
    response = await kill(
        pb.KillRequest(pid=-1, signal=9), kill_fn=lambda p, s: calls.append((p, s))
    )
    assert response.result == 0 and calls == [(-1, 9)]


async def test_sync() -> None:
    assert isinstance(await sync(pb.SyncRequest()), pb.SyncResponse)
