"""``trinit init`` (docs/protocol.md §8.3) with real processes.

Each test runs the init as a subprocess (tests may use subprocess for their own tools) and
waits for explicit readiness lines from the child script, never for time.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from trinit._init_mode import exit_code, resolve

INIT = [sys.executable, "-c", "import sys; from trinit._init_mode import main; main(sys.argv[1:])"]
TIMEOUT = 10


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started inits; killed (with their process groups' leftovers) after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(
    procs: list[subprocess.Popen[bytes]], *args: str, **kwargs: object
) -> subprocess.Popen[bytes]:
    # Unbuffered: readline() then reads byte by byte, so select() never misses a line
    # that a buffered reader already swallowed.
    options: dict[str, object] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "bufsize": 0,
    }
    options.update(kwargs)
    proc: subprocess.Popen[bytes] = subprocess.Popen([*INIT, *args], **options)  # type: ignore[call-overload]
    procs.append(proc)
    return proc


def run_init(*args: str) -> int:
    return subprocess.run(
        [*INIT, *args], stdin=subprocess.DEVNULL, timeout=TIMEOUT, check=False
    ).returncode


def read_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    assert ready, "child never reported"
    return proc.stdout.readline().decode().strip()


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) of pid, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return None
    return fields[0], int(fields[1])


def children_of(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (state := proc_state(int(entry))) and state[1] == pid:
            found.append((int(entry), state[0]))
    return found


def wait_until(predicate: object, what: str) -> None:
    """Poll a state (not a timer) with a deadline."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["sh", "-c", "exit 42"], 42),
        (["false"], 1),
        (["true"], 0),
        (["--", "sh", "-c", "exit 7"], 7),
        (["-p", "--", "true"], 0),
        (["--process-group", "sh", "-c", "kill -KILL $$"], 137),
    ],
)
def test_exit_codes(args: list[str], code: int) -> None:
    assert run_init(*args) == code


def test_usage_and_missing_command() -> None:
    assert run_init() == 2
    assert run_init("--bogus", "true") == 2
    assert run_init("definitely-not-a-command-xyz") == 127
    assert run_init("/etc/passwd") == 126


def test_resolve_and_exit_code_helpers() -> None:
    assert resolve("sh").endswith("/sh") and os.path.isabs(resolve("sh"))
    assert resolve("./x") == "./x"
    assert resolve("no-such-command-xyz") == "no-such-command-xyz"
    assert exit_code(3 << 8) == 3
    assert exit_code(signal.SIGTERM) == 143


def test_sigterm_is_forwarded_and_gives_143(procs: list[subprocess.Popen[bytes]]) -> None:
    init = start(procs, "--", "sh", "-c", "echo ready; exec sleep 100")
    assert read_line(init) == "ready"
    init.send_signal(signal.SIGTERM)
    assert init.wait(timeout=TIMEOUT) == 143


def test_other_signals_are_forwarded(procs: list[subprocess.Popen[bytes]]) -> None:
    script = "trap 'echo got-usr1; exit 5' USR1; echo ready; while :; do sleep 0.05; done"
    init = start(procs, "sh", "-c", script)
    assert read_line(init) == "ready"
    init.send_signal(signal.SIGUSR1)
    assert read_line(init) == "got-usr1"
    assert init.wait(timeout=TIMEOUT) == 5


def test_orphans_are_reaped(procs: list[subprocess.Popen[bytes]]) -> None:
    # The child double-forks short-lived grandchildren: they re-parent to the init
    # (a subreaper), which must reap them while the child is still running.
    script = "(sleep 0.2 & echo $!) ; (true & echo $!) ; echo ready; read line"
    init = start(procs, "sh", "-c", script, stdin=subprocess.PIPE)
    orphans = [int(read_line(init)), int(read_line(init))]
    assert read_line(init) == "ready"
    for orphan in orphans:
        wait_until(lambda o=orphan: proc_state(o) is None, f"orphan {orphan} to be reaped")
    assert [c for c in children_of(init.pid) if c[1] == "Z"] == []
    assert init.stdin is not None
    init.stdin.write(b"go\n")
    init.stdin.close()
    assert init.wait(timeout=TIMEOUT) == 0


def _is_sleeping(pid: int, command: str) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as file:
            comm = file.read().strip()
    except FileNotFoundError:
        return False
    state = proc_state(pid)
    return comm == command and state is not None and state[0] == "S"


def _group_test(procs: list[subprocess.Popen[bytes]], flags: list[str]) -> tuple[int, int]:
    init = start(procs, *flags, "sh", "-c", "sleep 100 & echo $!; wait")
    sleeper = int(read_line(init))
    # the background child must be the sleep, asleep, before the signal: a child still
    # between fork and exec is runnable ("R"), and a signal then would hit the shell's copy
    wait_until(lambda: _is_sleeping(sleeper, "sleep"), "the background sleep to sleep")
    init.send_signal(signal.SIGTERM)
    return init.wait(timeout=TIMEOUT), sleeper


def test_process_group_flag_signals_the_whole_group(procs: list[subprocess.Popen[bytes]]) -> None:
    code, sleeper = _group_test(procs, ["-p"])
    assert code == 143
    wait_until(lambda: (proc_state(sleeper) or ("X", 0))[0] in "XZ", "the group's sleep to die")


def test_without_process_group_only_the_child_is_signalled(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    code, sleeper = _group_test(procs, [])
    try:
        assert code == 143
        state = proc_state(sleeper)
        assert state is not None and state[0] == "S"  # untouched, still sleeping
    finally:
        os.kill(sleeper, signal.SIGKILL)


def test_faults_are_not_forwarded(procs: list[subprocess.Popen[bytes]]) -> None:
    # SIGABRT to the init must not reach the child (and must not kill the init either).
    script = (
        "trap 'echo got-abrt' ABRT; trap 'echo got-usr2; exit 3' USR2; echo ready; "
        "while :; do sleep 0.05; done"
    )
    init = start(procs, "sh", "-c", script)
    assert read_line(init) == "ready"
    init.send_signal(signal.SIGABRT)
    init.send_signal(signal.SIGUSR2)
    assert read_line(init) == "got-usr2"
    assert init.wait(timeout=TIMEOUT) == 3


CHILD_TTY_SCRIPT = (
    "import os, sys; "
    "print('fg', os.tcgetpgrp(0) == os.getpgrp() == os.getpid(), flush=True); "
    "line = sys.stdin.readline(); print('got', line.strip(), flush=True)"
)


def _run_under_pty(args: list[str], stdin_text: bytes) -> tuple[int, str]:
    master, slave = pty.openpty()

    def make_controlling_tty() -> None:
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        init = subprocess.Popen(
            [*INIT, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=make_controlling_tty,
        )
        os.close(slave)
        slave = -1
        try:
            output = _read_until(master, b"", b"fg ", b"\n")
            os.write(master, stdin_text)
            output = _read_until(master, output, b"got ", b"\n")
            code = init.wait(timeout=TIMEOUT)
        finally:
            if init.poll() is None:
                init.kill()
                init.wait()
        return code, output.decode(errors="replace")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def _read_until(fd: int, data: bytes, marker: bytes, end: bytes) -> bytes:
    """Read the terminal until a line starting at ``marker`` is complete (up to ``end``)."""
    while marker not in data or end not in data[data.index(marker) :]:
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        assert ready, f"no {marker!r} line on the terminal; got {data!r}"
        data += os.read(fd, 1024)
    return data


def test_tty_foreground_and_stdin_pass_through() -> None:
    code, output = _run_under_pty(["--", sys.executable, "-c", CHILD_TTY_SCRIPT], b"hello\n")
    assert code == 0
    assert "fg True" in output
    assert "got hello" in output


def test_child_stopped_by_sigttin_before_foreground_is_continued() -> None:
    # The bash pattern: a child that stops itself with SIGTTIN until it is in the
    # foreground. The init must continue it once its group owns the terminal.
    script = "kill -TTIN $$; " + f'exec {sys.executable} -c "{CHILD_TTY_SCRIPT}"'
    code, output = _run_under_pty(["sh", "-c", script], b"again\n")
    assert code == 0
    assert "fg True" in output and "got again" in output
