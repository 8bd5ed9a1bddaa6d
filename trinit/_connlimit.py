"""A cap on the connections one listener serves at once.

Why: every accepted connection makes trinit hold a socket, tasks and (for the API) up to the
per-connection HTTP/2 bounds; those bounds multiply with the number of connections, so the
number itself must be bounded too, or a peer that keeps connecting (a looping host bug on the
API, a container on a ProxyVsock INTO socket) exhausts PID 1's fds and memory. Beyond the cap
a new connection is closed at accept, before a byte is read; a peer may retry once one of its
connections has closed. Refusals are logged through a :class:`RateLimitedLog`.

Not thread-safe: one per listener, used from its trio tasks.
"""

from __future__ import annotations

from trinit._ratelimit import RateLimitedLog

__all__ = ["ConnectionLimit"]


class ConnectionLimit:
    """At most ``limit`` admitted connections at once."""

    __slots__ = ("_log", "active", "limit", "refused", "what")

    def __init__(self, limit: int, log: RateLimitedLog, what: str = "a connection") -> None:
        if limit < 1:
            raise ValueError(f"connection limit {limit}: must be at least 1")
        self.limit = limit
        self.what = what
        self.active = 0
        self.refused = 0
        self._log = log

    def admit(self) -> bool:
        """Take a slot (then :meth:`release` it when the connection ends), or say no, and
        log the refusal (rate-limited)."""
        if self.active >= self.limit:
            self.refused += 1
            self._log.warning(
                f"refused {self.what}: {self.active} connections open, the limit "
                f"({self.refused} refused so far)",
                key=("connection limit", id(self)),
            )
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1
