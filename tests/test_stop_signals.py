"""The stop-signal sender rule (trinit._stopsignals) and its signalfd, in this process.

The end-to-end check (a container sharing the agent's PID namespace) is in
``tests/test_agent_stop_signals.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import threading
from collections.abc import Iterator

import pytest
import trio

from trinit._stopsignals import (
    SI_KERNEL,
    SI_TKILL,
    SI_USER,
    SignalInfo,
    StopSignals,
    may_stop,
)

SI_QUEUE = -1


@pytest.mark.parametrize(
    ("code", "pid", "allowed"),
    [
        (SI_KERNEL, 0, True),  # ctrl-alt-del (reboot(CAD_OFF)), a terminal's ^C
        (SI_USER, 0, True),  # kill(2) from outside our PID namespace (a local agent's parent)
        (SI_TKILL, 0, True),  # tgkill(2) from outside
        (SI_USER, 1, True),  # trinit itself (a thread of PID 1)
        (SI_USER, 42, False),  # a process inside our namespace: a container sharing it
        (SI_TKILL, 42, False),
        (SI_QUEUE, 0, False),  # rt_sigqueueinfo lets any sender choose si_pid: forgeable
        (SI_QUEUE, 1, False),
        (-60, 0, False),  # any other negative (sender-chosen) code
    ],
)
def test_only_the_kernel_ourselves_or_outside_senders_may_stop_pid1(
    code: int, pid: int, allowed: bool
) -> None:
    assert may_stop(SignalInfo(signal.SIGTERM, code, pid, 0), own_pid=1) is allowed


def test_not_pid1_anyone_may_stop() -> None:
    """Who can signal a process that is not a PID 1 can SIGKILL it too: no guard."""
    assert may_stop(SignalInfo(signal.SIGTERM, SI_USER, 42, 0), own_pid=4242)
    assert may_stop(SignalInfo(signal.SIGINT, SI_QUEUE, 0, 0), own_pid=4242)


def test_signalfd_siginfo_fields() -> None:
    record = struct.pack("=IiiII", signal.SIGINT, 0, SI_KERNEL, 0, 0).ljust(128, b"\xff")
    info = SignalInfo.unpack(record)
    assert info == SignalInfo(signal.SIGINT, SI_KERNEL, 0, 0)
    assert info.name == "SIGINT"


@pytest.fixture
def restore_mask() -> Iterator[None]:
    """StopSignals blocks SIGTERM/SIGINT for good (right for the agent): not for pytest."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _signal_this_thread(signum: int) -> None:
    # thread-directed (tgkill): it stays pending for this thread, which blocks it, and never
    # reaches another thread of pytest where the default action would kill the run
    signal.pthread_kill(threading.get_ident(), signum)


async def test_a_refused_signal_is_logged_and_dropped(
    restore_mask: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trinit.agent")
    # as if we were PID 1: our real pid is then a sender inside our namespace
    with StopSignals(own_pid=1) as stops:
        _signal_this_thread(signal.SIGTERM)
        with trio.move_on_after(0.5) as waited:
            await stops.wait()
        assert waited.cancelled_caught
    assert f"refused SIGTERM from pid {os.getpid()}" in caplog.text


async def test_an_accepted_signal_is_returned_with_its_sender(restore_mask: None) -> None:
    with StopSignals() as stops:  # our real pid: not PID 1, so no guard
        _signal_this_thread(signal.SIGINT)
        with trio.fail_after(5):
            info = await stops.wait()
    assert (info.signo, info.code, info.pid) == (signal.SIGINT, SI_TKILL, os.getpid())
