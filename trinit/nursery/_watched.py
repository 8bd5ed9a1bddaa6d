"""Watched: a value that tasks can wait on, e.g. a process's lifecycle state.

Why not a handful of ``trio.Event``s: one value is the whole truth, and each waiter states the
condition it needs (``wait_value(lambda s: s in SETTLED)``). The condition is checked at the
moment the value changes, so a waiter never misses a state the value only passes through
(REAPED on the way to EXITED, say). It is trio_util's ``AsyncValue`` reduced to what trinit
uses, without the dependency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import trio

__all__ = ["Watched"]

T = TypeVar("T")


class _Waiter(Generic[T]):
    __slots__ = ("event", "matched", "predicate")

    def __init__(self, predicate: Callable[[T], bool]) -> None:
        self.predicate = predicate
        self.event = trio.Event()
        self.matched: T | None = None


class Watched(Generic[T]):
    """Holds a value; :meth:`wait_value` returns once a predicate holds for it."""

    def __init__(self, value: T) -> None:
        self._value = value
        self._waiters: set[_Waiter[T]] = set()

    @property
    def value(self) -> T:
        return self._value

    def set(self, value: T) -> None:
        """Change the value and wake every waiter whose predicate holds for it (synchronous:
        the waiters run later but see this value even if it has changed again by then)."""
        self._value = value
        for waiter in [w for w in self._waiters if w.predicate(value)]:
            self._waiters.discard(waiter)
            waiter.matched = value
            waiter.event.set()

    async def wait_value(self, predicate: Callable[[T], bool]) -> T:
        """The first value (the current one included) for which ``predicate`` holds.
        Always a checkpoint; cancellation leaves nothing registered."""
        if predicate(self._value):
            value = self._value
            await trio.lowlevel.checkpoint()
            return value
        waiter = _Waiter(predicate)
        self._waiters.add(waiter)
        try:
            await waiter.event.wait()
        finally:
            self._waiters.discard(waiter)
        return waiter.matched  # type: ignore[return-value]  # set before the event
