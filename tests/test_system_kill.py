"""Kill (raw pid/signal, result 0/-1) against a child the test starts, and Sync."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import trio

from trinit._proto import sandbox_pb2 as pb
from trinit.system import KillPlan, Me, kill, plan_kill, sync


def _spawn(*argv: str, process_group: int | None = None) -> subprocess.Popen[bytes]:
    """A child of the test (not of trinit: these tests run no reaper)."""
    return subprocess.Popen(argv, process_group=process_group)


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
        pb.KillRequest(pid=-1, signal=9), kill_fn=lambda p, s: calls.append((p, s)), me=ME
    )
    assert response.result == 0 and calls == [(-1, 9)]


async def test_sync() -> None:
    assert isinstance(await sync(pb.SyncRequest()), pb.SyncResponse)


ME = Me(pid=1, pgid=1, tids=frozenset({1, 7, 8}))  # trinit as the VM's init, two threads
NOT_INIT = Me(pid=40, pgid=40, tids=frozenset({40, 41}))  # trinit under unshare, own group
HIDDEN_GROUP = Me(pid=1, pgid=0, tids=frozenset({1}))  # group leader outside the namespace


@pytest.mark.parametrize(
    ("me", "pid", "expected"),
    [
        (ME, 55, KillPlan.DELIVER),  # another process
        (ME, 1, KillPlan.DROP),  # trinit
        (ME, 7, KillPlan.DROP),  # one of trinit's threads: kill(tid) reaches the process
        (ME, 0, KillPlan.GROUP_EXCEPT_SELF),  # trinit's own group
        (ME, -1, KillPlan.DELIVER),  # the kernel spares init and the caller
        (ME, -55, KillPlan.DELIVER),  # another group
        (NOT_INIT, -1, KillPlan.REFUSE),  # would reach the development machine
        (NOT_INIT, 0, KillPlan.GROUP_EXCEPT_SELF),
        (NOT_INIT, -40, KillPlan.GROUP_EXCEPT_SELF),  # -pgid: trinit's group by number
        (NOT_INIT, 40, KillPlan.DROP),
        (NOT_INIT, 41, KillPlan.DROP),
        (NOT_INIT, -41, KillPlan.DELIVER),  # a group numbered like a thread is not trinit's
        (NOT_INIT, 1, KillPlan.DELIVER),
        (HIDDEN_GROUP, 0, KillPlan.GROUP_EXCEPT_SELF),
        (HIDDEN_GROUP, -1, KillPlan.DELIVER),
    ],
)
def test_kill_plan_for_every_pid_form(me: Me, pid: int, expected: KillPlan) -> None:
    assert plan_kill(pid, me) is expected


def _term(pid: int) -> pb.KillRequest:
    return pb.KillRequest(pid=pid, signal=signal.SIGTERM)


async def test_kill_never_signals_trinit_itself() -> None:
    calls: list[tuple[int, int]] = []
    me = Me.current()
    for pid in (me.pid, *me.tids):
        reply = await kill(_term(pid), kill_fn=lambda p, s: calls.append((p, s)), me=me)
        assert reply.result == 0
    assert calls == []


async def test_kill_of_own_group_signals_every_other_member() -> None:
    """A real group: this test process leads it (as trinit would), two children join it."""
    children = [_spawn("sleep", "60", process_group=0)]
    try:
        pgid = children[0].pid
        children.append(_spawn("sleep", "60", process_group=pgid))
        me = Me(pid=children[0].pid, pgid=pgid, tids=frozenset({children[0].pid}))
        calls: list[tuple[int, int]] = []
        for pid in (0, -pgid):
            calls.clear()
            reply = await kill(_term(pid), kill_fn=lambda p, s: calls.append((p, s)), me=me)
            assert reply.result == 0
            assert calls == [(children[1].pid, signal.SIGTERM)]  # the "trinit" leader spared
        bad = await kill(pb.KillRequest(pid=0, signal=999), kill_fn=lambda p, s: None, me=me)
        assert bad.result == -1
    finally:
        for child in children:
            child.kill()
            child.wait()
