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
from collections.abc import Callable
from dataclasses import dataclass

import trio

from trinit._ratelimit import RateLimitedLog

log = logging.getLogger("trinit.transport")

VMADDR_CID_LOCAL = 1
"""vsock_loopback's CID: the guest itself."""


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
        warnings: RateLimitedLog | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy
        self.port = port
        self._addresses = addresses
        # one line per refused peer CID per minute
        self._warnings = RateLimitedLog(log, interval=60.0) if warnings is None else warnings

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
            self._warnings.warning(
                f"vsock port {self.port}: refused a connection from cid {peer_cid}: "
                f"only the host (cid {self.policy.host_cid}) may connect",
                key=peer_cid,
            )

    async def aclose(self) -> None:
        await self.inner.aclose()
