"""The state machine of one container process (init or exec), with no I/O at all.

Theory of operation: the owner of a process (``trinit.nursery``'s ManagedProcess) feeds
events into a :class:`Lifecycle` as things happen; the table :data:`TRANSITIONS` is the whole
policy and the state is the only truth about the process (waiters wait for states, nothing
keeps a flag beside it). An event the table does not allow in the current state raises
:class:`InvalidTransition` and leaves the state unchanged, so a caller can map it to a status
and carry on.

::

    CREATED --START_REQUESTED--> STARTING --STARTED_OK--> RUNNING --REAPED--> REAPED
       |                             |                       |                  |
    ABANDON                     START_FAILED                 |               DRAINED
       v                             v                       |                  v
    ABANDONED <----------------------+                       |               EXITED
                                                             |
    FAULT (from CREATED, RUNNING, REAPED) -> FAULTED         |
    DELETE (from CREATED, RUNNING and every settled state) --+--> DELETED

States:
* CREATED: stdio connected, nothing launched yet.
* STARTING: the exec helper is launching it; the launch owns the pipes.
* RUNNING: it has a pid and the reaper has not reported it.
* REAPED: the reaper reported its exit; its output is still draining to the host (bounded),
  so the exit is not published yet. Its pid may already belong to another process: nothing
  may signal it any more.
* EXITED, ABANDONED, FAULTED are *settled*: the outcome waiters get. EXITED carries the exit
  status; ABANDONED means it can never run (its start failed, or its container's init was
  gone first: vminitd would block WaitProcess forever); FAULTED means its container failed
  with an unexpected error (waiters get INTERNAL).
* DELETED: forgotten by its container; terminal.

Why these edges:
* Starting twice is illegal (vminitd answers INTERNAL); a failed start is final until delete.
* DELETE is legal in CREATED and in the settled states, as vminitd's DeleteProcess neither
  requires an exit nor kills an exec. From RUNNING only when teardown gave up on a process
  that would not die. Never while STARTING (the launch still owns the pipes and would report
  into a deleted process) or REAPED (the drain publishes the exit first).
* REAPED is only accepted in RUNNING. A process can be reaped before its launch has read the
  helper's error pipe to EOF; the owner keeps that status (the reaper holds it) and applies
  REAPED right after STARTED_OK.
* A process settles at most once: no edge leaves a settled state except DELETE, so every
  exit is published exactly once.

This module imports neither trio nor os: it is tested exhaustively without an event loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from trinit.errors import FailedPrecondition


class State(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    REAPED = "reaped"
    EXITED = "exited"
    ABANDONED = "abandoned"
    FAULTED = "faulted"
    DELETED = "deleted"


class Event(enum.Enum):
    START_REQUESTED = "start requested"
    STARTED_OK = "started ok"
    START_FAILED = "start failed"
    REAPED = "reaped"
    DRAINED = "drained"
    ABANDON = "abandon"
    FAULT = "fault"
    DELETE = "delete"


TRANSITIONS: dict[State, dict[Event, State]] = {
    State.CREATED: {
        Event.START_REQUESTED: State.STARTING,
        Event.ABANDON: State.ABANDONED,
        Event.FAULT: State.FAULTED,
        Event.DELETE: State.DELETED,
    },
    State.STARTING: {
        Event.STARTED_OK: State.RUNNING,
        Event.START_FAILED: State.ABANDONED,
    },
    State.RUNNING: {
        Event.REAPED: State.REAPED,
        Event.FAULT: State.FAULTED,
        Event.DELETE: State.DELETED,
    },
    State.REAPED: {
        Event.DRAINED: State.EXITED,
        Event.FAULT: State.FAULTED,
    },
    State.EXITED: {Event.DELETE: State.DELETED},
    State.ABANDONED: {Event.DELETE: State.DELETED},
    State.FAULTED: {Event.DELETE: State.DELETED},
    State.DELETED: {},
}

SETTLED: frozenset[State] = frozenset({State.EXITED, State.ABANDONED, State.FAULTED})
"""The outcomes a waiter receives."""

LIVE: frozenset[State] = frozenset({State.STARTING, State.RUNNING})
"""A child may exist and has not been reaped."""


class InvalidTransition(FailedPrecondition):
    """An event that the current state does not allow; the state is left unchanged."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"process is {state.value}: cannot apply '{event.value}'")
        self.state = state
        self.event = event

    def with_prefix(self, prefix: str) -> FailedPrecondition:
        return FailedPrecondition(f"{prefix}: {self.message}")


class Lifecycle:
    """Current state of one process; change it only through :meth:`apply`.

    ``on_change(state)`` is called after every transition (the owner uses it to wake the
    tasks waiting for a state); it must not raise.
    """

    __slots__ = ("_on_change", "_state")

    def __init__(self, on_change: Callable[[State], None] | None = None) -> None:
        self._state = State.CREATED
        self._on_change = on_change

    @property
    def state(self) -> State:
        return self._state

    def can_apply(self, event: Event) -> bool:
        return event in TRANSITIONS[self._state]

    def apply(self, event: Event) -> State:
        """Move to the state the table gives for ``event``; raise InvalidTransition if none."""
        try:
            new_state = TRANSITIONS[self._state][event]
        except KeyError:
            raise InvalidTransition(self._state, event) from None
        self._state = new_state
        if self._on_change is not None:
            self._on_change(new_state)
        return new_state

    def __repr__(self) -> str:
        return f"<Lifecycle {self._state.value}>"
