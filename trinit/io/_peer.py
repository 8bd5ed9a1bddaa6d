"""Who may connect to a guest-side vsock listener: the host, and nobody else.

The host is trusted, container processes are not. A container process can reach a guest
listener through ``vsock_loopback`` (CID 1) or the guest's own CID, so every listener the
vsock transport creates (the API, ProxyVsock OUT_OF) checks the peer CID of each accepted
connection and closes the connection at once unless the peer is the host CID. Tests that
drive the agent from inside the guest opt in with ``allow_local`` (CID 1 and the guest's own
CID are then accepted too); the default refuses them.

A refused peer may retry in a tight loop, so refusals are logged through a small rate
limiter: one warning per peer CID per interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import trio

log = logging.getLogger("trinit.transport")

VMADDR_CID_LOCAL = 1
"""vsock_loopback's CID: the guest itself."""


class RateLimiter:
    """At most one event per key per ``interval`` seconds; remembers at most ``max_keys``.

    ``clock`` is injectable (monotonic seconds) so the limiter is tested without waiting.
    """

    def __init__(
        self,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 256,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable) -> bool:
        """True when ``key`` had no event in the last ``interval`` (and records this one)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last.pop(key, None)
        self._last[key] = now
        if len(self._last) > self._max_keys:
            self._forget(now)
        return True

    def _forget(self, now: float) -> None:
        """Drop expired keys; if still too many, the oldest (insertion order = time order)."""
        for key, when in list(self._last.items()):
            if now - when >= self.interval:
                del self._last[key]
        while len(self._last) > self._max_keys:
            del self._last[next(iter(self._last))]


@dataclass(frozen=True)
class PeerPolicy:
    """The accept rule: the host CID, plus the guest itself only when ``allow_local``."""

    host_cid: int
    allow_local: bool = False

    def allows(self, peer_cid: int, local_cid: int) -> bool:
        """``local_cid`` is the CID the connection was addressed to (the guest's own CID,
        or CID 1 over vsock_loopback); a peer with that CID is a process in this guest."""
        if peer_cid == self.host_cid:
            return True
        return self.allow_local and peer_cid in (VMADDR_CID_LOCAL, local_cid)


def vsock_addresses(stream: trio.SocketStream) -> tuple[int, int]:
    """(peer CID, local CID) of an accepted AF_VSOCK connection."""
    peer_cid, _ = stream.socket.getpeername()
    local_cid, _ = stream.socket.getsockname()
    return int(peer_cid), int(local_cid)


class PeerCheckedListener(trio.abc.Listener[trio.SocketStream]):
    """A listener that hands out only connections whose peer ``policy`` allows.

    Refused connections are closed before anything is read from or written to them; the
    accept loop goes on. ``addresses`` is injectable for tests (AF_VSOCK needs a VM).
    """

    def __init__(
        self,
        inner: trio.SocketListener,
        policy: PeerPolicy,
        *,
        port: int,
        addresses: Callable[[trio.SocketStream], tuple[int, int]] = vsock_addresses,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy
        self.port = port
        self._addresses = addresses
        self._limiter = RateLimiter() if limiter is None else limiter

    async def accept(self) -> trio.SocketStream:
        while True:
            stream = await self.inner.accept()
            try:
                peer_cid, local_cid = self._addresses(stream)
            except OSError:  # the peer already went away: nothing to serve
                stream.socket.close()
                continue
            if self.policy.allows(peer_cid, local_cid):
                return stream
            stream.socket.close()
            if self._limiter.allow(peer_cid):
                log.warning(
                    f"vsock port {self.port}: refused a connection from cid {peer_cid}: "
                    f"only the host (cid {self.policy.host_cid}) may connect"
                )

    async def aclose(self) -> None:
        await self.inner.aclose()
