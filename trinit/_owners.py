"""The owners the process and proxy RPCs act on (the reaper, the container registry, the
proxy table, the exec helper pool), built after the API serves.

Why later: building them imports the whole supervision tree (``trinit.nursery``, which
pulls in ``trinit.exec``, the stdio pumps and the PTY relay: ~20 ms of the agent's start,
docs/benchmarks.md) and reads the cgroup mounts, and the host's first calls (Getenv,
Setenv, Mount, ...) need none of it. So the agent listens and serves first; the owners are
built as soon as an RPC needs them, or ``grace`` seconds after serving began, whichever
comes first. An RPC that needs them waits for the build (:meth:`DeferredOwners.get`).

Ordering: nothing spawns a child before the reaper runs, since every child comes from the
registry or the helper pool, which are built after it. Orphans re-parented to the agent in
the meantime stay zombies until the reaper's first ``reap_all``.
"""

from __future__ import annotations

import enum
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from trinit.errors import Unavailable

if TYPE_CHECKING:
    from trinit.io import Transport
    from trinit.nursery import ContainerRegistry, HelperBackend, ProxyTable

log = logging.getLogger("trinit.agent")

STARTUP_GRACE = 0.05
"""Seconds after the API serves before the owners are built unasked: long enough for a host
that is already dialling to get its first answers first, short enough that its first
CreateProcess usually finds them ready."""


# Plain classes, not dataclasses: creating a dataclass costs ~0.4 ms at import, and this
# module is on the agent's start path.
class Owners:
    __slots__ = ("backend", "proxies", "registry")

    def __init__(
        self, registry: ContainerRegistry, proxies: ProxyTable, backend: HelperBackend
    ) -> None:
        self.registry = registry
        self.proxies = proxies
        self.backend = backend


class OwnersConfig:
    """What building the owners needs from the agent's configuration."""

    __slots__ = ("cgroup_root", "drain_grace", "entry_point", "transport")

    def __init__(
        self, transport: Transport, cgroup_root: str, drain_grace: float, entry_point: str
    ) -> None:
        self.transport = transport
        self.cgroup_root = cgroup_root
        self.drain_grace = drain_grace
        self.entry_point = entry_point


if TYPE_CHECKING:
    GetOwners = Callable[[], Awaitable[Owners]]
    """How the servicer reaches the owners: waits for the build if it has not finished."""


class _State(enum.Enum):
    WAITING = "waiting"  # not asked for yet, grace not over
    BUILDING = "building"
    READY = "ready"
    CLOSED = "closed"  # shut down (before or after being built)


class DeferredOwners:
    """Builds :class:`Owners` in the agent's root nursery once wanted; see the module doc.

    :meth:`run` is a root-nursery task; :meth:`get` is for RPC handlers; :meth:`shutdown`
    is the agent's orderly stop (containers deleted, the exec fork server stopped).
    """

    def __init__(self, build: Callable[[trio.Nursery], Awaitable[Owners]]) -> None:
        """``build(root)`` makes the owners in ``root`` (:func:`build_owners` in the agent)."""
        self._build = build
        self._state = _State.WAITING
        self._owners: Owners | None = None
        self._wanted = trio.Event()
        self._settled = trio.Event()  # READY or CLOSED

    async def get(self) -> Owners:
        """The owners, built now if nobody has asked yet. UNAVAILABLE if the agent shut
        down before they were built (once built, they answer as they did before: the
        registry itself refuses what it must while it shuts down)."""
        if self._owners is None:
            self._wanted.set()
            await self._settled.wait()
        if self._owners is None:
            raise Unavailable("the agent is shutting down")
        return self._owners

    async def run(self, root: trio.Nursery, grace: float = STARTUP_GRACE) -> None:
        """Wait until wanted (or ``grace`` is over), build in ``root``, then start the exec
        fork server. A build failure propagates into ``root``, as it did when the agent
        built everything before serving: the agent stops."""
        with trio.move_on_after(grace):
            await self._wanted.wait()
        if self._state is not _State.WAITING:
            return  # shut down before it was needed
        self._state = _State.BUILDING
        owners = await self._build(root)
        self._owners = owners
        self._state = _State.READY
        self._settled.set()
        await owners.backend.prewarm()

    async def shutdown(self, stop_grace: float) -> None:
        """Stop proxies and delete every container (bounded), then the exec fork server.

        Owners never built are never built now; a build under way is waited for first.
        """
        if self._state is _State.WAITING:
            self._state = _State.CLOSED
            self._wanted.set()
            self._settled.set()
            return
        await self._settled.wait()
        self._state = _State.CLOSED
        owners = self._owners
        assert owners is not None  # settled and not closed before: built
        with trio.move_on_after(15):
            await owners.proxies.stop_all()
            await owners.registry.shutdown(stop_grace)
        await owners.backend.aclose()  # kill the waiting exec zygote (shielded, bounded)


_IMPORT_STEPS = ("trinit.exec", "trinit.cgroup", "trinit.nursery")
"""The supervision tree's packages, in the order they import each other."""


async def _import_in_steps() -> None:
    """Import the supervision tree a package at a time with a checkpoint between: an RPC
    that arrives during the build waits for one step (~7 ms), not for all (~17 ms)."""
    for name in _IMPORT_STEPS:
        importlib.import_module(name)
        await trio.lowlevel.checkpoint()


async def build_owners(config: OwnersConfig, root: trio.Nursery) -> Owners:
    """The reaper (started in ``root``), the container registry, the proxy table and the
    exec helper pool, as the agent runs them."""
    await _import_in_steps()
    from trinit.nursery import (
        ContainerCgroups,
        ContainerRegistry,
        HelperBackend,
        ProxyTable,
        Reaper,
    )

    reaper = Reaper()
    await root.start(reaper.run)
    # is the root cgroup2? reads /proc/self/mountinfo: not on the loop
    cgroups = await trio.to_thread.run_sync(ContainerCgroups.for_root, config.cgroup_root)
    backend = HelperBackend(entry_point=config.entry_point)
    registry = ContainerRegistry(
        root,
        reaper=reaper,
        backend=backend,
        dial=config.transport.dial,
        drain_grace=config.drain_grace,
        cgroups=cgroups,
    )
    log.debug("container registry ready")
    return Owners(registry, ProxyTable(root, config.transport), backend)
