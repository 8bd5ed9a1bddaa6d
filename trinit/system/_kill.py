"""Kill and Sync: raw signal delivery and a file system flush for the whole VM.

``Kill`` passes pid and signal to kill(2) as vminitd does, including the host's
``Kill(pid=-1, SIGKILL)`` in ``LinuxContainer.stop()`` that kills every process but PID 1,
with one rule on top: **a Kill RPC never signals trinit itself.** vminitd as PID 1 installs
no handlers, so the kernel drops any signal aimed at it and kill(2) still says 0. trinit
handles SIGTERM/SIGINT as "shut the VM down", so every pid form that would reach it is
rewritten to what vminitd would observe (:func:`plan_kill`):

=====================  ==============================  =====================================
pid                    kill(2) would reach              trinit does
=====================  ==============================  =====================================
> 0, another process   that process                     kill(2) as is
trinit's pid or a tid  trinit                           nothing, result 0 (the kernel's drop)
0, -(trinit's pgid)    trinit's group, trinit included  each *other* member, result 0
-1                     all but init and the caller      kill(2) as is when trinit is PID 1;
                                                        refused (-1) otherwise: from a
                                                        process that is not PID 1 it reaches
                                                        the development machine
< -1, another group    that group                       kill(2) as is
=====================  ==============================  =====================================

Group members are found in /proc (off the event loop). In a PID namespace whose group
leader lives outside it (tests under ``unshare``), trinit's pgid reads as 0 and so does
every member's: those are exactly the processes that share trinit's group here.
The kill function is a parameter so tests never signal anything they did not start.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from trinit._proto import sandbox_pb2 as pb

from ._common import run_blocking

__all__ = ["KillPlan", "Me", "kill", "plan_kill", "sync"]

log = logging.getLogger("trinit.system")

KillFn = Callable[[int, int], None]


class KillPlan(enum.Enum):
    DELIVER = "deliver"  # kill(pid, sig) as asked
    DROP = "drop"  # aimed at trinit: nothing is sent, result 0
    GROUP_EXCEPT_SELF = "group"  # every member of trinit's group but trinit
    REFUSE = "refuse"  # kill(-1) from a trinit that is not PID 1: result -1


@dataclass(frozen=True)
class Me:
    """What identifies trinit as a kill(2) target."""

    pid: int
    pgid: int
    tids: frozenset[int]

    @classmethod
    def current(cls) -> Me:
        tids = frozenset(int(t) for t in os.listdir("/proc/self/task") if t.isdigit())
        return cls(os.getpid(), os.getpgid(0), tids)


def plan_kill(pid: int, me: Me) -> KillPlan:
    """Pure: how a Kill RPC for ``pid`` is carried out (the table in the module docstring)."""
    if pid == -1:
        return KillPlan.DELIVER if me.pid == 1 else KillPlan.REFUSE
    if pid == 0 or pid == -me.pgid:
        return KillPlan.GROUP_EXCEPT_SELF
    if pid == me.pid or pid in me.tids:
        return KillPlan.DROP
    return KillPlan.DELIVER


def group_members(pgid: int, exclude: int, proc: str = "/proc") -> list[int]:
    """Pids in ``proc`` whose process group is ``pgid``, but ``exclude``. Blocking."""
    members = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == exclude:
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as file:
                stat = file.read()
        except OSError:  # exited meanwhile
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(name))
    return members


def _valid_signal(signum: int) -> bool:
    return 0 <= signum < signal.NSIG


async def kill(
    request: pb.KillRequest, *, kill_fn: KillFn = os.kill, me: Me | None = None
) -> pb.KillResponse:
    """Carry out a Kill RPC; ``result`` is 0 on success and -1 on any failure (errno is not
    reported, as in vminitd). Never raises; never signals trinit itself."""
    me = Me.current() if me is None else me
    how = plan_kill(request.pid, me)
    if how is KillPlan.REFUSE:
        log.warning("refusing kill(-1): trinit is not PID 1 of a VM or PID namespace")
        return pb.KillResponse(result=-1)
    if how is KillPlan.DROP:
        if not _valid_signal(request.signal):
            return pb.KillResponse(result=-1)
        if request.signal:
            log.warning("not delivering signal %d to trinit itself", request.signal)
        return pb.KillResponse(result=0)
    if how is KillPlan.GROUP_EXCEPT_SELF:
        if not _valid_signal(request.signal):
            return pb.KillResponse(result=-1)
        members = await run_blocking(lambda: group_members(me.pgid, me.pid))
        log.info("kill(%d, %d): signalling %d other member(s) of trinit's process group",
                 request.pid, request.signal, len(members))  # fmt: skip
        for member in members:
            try:
                kill_fn(member, request.signal)
            except OSError:
                pass  # exited meanwhile; as for the kernel, the group signal still succeeds
        return pb.KillResponse(result=0)
    try:
        kill_fn(request.pid, request.signal)
    except (OSError, ValueError, OverflowError):
        return pb.KillResponse(result=-1)
    return pb.KillResponse(result=0)


async def sync(request: pb.SyncRequest | None = None) -> pb.SyncResponse:
    """sync(2) in a worker thread; always succeeds. Cancellation waits for the sync."""
    await run_blocking(os.sync)
    return pb.SyncResponse()
