"""The process state machine: every (state, event) pair with no event loop, and random event
sequences (hypothesis) that never reach an undefined state or settle a process twice."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinit.errors import FailedPrecondition
from trinit.exec import LIVE, SETTLED, Event, InvalidTransition, Lifecycle, State
from trinit.exec._lifecycle import TRANSITIONS

EXPECTED: dict[tuple[State, Event], State] = {
    (State.CREATED, Event.START_REQUESTED): State.STARTING,
    (State.CREATED, Event.ABANDON): State.ABANDONED,
    (State.CREATED, Event.FAULT): State.FAULTED,
    (State.CREATED, Event.DELETE): State.DELETED,
    (State.STARTING, Event.STARTED_OK): State.RUNNING,
    (State.STARTING, Event.START_FAILED): State.ABANDONED,
    (State.RUNNING, Event.REAPED): State.REAPED,
    (State.RUNNING, Event.FAULT): State.FAULTED,
    (State.RUNNING, Event.DELETE): State.DELETED,
    (State.REAPED, Event.DRAINED): State.EXITED,
    (State.REAPED, Event.FAULT): State.FAULTED,
    (State.EXITED, Event.DELETE): State.DELETED,
    (State.ABANDONED, Event.DELETE): State.DELETED,
    (State.FAULTED, Event.DELETE): State.DELETED,
}

# Shortest event path from CREATED to each state.
PATH_TO: dict[State, list[Event]] = {
    State.CREATED: [],
    State.STARTING: [Event.START_REQUESTED],
    State.RUNNING: [Event.START_REQUESTED, Event.STARTED_OK],
    State.REAPED: [Event.START_REQUESTED, Event.STARTED_OK, Event.REAPED],
    State.EXITED: [Event.START_REQUESTED, Event.STARTED_OK, Event.REAPED, Event.DRAINED],
    State.ABANDONED: [Event.ABANDON],
    State.FAULTED: [Event.FAULT],
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
    changes: list[State] = []
    lifecycle = lifecycle_in(state)
    lifecycle._on_change = changes.append  # observe only this step
    if (state, event) in EXPECTED:
        assert lifecycle.can_apply(event)
        assert lifecycle.apply(event) is EXPECTED[state, event]
        assert lifecycle.state is EXPECTED[state, event]
        assert changes == [EXPECTED[state, event]]
    else:
        assert not lifecycle.can_apply(event)
        with pytest.raises(InvalidTransition) as info:
            lifecycle.apply(event)
        assert lifecycle.state is state  # unchanged
        assert changes == []  # and nobody was told of a change
        assert info.value.state is state and info.value.event is event
        assert isinstance(info.value, FailedPrecondition)
        assert info.value.message == f"process is {state.value}: cannot apply '{event.value}'"


def test_new_lifecycle_is_created() -> None:
    assert Lifecycle().state is State.CREATED


def test_deleted_is_terminal_and_settled_states_only_delete() -> None:
    assert TRANSITIONS[State.DELETED] == {}
    for state in SETTLED:
        assert set(TRANSITIONS[state]) == {Event.DELETE}


def test_live_states_are_the_ones_a_child_can_be_in_unreaped() -> None:
    assert LIVE == {State.STARTING, State.RUNNING}


def test_with_prefix_keeps_code() -> None:
    error = InvalidTransition(State.RUNNING, Event.START_REQUESTED)
    prefixed = error.with_prefix("startProcess")
    assert isinstance(prefixed, FailedPrecondition)
    assert prefixed.message == "startProcess: process is running: cannot apply 'start requested'"


@settings(deadline=None)  # a loaded machine may stall one example; the test is not timed
@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_random_event_sequences(events: list[Event]) -> None:
    """Whatever the owner feeds it: the state is always one of the table's, a refused event
    changes nothing, every exit is published (a settled state entered) at most once, and a
    process that settled can only be deleted."""
    entered: list[State] = []
    lifecycle = Lifecycle(on_change=entered.append)
    for event in events:
        before = lifecycle.state
        try:
            after = lifecycle.apply(event)
        except InvalidTransition:
            assert lifecycle.state is before
            continue
        assert after is TRANSITIONS[before][event]
        assert lifecycle.state in TRANSITIONS
    assert sum(state in SETTLED for state in entered) <= 1
    assert entered.count(State.DELETED) <= 1
    for earlier, later in itertools.pairwise(entered):
        if earlier in SETTLED:
            assert later is State.DELETED
