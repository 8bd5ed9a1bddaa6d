"""The agent fails fast, in one line: start-up mistakes a new user makes.

Each case runs ``trinit`` as a real subprocess and checks the whole of stderr: exactly one
line that says what is wrong and what to do, exit status 2, no traceback. Plus: the unix
socket file goes away with the agent, Ctrl-C to the agent's process group leaves no traceback
(the warm exec helper gets the SIGINT too), ``trinit pause --help`` helps instead of pausing,
and ``trinit --version`` names the API version.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRINIT = [sys.executable, "-m", "trinit"]


def _agent(*args: str, preexec: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(preexec or []), *TRINIT, "agent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_not_root() -> None:
    directory = tempfile.mkdtemp(prefix="trn-nr-", dir="/tmp")
    try:
        os.chmod(directory, 0o777)  # so only the missing privilege can stop it
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        line = _one_line(_agent("--transport", f"unix:{directory}", preexec=drop))
    finally:
        shutil.rmtree(directory)
    assert "must run as root" in line, line


def test_missing_unix_directory_is_named() -> None:
    missing = "/tmp/trinit-no-such-dir-for-this-test/x"
    line = _one_line(_agent("--transport", f"unix:{missing}"))
    assert missing in line and "does not exist" in line, line


def test_socket_path_over_108_bytes(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    line = _one_line(_agent("--transport", f"unix:{deep}"))
    assert "limit is 108 bytes" in line and str(deep) in line, line


def test_invalid_log_level(tmp_path: Path) -> None:
    line = _one_line(_agent("--transport", f"unix:{tmp_path}", "--log-level", "verbose"))
    assert "--log-level" in line and "verbose" in line, line


@pytest.mark.parametrize("port", ["-1", "4294967295", "99999999999", "x"])
def test_port_out_of_range(port: str, tmp_path: Path) -> None:
    line = _one_line(_agent("--transport", f"unix:{tmp_path}", "--port", port))
    assert "--port" in line, line


def test_no_af_vsock_is_one_line() -> None:
    """This machine has AF_VSOCK, so the check is driven with a socket factory that fails
    the way a kernel without vsock does (socket(2) -> EAFNOSUPPORT)."""
    from trinit._agent import AgentConfig, StartupError, check_startup

    def no_vsock(family: int, kind: int) -> socket.socket:
        raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))

    with pytest.raises(StartupError) as info:
        check_startup(AgentConfig(transport="vsock"), socket_factory=no_vsock)
    assert "AF_VSOCK" in str(info.value) and "\n" not in str(info.value)
    check_startup(AgentConfig(transport="vsock"))  # the real kernel here: passes


def _wait_for(predicate: Callable[[], object], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert proc.poll() is None, f"agent exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _waiting_zygote(pid: int) -> bool:
    for child in _descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            wchan = Path(f"/proc/{child}/wchan").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"zygote_entry" in cmdline and "wait" in wchan:  # blocked in recvmsg: ready
            return True
    return False


def test_ctrl_c_to_the_process_group_prints_no_traceback_and_removes_the_socket() -> None:
    directory = tempfile.mkdtemp(prefix="trn-cc-", dir="/tmp")
    proc = subprocess.Popen(
        [*TRINIT, "agent", "--transport", f"unix:{directory}", "--cgroup-root", directory],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    sock = Path(directory) / "guest_1024"
    try:
        _wait_for(sock.exists, "the API socket", proc)
        _wait_for(lambda: _waiting_zygote(proc.pid), "the warm exec helper", proc)
        os.killpg(proc.pid, signal.SIGINT)  # what ^C in a terminal does
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err.decode()
        assert not sock.exists(), "the socket file outlived the agent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def test_waiting_zygote_takes_sigint_without_a_traceback() -> None:
    """The warm exec helper alone, spawned as the agent spawns it: a SIGINT while it waits
    for its launch (ready byte received) must not raise KeyboardInterrupt; it exits quietly
    (status 0) when its control socket closes, as it does when the agent goes away."""
    from trinit.exec._launch import ZYGOTE_BOOTSTRAP

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", ZYGOTE_BOOTSTRAP],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(3,),
            preexec_fn=lambda: os.dup2(theirs.fileno(), 3),
        )
        theirs.close()
        try:
            assert ours.recv(1) == b"\x02"  # READY: imports done, about to wait
            proc.send_signal(signal.SIGINT)
        finally:
            ours.close()  # EOF: a waiting zygote exits 0
            _, err = proc.communicate(timeout=30)
    assert b"KeyboardInterrupt" not in err and b"Traceback" not in err, err.decode()
    assert proc.returncode == 0, err.decode()


def test_pause_help_prints_help_and_exits() -> None:
    proc = subprocess.run(
        [*TRINIT, "pause", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=5
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout and "pause" in proc.stdout, proc.stdout
    assert "not running as PID 1" not in proc.stderr


def test_version_names_the_api() -> None:
    out = subprocess.run(
        [*TRINIT, "--version"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    from trinit import API_PACKAGE, __version__
    from trinit._proto import sandbox_pb2

    assert out.startswith(f"trinit {__version__}")
    assert "com.apple.containerization.sandbox.v3" in out
    assert sandbox_pb2.DESCRIPTOR.package == API_PACKAGE
