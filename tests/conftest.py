"""Shared fixtures: a trinit agent running as PID 1 of fresh namespaces, and a busybox rootfs.

The agent runs under ``unshare --pid --fork --mount --uts --ipc --net --mount-proc`` with a
fresh tmpfs on /run (design "Hazards"): sysctls, hostnames, mounts and ``Kill(-1)`` stay
inside. It serves over the unix transport in a per-test directory. Teardown sends SIGTERM
(orderly shutdown), then SIGKILL; the namespaces die with their PID 1, taking every mount.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from trinit.host import Host

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class Agent:
    directory: Path
    transport: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    host: Host

    @property
    def pid(self) -> int:
        """trinit's pid as seen from the test (outside its PID namespace)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_agent(directory: Path, *extra: str) -> Agent:
    directory.mkdir(parents=True, exist_ok=True)
    transport = f"unix:{directory}"
    log_path = directory / "agent.log"
    script = 'mount -t tmpfs -o mode=755 tmpfs /run && exec "$0" -m trinit agent "$@"'
    cmd = [
        "unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--mount-proc",
        "--propagation", "private", "--kill-child=SIGKILL",
        "sh", "-c", script, sys.executable,
        "--transport", transport, "--log-level", "debug", *extra,
    ]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                cwd=str(ROOT))
    host = Host(transport)
    sock = directory / "guest_1024"
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"agent did not start:\n{log_path.read_text()}")
        time.sleep(0.01)
    host.wait_ready(10)
    return Agent(directory, transport, proc, log_path, host)


def stop_agent(agent: Agent) -> None:
    agent.host.close()
    if agent.proc.poll() is None:
        try:
            os.kill(agent.pid, signal.SIGTERM)
        except (OSError, IndexError, ValueError):
            pass
        try:
            agent.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait(timeout=10)


@pytest.fixture
def agent() -> Iterator[Agent]:
    # unix socket paths are limited to 108 bytes: keep the directory short
    directory = Path(tempfile.mkdtemp(prefix="trn-", dir="/tmp"))
    running = start_agent(directory)
    try:
        yield running
    finally:
        stop_agent(running)
        print(running.log()[-20000:])
        shutil.rmtree(directory, ignore_errors=True)
