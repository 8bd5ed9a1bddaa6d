"""A thread limiter of the current trio run, made on first use.

Why per run: a :class:`trio.CapacityLimiter` belongs to the run it was made in (its waiters
are that run's tasks), so a module-level one would break the next ``trio.run`` in the same
process (the tests make many). Each kind of blocking work that must not take trio's
default 40 threads (bundle removal, bulk stdio stretches) has one of these.
"""

from __future__ import annotations

import trio
from trio.lowlevel import RunVar


class RunLimiter:
    """``RunLimiter(name, tokens).get()``: this run's limiter of ``tokens`` threads."""

    def __init__(self, name: str, tokens: int) -> None:
        self._var: RunVar[trio.CapacityLimiter] = RunVar(name)
        self.tokens = tokens

    def get(self) -> trio.CapacityLimiter:
        try:
            return self._var.get()
        except LookupError:
            limiter = trio.CapacityLimiter(self.tokens)
            self._var.set(limiter)
            return limiter
