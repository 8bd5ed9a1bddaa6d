"""Shared fixtures: a trinit agent running as PID 1 of fresh namespaces (trinit.host.LocalAgent).

The agent serves over the unix transport in a per-test directory; teardown stops it
(SIGTERM, then SIGKILL) and its namespaces die with it, taking every mount.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trinit.host import LocalAgent


@pytest.fixture
def agent() -> Iterator[LocalAgent]:
    running = LocalAgent.start()
    try:
        yield running
    finally:
        code = running.stop()
        if code != 0:
            print(running.log()[-20000:])
        running.remove()


@pytest.fixture(scope="session", autouse=True)
def _session_rootfs_cleanup() -> Iterator[None]:
    yield
    from agentlib import cleanup_rootfs
    from seccomplib import cleanup_probe

    cleanup_rootfs()
    cleanup_probe()


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fails the test if it leaves any fd open in this process."""
    from iolib import open_fds

    before = open_fds()
    yield
    assert open_fds() - before == set()
