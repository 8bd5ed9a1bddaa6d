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

OPT_IN_MARKERS = ("vm_aarch64", "vm_virtiofs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``vm_aarch64`` and ``vm_virtiofs`` tests (minutes of TCG each) run only when ``-m``
    names them."""
    expression = config.getoption("markexpr") or ""
    skipped = [m for m in OPT_IN_MARKERS if m not in expression]

    def opt_in(item: pytest.Item) -> bool:
        return any(item.get_closest_marker(m) for m in skipped)

    dropped = [item for item in items if opt_in(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not opt_in(item)]


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
