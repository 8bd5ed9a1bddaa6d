"""The parent side of the helper protocol, in-process on trio, with no namespaces.

The real helper is used for failures that happen before it touches anything (a missing
bundle, a dead parent pid); a small fake helper (given as ``python=``) plays the protocol
for the rest. Every test checks that no fd is left behind and reaps what it spawned.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import signal
import struct
import sys
import termios
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from trinit.errors import Internal
from trinit.exec import launch

FAKE = """\
import os, sys
mode = sys.argv[1]
if mode == "exit-early":
    sys.exit(0)
if mode == "stall":
    import time
    time.sleep(60)  # keeps the error pipe open, no pid yet: a helper stuck in a mount, say
os.write(3, os.getpid().to_bytes(4, sys.byteorder, signed=True))
if mode == "fail-before-ack":  # a process that fails before it waits for the ack
    os.write(5, b"mount /proc: [Errno 2] No such file or directory\\n")
    sys.exit(1)
ack = os.read(4, 6)
if ack != b"AckPid":
    os.write(5, b"no ack: " + repr(ack).encode())
    sys.exit(1)
if mode == "fail":
    os.write(5, b"mount /proc: [Errno 2] No such file or directory\\n")
    sys.exit(1)
if mode.startswith("terminal"):
    master, slave = os.openpty()
    if mode == "terminal":
        os.write(slave, b"from the pty")
    os.write(3, master.to_bytes(4, sys.byteorder, signed=True))
    if os.read(4, 10) != b"AckConsole":
        os.write(5, b"no console ack")
        sys.exit(1)
    if mode == "terminal-size":  # what a workload exec'd now would see first
        import fcntl, termios
        os.write(slave, fcntl.ioctl(slave, termios.TIOCGWINSZ, bytes(8)))
"""


@pytest.fixture
def fake(tmp_path: Path) -> str:
    path = tmp_path / "fake-helper"
    # The launcher runs "<python> -I -S -c <bootstrap> <tail>": skip to the tail.
    path.write_text(f"#!{sys.executable}\nimport sys\ndel sys.argv[1:5]\n{FAKE}")
    path.chmod(0o755)
    return str(path)


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture
def stdio() -> Iterator[tuple[int, int, int]]:
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    yield (null, null, null)
    os.close(null)


def reap(pids: list[int]) -> list[int]:
    codes = []
    for pid in dict.fromkeys(pids):
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    return codes


async def test_missing_bundle_reports_helper_text(stdio: tuple[int, int, int]) -> None:
    gc.collect()  # an earlier test's garbage must not close its fds during this comparison
    before = open_fds()
    pids: list[int] = []
    with pytest.raises(Internal) as info:
        await launch(["run", "--bundle-path", "/nonexistent"], stdio=stdio, on_pid=pids.append)
    assert info.value.message == (
        "vmexec error: failed to load OCI bundle at /nonexistent/config.json: "
        "[Errno 2] No such file or directory: '/nonexistent/config.json'"
    )
    assert len(pids) == 1
    assert reap(pids) == [1]
    assert open_fds() == before


async def test_exec_of_dead_parent(tmp_path: Path, stdio: tuple[int, int, int]) -> None:
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["true"], "cwd": "/"}))
    pids: list[int] = []
    tail = ["exec", "--process-path", str(process), "--parent-pid", "999999999"]
    with pytest.raises(Internal, match=r"^vmexec error: pidfd_open 999999999: \[Errno 3\]"):
        await launch(tail, stdio=stdio, on_pid=pids.append)
    assert reap(pids) == [1]


async def test_usage_error(stdio: tuple[int, int, int]) -> None:
    pids: list[int] = []
    with pytest.raises(Internal, match=r"^vmexec error: usage: run --bundle-path"):
        await launch(["bogus"], stdio=stdio, on_pid=pids.append)
    reap(pids)


async def test_success_reports_pid_before_ack(fake: str, stdio: tuple[int, int, int]) -> None:
    before = open_fds()
    pids: list[int] = []
    acked_after: list[list[int]] = []

    async def before_ack(pid: int) -> None:
        acked_after.append(list(pids))

    result = await launch(["ok"], stdio=stdio, on_pid=pids.append, python=fake,
                          before_ack=before_ack)  # fmt: skip
    assert result.pty_master is None
    assert pids == [result.pid, result.pid]  # the fake is both helper and container
    assert acked_after == [pids]  # on_pid(container) came before before_ack and AckPid
    assert reap(pids) == [0]
    assert open_fds() == before


async def test_helper_error_text(fake: str, stdio: tuple[int, int, int]) -> None:
    pids: list[int] = []
    with pytest.raises(Internal) as info:
        await launch(["fail"], stdio=stdio, on_pid=pids.append, python=fake)
    assert info.value.message == "vmexec error: mount /proc: [Errno 2] No such file or directory"
    assert reap(pids) == [1]


async def test_a_failure_before_the_ack_reports_the_helper_text(
    fake: str, stdio: tuple[int, int, int]
) -> None:
    """A container process that is gone before AckPid is written (EPIPE) is a failed
    launch, reported with the process's own error text."""
    before = open_fds()
    pids: list[int] = []

    async def before_ack(pid: int) -> None:
        # it has exited (its pipes closed), not reaped yet
        await trio.to_thread.run_sync(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)

    with pytest.raises(Internal) as info:
        await launch(["fail-before-ack"], stdio=stdio, on_pid=pids.append, python=fake,
                     before_ack=before_ack)  # fmt: skip
    assert info.value.message == "vmexec error: mount /proc: [Errno 2] No such file or directory"
    assert reap(pids) == [1]
    assert open_fds() == before


async def test_helper_exits_without_pid(fake: str, stdio: tuple[int, int, int]) -> None:
    before = open_fds()
    pids: list[int] = []
    with pytest.raises(Internal, match=r"^vmexec error: the helper exited before reporting a pid$"):
        await launch(["exit-early"], stdio=stdio, on_pid=pids.append, python=fake)
    assert reap(pids) == [0]
    assert open_fds() == before


async def test_terminal_master_is_duplicated(fake: str, stdio: tuple[int, int, int]) -> None:
    before = open_fds()
    pids: list[int] = []
    result = await launch(["terminal"], stdio=stdio, on_pid=pids.append, python=fake,
                          terminal=True)  # fmt: skip
    assert result.pty_master is not None
    try:
        assert os.get_inheritable(result.pty_master) is False
        assert os.read(result.pty_master, 100) == b"from the pty"
    finally:
        os.close(result.pty_master)
    reap(pids)
    assert open_fds() == before


async def test_on_console_runs_before_the_console_ack(
    fake: str, stdio: tuple[int, int, int]
) -> None:
    """A terminal size set in ``on_console`` is there before the helper may exec."""
    pids: list[int] = []
    seen: list[int] = []

    def on_console(master: int) -> None:
        seen.append(master)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    result = await launch(["terminal-size"], stdio=stdio, on_pid=pids.append, python=fake,
                          terminal=True, on_console=on_console)  # fmt: skip
    assert result.pty_master is not None
    try:
        assert seen == [result.pty_master]
        assert struct.unpack("HHHH", os.read(result.pty_master, 8)) == (24, 80, 0, 0)
    finally:
        os.close(result.pty_master)
    reap(pids)


async def test_failing_before_ack_unblocks_helper(fake: str, stdio: tuple[int, int, int]) -> None:
    before = open_fds()
    pids: list[int] = []

    async def before_ack(pid: int) -> None:
        raise RuntimeError("cgroup placement failed")

    with pytest.raises(RuntimeError, match=r"cgroup placement failed") as info:
        await launch(["ok"], stdio=stdio, on_pid=pids.append, python=fake,
                     before_ack=before_ack)  # fmt: skip
    assert info.value.__notes__ == ["exec helper: no ack: b''"]
    assert reap(pids) == [1]
    assert open_fds() == before


async def test_cancel_while_waiting_for_ack(fake: str, stdio: tuple[int, int, int]) -> None:
    before = open_fds()
    pids: list[int] = []
    waiting = trio.Event()

    async def before_ack(pid: int) -> None:
        waiting.set()
        await trio.sleep_forever()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    launch,
                    ["ok"],
                    stdio=stdio,
                    on_pid=pids.append,
                    python=fake,
                    before_ack=before_ack,
                )
            )
            await waiting.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert reap(pids) == [1]  # the helper saw EOF instead of an ack and gave up
    assert open_fds() == before


async def test_cancel_bounds_the_error_read(
    fake: str, stdio: tuple[int, int, int], autojump_clock: trio.testing.MockClock
) -> None:
    # The "stall" helper holds the error pipe open and never reports its pid (so it is alive
    # to be killed at the end, however long this test takes). After the cancellation at t=5
    # the launcher waits exactly ERROR_READ_GRACE (2 s) for its text, then gives up.
    before = open_fds()
    pids: list[int] = []
    start = trio.current_time()
    with trio.move_on_after(5) as scope:
        await launch(["stall"], stdio=stdio, on_pid=pids.append, python=fake)
    assert scope.cancelled_caught
    assert trio.current_time() - start == 7
    assert open_fds() == before
    os.kill(pids[0], signal.SIGKILL)
    assert reap(pids) == [-signal.SIGKILL]


LOW_FD_DRIVER = """
import os, sys, trio
from trinit.exec import launch
os.close(0)
out = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC)
null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
# stdout's source is fd 0, which the helper's stdin replaces first; null is fd 3
assert (out, null) == (0, 3), (out, null)
pids = []
trio.run(lambda: launch([], stdio=(null, out, out), on_pid=pids.append, python=sys.argv[1]))
for pid in set(pids):
    os.waitpid(pid, 0)
"""


def test_stdio_fds_below_six_are_mapped(tmp_path: Path) -> None:
    import subprocess

    out = tmp_path / "out"
    script = tmp_path / "echo-helper"
    script.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        "assert os.read(0, 1) == b''\n"
        "os.write(1, b'out'); os.write(2, b'err')\n"
        "os.write(3, os.getpid().to_bytes(4, sys.byteorder, signed=True)); os.read(4, 6)\n"
    )
    script.chmod(0o755)
    subprocess.run(
        [sys.executable, "-c", LOW_FD_DRIVER, str(script), str(out)],
        check=True, close_fds=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    assert out.read_text() == "outerr"
