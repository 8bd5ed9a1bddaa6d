"""Helpers for tests that drive a real agent: a shared busybox rootfs and container setup."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
from typing import Any

from rootfs import build_busybox_rootfs
from rootfs import test_spec as _host_spec

from trinit.host import Host, LocalAgent, Process, Result

_ROOTFS: str | None = None
_ids = itertools.count(1)


class Output:
    """A process's output as it arrives (pass :meth:`sink` as ``stdout_sink``) and an event
    set once ``marker`` is in it: a test that acts on what a process printed waits for it."""

    def __init__(self, marker: bytes) -> None:
        self.data = bytearray()
        self.marker = marker
        self.seen = threading.Event()

    def sink(self, data: bytes) -> None:
        self.data.extend(data)
        if self.marker in self.data:
            self.seen.set()


def log_shows(agent: LocalAgent, text: str, timeout: float = 10.0) -> bool:
    """Whether ``text`` shows up in the agent's log within ``timeout`` seconds. The agent
    writes its log from a thread, so a line logged just now may not be in the file yet."""
    deadline = time.monotonic() + timeout
    while text not in agent.log():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def busybox_rootfs() -> str:
    """One read-mostly busybox tree for the whole session (containers bind-mount it)."""
    global _ROOTFS
    if _ROOTFS is None:
        path = tempfile.mkdtemp(prefix="trinit-rootfs-", dir="/tmp")
        build_busybox_rootfs(path)
        _ROOTFS = path
    return _ROOTFS


def cleanup_rootfs() -> None:
    global _ROOTFS
    if _ROOTFS is not None:
        shutil.rmtree(_ROOTFS, ignore_errors=True)
        _ROOTFS = None


class Container:
    """A container in an agent: its rootfs mounted at the bundle path, specs pointing at it."""

    def __init__(self, host: Host, container_id: str | None = None) -> None:
        self.host = host
        self.id = container_id or f"c{next(_ids)}-{os.getpid()}"
        self.root = host.mount_rootfs(self.id, busybox_rootfs())

    def spec(self, args: list[str], **overrides: Any) -> dict[str, Any]:
        return _host_spec(self.root, args, **overrides)

    def run(
        self, args: list[str], *, input: bytes | None = None, timeout: float = 60, **overrides: Any
    ) -> Result:
        """Run ``args`` as the init of this container (create, start, wait, delete)."""
        return self.host.run(self.id, self.spec(args, **overrides), input=input, timeout=timeout)

    def start_init(self, args: list[str] | None = None, **kw: Any) -> Process:
        proc = self.host.process(
            self.id, self.spec(args or ["sleep", "100000"]), stdout=False, stderr=False, **kw
        )
        proc.create()
        proc.start()
        return proc

    def exec(
        self,
        exec_id: str,
        args: list[str],
        *,
        input: bytes | None = None,
        timeout: float = 60,
        **overrides: Any,
    ) -> Result:
        return self.host.run(
            self.id, self.spec(args, **overrides), process_id=exec_id, input=input, timeout=timeout
        )
