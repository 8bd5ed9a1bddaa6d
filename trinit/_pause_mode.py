"""``trinit pause``: the do-nothing init of a pod's ``pause-<podID>`` container.

Theory of operation (docs/protocol.md §8.4): warn when not PID 1; SIGINT or SIGTERM -> log and
exit 0; SIGCHLD -> reap every exited child with WNOHANG; otherwise sleep.

vminitd installs handlers and loops on ``pause()``. Here the three signals are blocked and
taken with ``sigwaitinfo`` instead: the behaviour is the same, with no window between
checking and sleeping, and a PID-namespace init still receives them (the kernel drops
signals only for an init whose disposition is the default *and* that does not block them).
Children that exited before the signals were blocked are reaped once at start.

stdlib only, minimal imports: this runs inside containers, and in-process in the exec helper
(``trinit.exec._selfexec``), which imports it before pivot_root: ``_signal`` rather than
``signal`` (enum) and no ``typing`` at run time, as in ``trinit._init_mode``.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import NoReturn
else:
    import _signal as signal

_LEVELS = ("trace", "debug", "info", "notice", "warning", "error", "critical")
_WATCHED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


def main(argv: list[str]) -> NoReturn:
    """Run ``trinit pause [--log-level L]`` (the arguments after ``pause``); never returns.

    Exits 0 on SIGINT or SIGTERM.
    """
    threshold = _parse_log_level(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    if os.getpid() != 1:
        _log(threshold, "warning", "pause: not running as PID 1")
    _reap_all()
    while True:
        info = signal.sigwaitinfo(_WATCHED)
        if info.si_signo == signal.SIGCHLD:
            _reap_all()
            continue
        name = "SIGINT" if info.si_signo == signal.SIGINT else "SIGTERM"
        _log(threshold, "info", f"pause: received {name}, exiting")
        sys.exit(0)


def _parse_log_level(argv: list[str]) -> int:
    level = "info"
    args = iter(argv)
    for arg in args:
        if arg == "--log-level":
            level = next(args, "info")
        elif arg.startswith("--log-level="):
            level = arg.partition("=")[2]
    # Unknown values mean info, as vminitd's command line does (docs/protocol.md §8.1).
    return _LEVELS.index(level) if level in _LEVELS else _LEVELS.index("info")


def _reap_all() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _log(threshold: int, level: str, message: str) -> None:
    if _LEVELS.index(level) < threshold:
        return
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    millis = int(now % 1 * 1000)
    print(f"{stamp}.{millis:03d}Z {level} trinit: {message}", file=sys.stderr, flush=True)
