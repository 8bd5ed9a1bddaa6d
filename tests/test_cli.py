"""The command-line contract: trinit agent outside PID 1, log format, clean signal exits."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit._proto.sandbox_pb2_grpc import SandboxContextStub
from trinit.host import LocalAgent

ROOT = Path(__file__).resolve().parent.parent
LEVELS = "trace|debug|info|notice|warning|error|critical"
LINE = re.compile(rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z ({LEVELS}) trinit: ")


def _start(directory: str, *args: str) -> subprocess.Popen[bytes]:
    # a plain child of the test (not PID 1): trinit makes itself a subreaper
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trinit",
            "agent",
            "--transport",
            f"unix:{directory}",
            "--cgroup-root",
            directory,
            *args,
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_agent_serves_and_exits_cleanly_on_signal(signum: int) -> None:
    directory = tempfile.mkdtemp(prefix="trn-cli-", dir="/tmp")
    proc = _start(directory, "--port", "1234", "--log-level", "debug")
    try:
        sock = Path(directory) / "guest_1234"
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert sock.stat().st_mode & 0o777 == 0o600
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            stub = SandboxContextStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
            stub.Setenv(pb.SetenvRequest(key="TRINIT_TEST", value="1"), timeout=10)
            assert stub.Getenv(pb.GetenvRequest(key="TRINIT_TEST"), timeout=10).value == "1"
            assert not stub.Getenv(pb.GetenvRequest(key="NOPE_NOT_SET")).HasField("value")
            # Kill(-1) outside PID 1 would reach the whole machine: refused
            assert stub.Kill(pb.KillRequest(pid=-1, signal=0)).result == -1
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()[-4000:]
        lines = err.decode().splitlines()
        assert lines and all(LINE.match(line) for line in lines), lines
        assert any("serving on unix:" in line for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def test_help_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trinit", "agent", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--transport", "--port", "--host-cid", "--log-level"):
        assert flag in out
    version = subprocess.run(
        [sys.executable, "-m", "trinit", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith("trinit ")


def test_unknown_transport_fails_clearly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trinit", "agent", "--transport", "tcp:1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "transport" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_installed() -> None:
    script = Path(sys.executable).parent / "trinit"
    assert script.exists()
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("trinit ")
    assert os.access(script, os.X_OK)


def test_init_subcommand_and_cz_init_name(tmp_path: Path) -> None:
    script = str(Path(sys.executable).parent / "trinit")
    assert subprocess.run([script, "init", "--", "sh", "-c", "exit 42"]).returncode == 42
    link = tmp_path / ".cz-init"
    link.symlink_to(script)
    assert subprocess.run([str(link), "--", "sh", "-c", "exit 3"]).returncode == 3
    status = subprocess.run(
        [script, "init", "--", "cat", "/proc/self/status"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    # default dispositions and an empty mask reach the workload (glibc's internal 32/33 too)
    assert fields["SigIgn"].strip() == "0000000000000000"
    assert fields["SigBlk"].strip() == "0000000000000000"


def test_pause_subcommand_exits_0_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trinit", "pause"], cwd=ROOT, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    # pause takes SIGTERM with sigwaitinfo: wait until it sleeps there (before that, SIGTERM
    # would still have its default action)
    while "sigtimedwait" not in Path(f"/proc/{proc.pid}/wchan").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_second_agent_on_the_same_directory_fails_in_one_line(agent: LocalAgent) -> None:
    """It must not unlink the first agent's live socket: one line naming the path, exit 2."""
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--mount-proc",
         sys.executable, "-m", "trinit", "agent", "--transport", f"unix:{agent.directory}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"trinit: cannot listen on unix:{agent.directory} port 1024: "
        f"{agent.directory}/guest_1024 is in use: another process is listening on it\n"
    )
    agent.host.stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=10)  # the first one serves
