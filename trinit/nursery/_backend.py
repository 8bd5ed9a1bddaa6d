"""The seam between supervision and the kernel: how processes are launched and signalled.

:class:`HelperBackend` is the real one (the exec helper, ``trinit.exec``). Tests of the
supervision tree's timing use a simulated backend with the same shape whose "processes" exit
when the test says so, under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass
class Launched:
    """A started container process; ``pty_master`` (if any) is now owned by the caller."""

    pid: int
    pty_master: int | None


class ProcessBackend(Protocol):
    async def launch(
        self,
        helper_args: Sequence[str],
        *,
        stdio: tuple[int, int, int],
        terminal: bool,
        on_pid: Callable[[int], None],
        on_console: Callable[[int], None] | None = None,
    ) -> Launched: ...

    def kill(self, pid: int, sig: int) -> None: ...


class HelperBackend:
    """Launches processes through the exec helper and signals them with kill(2).

    The start protocol is docs/protocol.md §5.5.

    Owns a :class:`trinit.exec.HelperPool` (a fork server every helper is forked from, so
    a launch skips Python start-up); :meth:`aclose` kills that server.
    """

    def __init__(
        self,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        *,
        entry_point: str | None = None,
    ) -> None:
        """``entry_point``: trinit's own entry point file (the host's ``/sbin/vminitd``); a
        container process whose program is that file runs init or pause mode in the helper
        instead of exec'ing it (docs/compat.md, "/.cz-init and pause without Python")."""
        from trinit.exec import HelperPool

        self._python = python
        self._env = env
        self._pool = HelperPool()
        self._extra_args = ["--entry-point", entry_point] if entry_point else []

    async def launch(
        self,
        helper_args: Sequence[str],
        *,
        stdio: tuple[int, int, int],
        terminal: bool,
        on_pid: Callable[[int], None],
        on_console: Callable[[int], None] | None = None,
    ) -> Launched:
        result = await self._pool.launch(
            [*helper_args, *self._extra_args],
            stdio=stdio,
            on_pid=on_pid,
            python=self._python,
            env=self._env,  # None: the agent's own, as of the hand-off (Setenv changes it)
            terminal=terminal,
            on_console=on_console,
        )
        return Launched(result.pid, result.pty_master)

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    async def prewarm(self) -> None:
        """Start the fork server now, so even the first StartProcess skips interpreter start."""
        await self._pool.prewarm(self._python)

    async def aclose(self) -> None:
        """Kill the fork server; later launches spawn fresh helpers. Shielded."""
        await self._pool.aclose()
