"""Preinit hook of the test initfs: runs inside PID 1 (before the agent) and keeps the
in-guest driver running.

It starts a daemon thread that spawns ``guest_driver.py`` with ``os.posix_spawn`` and
watches it through a pidfd, which becomes readable when the driver exits without reaping
it (trinit's reaper stays the only waitpid caller). ``Kill(-1, SIGKILL)`` kills the driver
but not this thread, which lives in PID 1: when the driver left the "respawn" marker before
that call, the thread starts it again (at most a few times). Test builds only.
"""

import os
import select
import signal
import sys
import threading
import time

DRIVER = "/usr/lib/trinit-vmtest/guest_driver.py"
RESPAWN = "/run/vmtest/respawn"
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
            while not poller.poll():
                pass
        finally:
            os.close(pidfd)
        if not os.path.exists(RESPAWN):
            return
        os.write(2, b"vmtest preinit: the driver exited; starting it again\n")


threading.Thread(target=_keep_driver_running, name="vmtest-preinit", daemon=True).start()
