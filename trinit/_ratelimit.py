"""Rate limits for log lines a peer can provoke: at most one line per key per interval.

Why: a peer can fail the same way again and again (a container process dialing the API from
the wrong CID, a connection sending garbage instead of the HTTP/2 preface). One warning per
attempt would let it flood the VM console, which is PID 1's stderr. :class:`RateLimiter`
decides (one event per key per ``interval``, with bounded memory); :class:`RateLimitedLog`
lets the first line through, drops the rest for the interval, and says how many it dropped
on the next line it lets through.

``clock`` is any monotonic seconds counter (``trio.current_time`` inside trio, so tests can
drive it with MockClock; a plain function in unit tests). Standard library only; not
thread-safe (use from one trio run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["RateLimitedLog", "RateLimiter"]


class RateLimiter:
    """At most one event per key per ``interval`` seconds; remembers at most ``max_keys``."""

    def __init__(
        self,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 256,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self.max_keys = max_keys
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable = None) -> bool:
        """True when ``key`` had no event in the last ``interval`` (and records this one)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last.pop(key, None)
        self._last[key] = now
        if len(self._last) > self.max_keys:
            self._forget(now)
        return True

    def _forget(self, now: float) -> None:
        """Drop expired keys; if still too many, the oldest (insertion order = time order)."""
        for key, when in list(self._last.items()):
            if now - when >= self.interval:
                del self._last[key]
        while len(self._last) > self.max_keys:
            del self._last[next(iter(self._last))]


class RateLimitedLog:
    """Warnings to ``logger``, at most one per key per ``interval`` seconds of ``clock``."""

    __slots__ = ("_limiter", "_logger", "_suppressed")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 256,
    ) -> None:
        self._logger = logger
        self._limiter = RateLimiter(interval, clock, max_keys)
        self._suppressed: dict[Hashable, int] = {}

    def warning(self, message: str, *args: Any, key: Hashable = None) -> None:
        if not self._limiter.allow(key):
            if key in self._suppressed or len(self._suppressed) < self._limiter.max_keys:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            noun = "message" if suppressed == 1 else "messages"
            message = f"{message} ({suppressed} similar {noun} suppressed)"
        self._logger.warning(message, *args)
