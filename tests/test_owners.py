"""DeferredOwners: the registry and its peers are built after the API serves, when first
needed or after the grace, and shut down whether or not they were built (trinit._owners).

The owners here are stand-ins (the build is injected): what is tested is when the build
runs and what waits for it; tests/test_agent_startup.py starts a real agent.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import trio.testing

from trinit._owners import STARTUP_GRACE, DeferredOwners, Owners
from trinit.errors import Unavailable


class _Backend:
    def __init__(self) -> None:
        self.prewarmed = False
        self.closed = False

    async def prewarm(self) -> None:
        self.prewarmed = True

    async def aclose(self) -> None:
        self.closed = True


class _Stoppable:
    def __init__(self) -> None:
        self.stopped = False

    async def stop_all(self) -> None:
        self.stopped = True

    async def shutdown(self, stop_grace: float) -> None:
        self.stopped = True


class _Build:
    """Counts builds; each takes ``seconds`` (a build imports and reads mounts)."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[float] = []
        self.backend = _Backend()
        self.registry = _Stoppable()
        self.proxies = _Stoppable()

    async def __call__(self, root: trio.Nursery) -> Owners:
        self.calls.append(trio.current_time())
        await trio.sleep(self.seconds)
        return Owners(cast(Any, self.registry), cast(Any, self.proxies), cast(Any, self.backend))


async def test_built_after_the_grace_unasked(autojump_clock: trio.testing.MockClock) -> None:
    build = _Build()
    owners = DeferredOwners(build)
    async with trio.open_nursery() as root:
        start = trio.current_time()
        root.start_soon(owners.run, root)
        await trio.sleep(STARTUP_GRACE / 2)
        assert build.calls == []  # the first RPCs are answered before the build
        await trio.sleep(STARTUP_GRACE)
        assert build.calls == [pytest.approx(start + STARTUP_GRACE)]
        assert build.backend.prewarmed
        assert (await owners.get()).backend is cast(Any, build.backend)
    assert len(build.calls) == 1


async def test_an_rpc_that_needs_them_builds_them_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    build = _Build(seconds=0.01)
    owners = DeferredOwners(build)
    async with trio.open_nursery() as root:
        start = trio.current_time()
        root.start_soon(owners.run, root, 10.0)
        got = await owners.get()  # waits for the build, not for the grace
        assert trio.current_time() == pytest.approx(start + 0.01)
        assert got.registry is cast(Any, build.registry)
        assert await owners.get() is got  # built once
    assert len(build.calls) == 1


async def test_shutdown_before_the_build_builds_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    build = _Build()
    owners = DeferredOwners(build)
    async with trio.open_nursery() as root:
        root.start_soon(owners.run, root, 10.0)
        await owners.shutdown(stop_grace=1.0)
        with pytest.raises(Unavailable):
            await owners.get()
    assert build.calls == []
    assert not build.backend.prewarmed


async def test_shutdown_during_the_build_waits_and_stops_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    build = _Build(seconds=1.0)
    owners = DeferredOwners(build)
    async with trio.open_nursery() as root:
        root.start_soon(owners.run, root, 0.0)
        await trio.sleep(0.5)
        assert len(build.calls) == 1
        await owners.shutdown(stop_grace=1.0)
        assert build.registry.stopped and build.proxies.stopped and build.backend.closed
        # after shutdown the owners still answer what they must (the registry refuses
        # new work itself)
        assert (await owners.get()).registry is cast(Any, build.registry)
