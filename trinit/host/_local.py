"""A trinit agent on this machine, for development, examples, tests and benchmarks.

The agent runs as PID 1 of fresh PID, mount, UTS, IPC and network namespaces (``unshare``)
with a private tmpfs on /run, over the unix transport in a short directory of its own. This
keeps what containers do (mounts, hostnames, sysctls, ``Kill(-1)``) off the machine itself
(README "Hazards"). :meth:`LocalAgent.stop` sends SIGTERM (orderly shutdown: containers are
deleted), then SIGKILL; the namespaces die with their PID 1, taking every mount with them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trinit._mountinfo import read_mounts

from ._client import Host


def find_cgroup2_mount() -> str | None:
    """Where this machine's cgroup2 hierarchy is mounted (/sys/fs/cgroup, or .../unified)."""
    return next((m.mount_point for m in read_mounts() if m.fstype == "cgroup2"), None)


def _remove_cgroup_tree(path: str) -> None:
    """rmdir a cgroup subtree depth first (cgroup dirs hold only interface files)."""
    if not os.path.isdir(path):
        return
    for current, dirs, _ in os.walk(path, topdown=False):
        for name in dirs:
            try:
                os.rmdir(os.path.join(current, name))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def in_fresh_namespaces(python: str, args: list[str]) -> list[str]:
    """The command line that runs ``python ARGS`` the way :class:`LocalAgent` runs the
    agent: as PID 1 of fresh PID, mount, UTS, IPC and network namespaces (``unshare``;
    killed with its parent), with its own /proc and a tmpfs on /run."""
    script = 'mount -t tmpfs -o mode=755 tmpfs /run && exec "$0" "$@"'
    return [
        "unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--mount-proc",
        "--propagation", "private", "--kill-child=SIGKILL",
        "sh", "-c", script, python, *args,
    ]  # fmt: skip


class LocalAgent:
    cgroup_root: str | None = None

    def __init__(
        self, directory: Path, proc: subprocess.Popen[bytes], log_path: Path, owns_directory: bool
    ) -> None:
        self.directory = directory
        self.transport = f"unix:{directory}"
        self.proc = proc
        self.log_path = log_path
        self.host = Host(self.transport)
        self._owns_directory = owns_directory

    @classmethod
    def start(
        cls,
        directory: Path | None = None,
        *,
        log_level: str = "debug",
        extra_args: tuple[str, ...] = (),
        timeout: float = 20.0,
        cgroups: bool = True,
        output: int | None = None,
    ) -> LocalAgent:
        """Start an agent; with ``cgroups`` its container cgroups live in a fresh directory
        of the machine's cgroup2 hierarchy, removed again by :meth:`remove`. Its stdout and
        stderr (the log) go to ``agent.log`` in its directory, or to the fd ``output``."""
        owns = directory is None
        if directory is None:
            # unix socket paths are limited to 108 bytes: keep the directory short
            directory = Path(tempfile.mkdtemp(prefix="trn-", dir="/tmp"))
        directory.mkdir(parents=True, exist_ok=True)
        log_path = directory / "agent.log"
        cgroup_root = None
        mount = find_cgroup2_mount() if cgroups else None
        if mount is not None:
            cgroup_root = os.path.join(mount, f"trinit-local-{directory.name}")
            os.makedirs(cgroup_root, exist_ok=True)
            extra_args = ("--cgroup-root", cgroup_root, *extra_args)
        cmd = in_fresh_namespaces(
            sys.executable,
            ["-m", "trinit", "agent", "--transport", f"unix:{directory}",
             "--log-level", log_level, *extra_args],
        )  # fmt: skip
        package_root = Path(__file__).resolve().parent.parent.parent
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file if output is None else output,
                stderr=log_file if output is None else output,
                cwd=str(package_root),
                # its own process group: a Kill(0) or a terminal's ^C meant for the caller
                # never reaches the agent, and nothing the agent signals reaches the caller
                start_new_session=True,
            )
        agent = cls(directory, proc, log_path, owns)
        agent.cgroup_root = cgroup_root
        sock = directory / "guest_1024"
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                agent.stop()
                log = agent.log()
                agent.remove()
                raise RuntimeError(f"agent did not start:\n{log}")
            time.sleep(0.005)
        try:
            agent.host.wait_ready(timeout)
        except BaseException:
            agent.stop()
            agent.remove()
            raise
        return agent

    @property
    def pid(self) -> int:
        """trinit's pid as seen from here (outside its PID namespace)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM trinit, wait; SIGKILL if it does not stop. Returns unshare's exit code."""
        self.host.close()
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except (OSError, IndexError, ValueError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def remove(self) -> None:
        if self.cgroup_root is not None:
            _remove_cgroup_tree(self.cgroup_root)
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.remove()
