"""The agent's stop signals (SIGTERM, SIGINT) and who may send them.

Why a sender check: a root container that shares trinit's PID namespace (a spec without a
``pid`` namespace) can name PID 1 and ``kill(1, SIGTERM)`` it; handled blindly, that powers
the whole VM off. trinit therefore reads its stop signals from a signalfd, whose records
carry the sender (``ssi_code``, ``ssi_pid``), and acts only on a trusted one (:func:`may_stop`).

What the kernel guarantees (kernel/signal.c ``send_signal_locked``, sigaction(2),
pid_namespaces(7)):

* a signal the kernel itself raises (``SEND_SIG_PRIV``: ctrl-alt-del's SIGINT to init with
  ``reboot(CAD_OFF)``, a terminal's ^C) has ``si_code`` SI_KERNEL and ``si_pid`` 0;
* ``kill(2)`` and ``tgkill(2)`` fill in SI_USER / SI_TKILL and the sender's pid *as seen in
  the receiver's PID namespace*, which is 0 for a sender outside it (an ancestor namespace:
  the parent that started a local agent with ``unshare --pid``; a VM's PID 1 has none);
* a process may choose ``si_code`` and ``si_pid`` only through ``rt_sigqueueinfo`` /
  ``pidfd_send_signal`` with a negative code (SI_QUEUE...): a code >= 0 or SI_TKILL is
  refused with EPERM unless it signals itself. So SI_USER, SI_TKILL and SI_KERNEL records
  cannot be forged by another process, and any negative code can.

Every process in trinit's PID namespace is visible there with a non-zero pid, so the rule
"SI_KERNEL, or SI_USER/SI_TKILL from pid 0 or from trinit itself" admits exactly the kernel,
trinit's own threads and processes outside its namespace (the trusted parent of a local
agent). The guard applies only when trinit is PID 1 of its namespace: otherwise any process
that can signal it can SIGKILL it too, and refusing ``kill PID`` would protect nothing.

The signals are blocked for the rest of the process's life (:func:`block_stop_signals`, as
early as possible: threads inherit the mask, and a thread that does not block them would
take them itself, as a default action). Children start with an empty mask (the exec helper
and runc are spawned with ``setsigmask=()``).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import struct
from dataclasses import dataclass

import trio

from trinit import _linux as linux
from trinit._ratelimit import RateLimitedLog

__all__ = ["STOP_SIGNALS", "SignalInfo", "StopSignals", "block_stop_signals", "may_stop"]

log = logging.getLogger("trinit.agent")

STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)

SI_USER = 0
SI_KERNEL = 0x80
SI_TKILL = -6

REFUSAL_LOG_INTERVAL = 60.0
"""At most one "refused" line per signal per minute: a container may send them in a loop."""

_RECORD = struct.Struct("=IiiII")  # ssi_signo, ssi_errno, ssi_code, ssi_pid, ssi_uid
_READ_RECORDS = 16


@dataclass(frozen=True)
class SignalInfo:
    """The fields of one ``struct signalfd_siginfo`` that say who sent what."""

    signo: int
    code: int
    pid: int
    uid: int

    @classmethod
    def unpack(cls, record: bytes) -> SignalInfo:
        signo, _errno, code, pid, uid = _RECORD.unpack_from(record)
        return cls(signo, code, pid, uid)

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signo).name
        except ValueError:
            return f"signal {self.signo}"


def may_stop(info: SignalInfo, own_pid: int) -> bool:
    """May this signal stop trinit (whose pid in its own namespace is ``own_pid``)?"""
    if own_pid != 1:
        return True  # anyone who can signal us can SIGKILL us: nothing to protect
    if info.code == SI_KERNEL:
        return True
    return info.code in (SI_USER, SI_TKILL) and info.pid in (0, own_pid)


def block_stop_signals() -> None:
    """Block the stop signals in this thread (and every thread it starts from now on)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class StopSignals:
    """A signalfd for the stop signals: ``await wait()`` returns the first one that
    :func:`may_stop`; the others are logged (rate-limited) and dropped.

    Use as a context manager inside trio; closing the fd leaves the signals blocked.
    """

    def __init__(self, own_pid: int | None = None) -> None:
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self._fd = -1
        self._refusals: RateLimitedLog | None = None

    def __enter__(self) -> StopSignals:
        block_stop_signals()
        self._fd = linux.signalfd(STOP_SIGNALS, linux.SFD_NONBLOCK | linux.SFD_CLOEXEC)
        self._refusals = RateLimitedLog(log, interval=REFUSAL_LOG_INTERVAL, clock=trio.current_time)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            trio.lowlevel.notify_closing(self._fd)
            os.close(self._fd)
            self._fd = -1

    async def wait(self) -> SignalInfo:
        """The next stop signal from a trusted sender."""
        while True:
            for info in await self._read():
                if may_stop(info, self.own_pid):
                    return info
                self._refuse(info)

    async def _read(self) -> list[SignalInfo]:
        while True:
            try:
                data = os.read(self._fd, linux.SIGNALFD_SIGINFO_SIZE * _READ_RECORDS)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                continue
            except InterruptedError:
                continue
            except OSError as exc:  # pragma: no cover - signalfd reads fail only on EINVAL
                if exc.errno == errno.EAGAIN:
                    await trio.lowlevel.wait_readable(self._fd)
                    continue
                raise
            size = linux.SIGNALFD_SIGINFO_SIZE
            return [SignalInfo.unpack(data[i : i + size]) for i in range(0, len(data), size)]

    def _refuse(self, info: SignalInfo) -> None:
        assert self._refusals is not None
        self._refusals.warning(
            f"refused {info.name} from pid {info.pid} (uid {info.uid}, code {info.code}): "
            "only the kernel, trinit itself or a process outside its PID namespace may "
            "stop it",
            key=info.signo,
        )
