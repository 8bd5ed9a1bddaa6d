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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``vm_aarch64`` tests (minutes of aarch64 TCG) run only when ``-m`` names them."""
    if "vm_aarch64" in (config.getoption("markexpr") or ""):
        return
    dropped = [item for item in items if item.get_closest_marker("vm_aarch64")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("vm_aarch64")]


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

    cleanup_rootfs()


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fails the test if it leaves any fd open in this process."""
    from iolib import open_fds

    before = open_fds()
    yield
    assert open_fds() - before == set()
