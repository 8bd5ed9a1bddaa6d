"""Preinit hook of the test initfs: runs inside PID 1 (before the agent), keeps the
in-guest driver running and powers the VM off when the driver asks.

It starts a daemon thread that spawns ``guest_driver.py`` with ``os.posix_spawn`` and
watches it through a pidfd, which becomes readable when the driver exits without reaping
it (trinit's reaper stays the only waitpid caller). ``Kill(-1, SIGKILL)`` kills the driver
but not this thread, which lives in PID 1: when the driver left the "respawn" marker before
that call, the thread starts it again (at most a few times). Test builds only.

Power-off: trinit refuses stop signals from processes in its PID namespace (a container
sharing it could send them; see ``trinit._stopsignals``), and the driver is such a process.
It leaves the "poweroff" marker instead (and keeps its disk open, see its ``shutdown``);
this thread, part of PID 1 itself, then sends the SIGTERM, which trinit accepts as its own.
The thread blocks the stop signals like trinit's threads do: a thread that does not block
them would take them itself and drop them (PID 1's default action).
"""

import os
import select
import signal
import sys
import threading
import time

DRIVER = "/usr/lib/trinit-vmtest/guest_driver.py"
RESPAWN = "/run/vmtest/respawn"
POWEROFF = "/run/vmtest/poweroff"
MAX_STARTS = 4
READY = "/sys/fs/cgroup/cgroup.procs"


def _spawn() -> int:
    defaults = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]
    # TMPDIR: /tmp is not writable on a read-only vminit root (the host mounts it there)
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/", "TERM": "dumb", "TMPDIR": "/run"}
    env.update((k, v) for k, v in os.environ.items() if k.startswith("VMTEST_"))
    return os.posix_spawn(
        sys.executable, [sys.executable, "-I", "-S", DRIVER], env, setsigdef=defaults, setsigmask=()
    )


def _keep_driver_running() -> None:
    # Start the driver only once trinit has switched to its final root and mounted /sys/fs/cgroup
    # (a process started earlier would keep the initramfs root and miss those mounts).
    while not os.path.exists(READY):
        time.sleep(0.01)
    for _ in range(MAX_STARTS):
        pid = _spawn()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone (and reaped by trinit)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while not poller.poll(100):
                if os.path.exists(POWEROFF):
                    os.kill(os.getpid(), signal.SIGTERM)  # from PID 1 itself: accepted
                    return
        finally:
            os.close(pidfd)
        if not os.path.exists(RESPAWN):
            return
        os.write(2, b"vmtest preinit: the driver exited; starting it again\n")


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # the thread inherits it
threading.Thread(target=_keep_driver_running, name="vmtest-preinit", daemon=True).start()
signal.pthread_sigmask(signal.SIG_SETMASK, _before)
