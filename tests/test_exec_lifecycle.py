"""The process state machine, every (state, event) pair, with no event loop."""

from __future__ import annotations

import itertools

import pytest

from trinit.errors import FailedPrecondition
from trinit.exec import Event, InvalidTransition, Lifecycle, State
from trinit.exec._lifecycle import TRANSITIONS

EXPECTED: dict[tuple[State, Event], State] = {
    (State.CREATED, Event.START_REQUESTED): State.STARTING,
    (State.CREATED, Event.DELETE): State.DELETED,
    (State.STARTING, Event.STARTED_OK): State.STARTED,
    (State.STARTING, Event.START_FAILED): State.FAILED,
    (State.STARTED, Event.EXITED): State.EXITED,
    (State.STARTED, Event.DELETE): State.DELETED,
    (State.EXITED, Event.DELETE): State.DELETED,
    (State.FAILED, Event.DELETE): State.DELETED,
}

# Shortest event path from CREATED to each state.
PATH_TO: dict[State, list[Event]] = {
    State.CREATED: [],
    State.STARTING: [Event.START_REQUESTED],
    State.STARTED: [Event.START_REQUESTED, Event.STARTED_OK],
    State.EXITED: [Event.START_REQUESTED, Event.STARTED_OK, Event.EXITED],
    State.FAILED: [Event.START_REQUESTED, Event.START_FAILED],
    State.DELETED: [Event.DELETE],
}


def lifecycle_in(state: State) -> Lifecycle:
    lifecycle = Lifecycle()
    for event in PATH_TO[state]:
        lifecycle.apply(event)
    assert lifecycle.state is state
    return lifecycle


def test_table_matches_expected() -> None:
    table = {(s, e): t for s, edges in TRANSITIONS.items() for e, t in edges.items()}
    assert table == EXPECTED
    assert set(TRANSITIONS) == set(State)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)))
def test_every_pair(state: State, event: Event) -> None:
    lifecycle = lifecycle_in(state)
    if (state, event) in EXPECTED:
        assert lifecycle.can_apply(event)
        assert lifecycle.apply(event) is EXPECTED[state, event]
        assert lifecycle.state is EXPECTED[state, event]
    else:
        assert not lifecycle.can_apply(event)
        with pytest.raises(InvalidTransition) as info:
            lifecycle.apply(event)
        assert lifecycle.state is state  # unchanged
        assert info.value.state is state and info.value.event is event
        assert isinstance(info.value, FailedPrecondition)
        assert info.value.message == f"process is {state.value}: cannot apply '{event.value}'"


def test_new_lifecycle_is_created() -> None:
    assert Lifecycle().state is State.CREATED


def test_deleted_is_terminal() -> None:
    assert TRANSITIONS[State.DELETED] == {}


def test_with_prefix_keeps_code() -> None:
    error = InvalidTransition(State.STARTED, Event.START_REQUESTED)
    prefixed = error.with_prefix("startProcess")
    assert isinstance(prefixed, FailedPrecondition)
    assert prefixed.message == "startProcess: process is started: cannot apply 'start requested'"
