"""A log line at most once per interval, counting the lines it held back.

Why: a peer can open connection after connection that each fail the same way (garbage
instead of the HTTP/2 preface, say). One warning per connection would let it flood the VM
console, which is PID 1's stderr. A :class:`RateLimitedLog` lets the first line through,
drops the rest for ``interval`` seconds, and says how many it dropped on the next line it
lets through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Warnings to ``logger``, at most one per ``interval`` seconds of ``clock``.

    ``clock`` is any monotonic seconds counter (``trio.current_time`` inside trio, so tests
    can drive it with MockClock; a plain function in unit tests). Not thread-safe; use it
    from one trio run.
    """

    __slots__ = ("_clock", "_interval", "_logger", "_next", "_suppressed")

    def __init__(
        self, logger: logging.Logger, *, interval: float, clock: Callable[[], float]
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def warning(self, message: str, *args: Any) -> None:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval
        suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            noun = "message" if suppressed == 1 else "messages"
            message = f"{message} ({suppressed} similar {noun} suppressed)"
        self._logger.warning(message, *args)
