"""``trinit run`` end to end: a real embedded agent (fresh namespaces), a real busybox rootfs,
the CLI as a subprocess; exit codes, process options, a PTY session."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import pytest
from agentlib import busybox_rootfs
from clilib import TRINIT, no_traceback, trinit


def test_echo_hi() -> None:
    result = trinit("run", "--rootfs", busybox_rootfs(), "--", "echo", "hi")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")


@pytest.mark.parametrize(
    ("cmd", "code", "message"),
    [
        (["sh", "-c", "exit 7"], 7, ""),
        (["no-such-program"], 127, "failed to find target executable no-such-program"),
        (["/etc/passwd"], 126, "Permission denied"),
    ],
)
def test_exit_codes_follow_docker(cmd: list[str], code: int, message: str) -> None:
    result = trinit("run", "--rootfs", busybox_rootfs(), "--", *cmd)
    assert result.returncode == code, result.stderr
    assert no_traceback(result)
    if message:
        assert result.stderr.startswith("trinit: ") and message in result.stderr
        assert len(result.stderr.splitlines()) == 1
    else:
        assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rootfs", "/nonexistent-rootfs", "--", "true"], "not a directory"),
        (["--rootfs", "ROOT", "-u", "nosuchuser", "--", "true"], "no such user: nosuchuser"),
        (["--rootfs", "ROOT", "--memory", "lots", "--", "true"], "invalid size"),
        (["--rootfs", "ROOT"], "no command given"),
        (["--", "true"], "one of the arguments --rootfs --image is required"),
        (["-d", "--rootfs", "ROOT", "--", "true"], "-d needs --connect"),
    ],
)
def test_trinit_errors_exit_125_in_one_line(args: list[str], message: str) -> None:
    args = [busybox_rootfs() if arg == "ROOT" else arg for arg in args]
    result = trinit("run", *args)
    assert result.returncode == 125, result.stderr
    assert message in result.stderr
    assert no_traceback(result)


def test_env_workdir_user() -> None:
    result = trinit(
        "run", "--rootfs", busybox_rootfs(), "-e", "GREETING=hello there", "-e", "EMPTY=",
        "-w", "/tmp/made/here", "-u", "1", "--",
        "sh", "-c", 'echo "$GREETING|${EMPTY-unset}"; pwd; id',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "hello there|",
        "/tmp/made/here",
        "uid=1(bin) gid=1(bin) groups=1(bin)",
    ]
    explicit = trinit(
        "run", "--rootfs", busybox_rootfs(), "-u", "65534:1", "--", "sh", "-c", "id -u; id -g"
    )
    assert explicit.stdout.split() == ["65534", "1"], explicit.stderr


def test_stdin_with_i_and_without() -> None:
    with_i = trinit("run", "-i", "--rootfs", busybox_rootfs(), "--", "cat", input=b"piped\n")
    assert (with_i.returncode, with_i.stdout) == (0, "piped\n"), with_i.stderr
    # without -i the program's stdin is /dev/null: cat ends at once, the input is not read
    without = trinit("run", "--rootfs", busybox_rootfs(), "--", "cat", input=b"piped\n")
    assert (without.returncode, without.stdout) == (0, "")


def test_help_for_every_command() -> None:
    top = subprocess.run([TRINIT, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "exec", "ps", "stats", "kill", "rm"):
        assert command in top
        out = subprocess.run(
            [TRINIT, command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert out.startswith("usage: trinit " + command), out
        assert "--connect" in out
    run_help = subprocess.run([TRINIT, "run", "-h"], capture_output=True, text=True).stdout
    for flag in ("--rootfs", "--image", "--tty", "--memory", "--cpus", "--name", "--rm", "-e"):
        assert flag in run_help


# ------------------------------------------------------------------ terminal


class Terminal:
    """The caller's side of a pty pair whose other end is ``trinit``'s controlling tty."""

    def __init__(self, fd: int, pid: int) -> None:
        self.fd = fd
        self.pid = pid
        self.seen = b""

    def read_until(self, token: bytes, limit: float = 60) -> bytes:
        """Everything up to and including ``token`` (the deadline only guards a hang)."""
        deadline = time.monotonic() + limit
        while token not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {token!r} in {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                data = os.read(self.fd, 4096)
                assert data, f"EOF before {token!r}: {self.seen!r}"
                self.seen += data
        head, _, self.seen = self.seen.partition(token)
        return head + token

    def resize(self, rows: int, columns: int) -> None:
        # on the terminal's side: the kernel sends SIGWINCH to trinit, its foreground group
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, limit: float = 60) -> int:
        """trinit's exit status (the pidfd's readiness is the exit; the limit guards a hang)."""
        pidfd = os.pidfd_open(self.pid)
        try:
            ready, _, _ = select.select([pidfd], [], [], limit)
            assert ready, "trinit did not exit"
        finally:
            os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def test_terminal_session_typing_resize_and_exit_code() -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(TRINIT, [TRINIT, "run", "-t", "--rootfs", busybox_rootfs(), "--", "sh"])
    term = Terminal(fd, pid)
    try:
        term.resize(30, 90)
        term.type("stty size; echo $((6*7))\r")
        # the size at the start, and the command ran (its output, not its echo, has 42)
        out = term.read_until(b"42\r\n")
        assert b"30 90\r\n42\r\n" in out
        # the quotes keep "armed" out of the echoed line; the prompt after the output means
        # the line editor has the terminal again, so the resize reaches it, not the command
        term.type("trap 'echo resized' WINCH; echo ar''med\r")
        term.read_until(b"armed\r\n/ # ")
        term.resize(33, 101)
        # ash's line editor redraws its prompt when SIGWINCH reaches it inside the container
        term.read_until(b"\x1b[J")
        term.type("stty size\r")
        assert b"33 101\r\n" in term.read_until(b"33 101\r\n")
        term.type("\x03")  # ^C is a byte in raw mode: it reaches the shell, not trinit
        term.type("exit 3\r")
        assert term.wait() == 3
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_signals_to_trinit_run_are_forwarded() -> None:
    script = 'trap "echo got-term; exit 9" TERM; sleep 100000 & echo ready; wait'
    proc = subprocess.Popen(
        [TRINIT, "run", "--rootfs", busybox_rootfs(), "--", "sh", "-c", script],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out) == (9, "got-term\n"), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_terminal_hangup_ends_the_session() -> None:
    """Closing the terminal (its master side) ends trinit run -t, agent and all."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(TRINIT, [TRINIT, "run", "-t", "--rootfs", busybox_rootfs(), "--", "sh"])
    term = Terminal(fd, pid)
    try:
        term.type("echo $((6*7))\r")
        term.read_until(b"42\r\n")
    finally:
        os.close(fd)  # the hangup
    assert term.wait() == 128 + signal.SIGKILL
