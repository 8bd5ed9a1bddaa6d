"""``trinit pause`` (docs/protocol.md §8.4) with real processes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

PAUSE = [
    sys.executable,
    "-c",
    "import sys; from trinit._pause_mode import main; main(sys.argv[1:])",
]
TIMEOUT = 10


@pytest.fixture
def pause_with_child() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """A pause process with one child of its own that exits when the test writes to a pipe.

    ``sh`` starts the child, then execs pause, so the child's parent is the pause process.
    """
    release_read, release_write = os.pipe()
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            f'head -c1 /dev/fd/{release_read} >/dev/null & echo $!; exec "$@"',
            "sh",
            *PAUSE,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(release_read,),
        text=True,
    )
    os.close(release_read)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        yield proc, child, release_write
    finally:
        os.close(release_write)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def read_stderr_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], TIMEOUT)
    assert ready, "pause printed nothing"
    return proc.stderr.readline()


def process_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_pause_reaps_children_and_exits_0_on_sigterm(
    pause_with_child: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, child, release = pause_with_child
    # The warning is printed after the signals are blocked: pause is ready.
    assert "warning trinit: pause: not running as PID 1" in read_stderr_line(proc)
    assert process_exists(child)
    os.write(release, b"x")  # the child exits; SIGCHLD; pause reaps it
    deadline = time.monotonic() + TIMEOUT
    while process_exists(child):  # a zombie would stay in /proc until reaped
        assert time.monotonic() < deadline, "child was not reaped"
        time.sleep(0.01)
    assert proc.poll() is None  # SIGCHLD did not end pause
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == 0
    assert "info trinit: pause: received SIGTERM, exiting" in read_stderr_line(proc)


def test_pause_exits_0_on_sigint() -> None:
    proc = subprocess.Popen(
        [*PAUSE, "--log-level", "error"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # With --log-level error there is no readiness line: wait until it sleeps in
        # sigwaitinfo (the kernel shows the waited signals unblocked meanwhile, so SigBlk
        # in /proc cannot tell).
        deadline = time.monotonic() + TIMEOUT
        while not _waits_for_signals(proc.pid):
            assert time.monotonic() < deadline, "pause never waited for signals"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == ""  # info and warning suppressed
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _waits_for_signals(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/wchan") as file:
            wchan = file.read()
    except FileNotFoundError:
        return False
    return "sigtimedwait" in wchan
