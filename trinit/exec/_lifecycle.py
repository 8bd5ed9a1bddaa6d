"""The state machine of one container process (init or exec), with no I/O at all.

Theory of operation: the owner of a process (the nursery code) feeds events into a
:class:`Lifecycle` as things happen; the table :data:`TRANSITIONS` is the whole policy. An
event that the table does not allow in the current state raises :class:`InvalidTransition`
and leaves the state unchanged, so a caller can map it to a status and carry on.

::

    CREATED --START_REQUESTED--> STARTING --STARTED_OK--> STARTED --EXITED--> EXITED
       |                            |                        |                  |
       |                        START_FAILED              DELETE             DELETE
     DELETE                         v                        v                  v
       +----------------------->  FAILED --DELETE-------> DELETED <-------------+

Why these edges:
* Starting twice is illegal (vminitd answers INTERNAL); a failed start is final until delete.
* DELETE is legal in every settled state: vminitd's DeleteProcess neither requires an exit
  nor kills an exec. It is illegal while STARTING, because the launch still owns the pipes
  and would report into a deleted process.
* EXITED is only accepted in STARTED. A container process can exit before the launch has
  read its error pipe to EOF; the owner keeps that status (the reaper table holds it) and
  applies EXITED after STARTED_OK.

This module imports neither trio nor os: it is tested exhaustively without an event loop.
"""

from __future__ import annotations

import enum

from trinit.errors import FailedPrecondition


class State(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    STARTED = "started"
    EXITED = "exited"
    DELETED = "deleted"
    FAILED = "failed"


class Event(enum.Enum):
    START_REQUESTED = "start requested"
    STARTED_OK = "started ok"
    START_FAILED = "start failed"
    EXITED = "exited"
    DELETE = "delete"


TRANSITIONS: dict[State, dict[Event, State]] = {
    State.CREATED: {
        Event.START_REQUESTED: State.STARTING,
        Event.DELETE: State.DELETED,
    },
    State.STARTING: {
        Event.STARTED_OK: State.STARTED,
        Event.START_FAILED: State.FAILED,
    },
    State.STARTED: {
        Event.EXITED: State.EXITED,
        Event.DELETE: State.DELETED,
    },
    State.EXITED: {
        Event.DELETE: State.DELETED,
    },
    State.FAILED: {
        Event.DELETE: State.DELETED,
    },
    State.DELETED: {},
}


class InvalidTransition(FailedPrecondition):
    """An event that the current state does not allow; the state is left unchanged."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"process is {state.value}: cannot apply '{event.value}'")
        self.state = state
        self.event = event

    def with_prefix(self, prefix: str) -> FailedPrecondition:
        return FailedPrecondition(f"{prefix}: {self.message}")


class Lifecycle:
    """Current state of one process; change it only through :meth:`apply`."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = State.CREATED

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
        return new_state

    def __repr__(self) -> str:
        return f"<Lifecycle {self._state.value}>"
