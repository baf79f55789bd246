"""The shard-consumer transition table (KCL's ConsumerStates): every legal move, every illegal one, and a property."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardwise.lifecycle.states import ConsumerEvent, ConsumerState, transition

S = ConsumerState
E = ConsumerEvent

#: The complete specification, written out independently of the implementation's table.
EXPECTED: dict[tuple[ConsumerState, ConsumerEvent], ConsumerState] = {
    # the forward path
    (S.WAITING_ON_PARENT_SHARDS, E.PARENTS_DONE): S.INITIALIZING,
    (S.INITIALIZING, E.INITIALIZED): S.PROCESSING,
    (S.PROCESSING, E.SHARD_ENDED): S.SHUTTING_DOWN,
    (S.INITIALIZING, E.SHARD_ENDED): S.SHUTTING_DOWN,  # lease taken already at SHARD_END
    (S.PROCESSING, E.SHUTDOWN_REQUESTED): S.SHUTDOWN_REQUESTED,
    (S.SHUTDOWN_REQUESTED, E.SHUTDOWN_NOTIFIED): S.SHUTTING_DOWN,
    (S.SHUTTING_DOWN, E.SHUTDOWN_DONE): S.SHUTDOWN_COMPLETE,
    # lease loss from every state
    (S.WAITING_ON_PARENT_SHARDS, E.LEASE_LOST): S.SHUTDOWN_COMPLETE,
    (S.INITIALIZING, E.LEASE_LOST): S.SHUTDOWN_COMPLETE,
    (S.PROCESSING, E.LEASE_LOST): S.SHUTTING_DOWN,
    (S.SHUTDOWN_REQUESTED, E.LEASE_LOST): S.SHUTTING_DOWN,
    (S.SHUTTING_DOWN, E.LEASE_LOST): S.SHUTTING_DOWN,
    (S.SHUTDOWN_COMPLETE, E.LEASE_LOST): S.SHUTDOWN_COMPLETE,
    # a shutdown request from every state
    (S.WAITING_ON_PARENT_SHARDS, E.SHUTDOWN_REQUESTED): S.SHUTDOWN_COMPLETE,
    (S.INITIALIZING, E.SHUTDOWN_REQUESTED): S.SHUTDOWN_COMPLETE,
    (S.SHUTDOWN_REQUESTED, E.SHUTDOWN_REQUESTED): S.SHUTDOWN_REQUESTED,
    (S.SHUTTING_DOWN, E.SHUTDOWN_REQUESTED): S.SHUTTING_DOWN,
    (S.SHUTDOWN_COMPLETE, E.SHUTDOWN_REQUESTED): S.SHUTDOWN_COMPLETE,
}

#: The only moves into SHUTDOWN_COMPLETE from another state: a finished shutdown, or leaving before the
#: processor was initialized (nothing to notify).
INTO_COMPLETE = {
    (S.SHUTTING_DOWN, E.SHUTDOWN_DONE),
    (S.WAITING_ON_PARENT_SHARDS, E.LEASE_LOST),
    (S.WAITING_ON_PARENT_SHARDS, E.SHUTDOWN_REQUESTED),
    (S.INITIALIZING, E.LEASE_LOST),
    (S.INITIALIZING, E.SHUTDOWN_REQUESTED),
}

ALL_PAIRS = list(itertools.product(S, E))
LEGAL = sorted(EXPECTED, key=lambda pair: (pair[0].value, pair[1].value))
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in EXPECTED]


@pytest.mark.parametrize(("state", "event"), LEGAL, ids=lambda v: v.value)
def test_legal_transitions(state: ConsumerState, event: ConsumerEvent) -> None:
    assert transition(state, event) is EXPECTED[(state, event)]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda v: v.value)
def test_illegal_events_raise_value_error(state: ConsumerState, event: ConsumerEvent) -> None:
    with pytest.raises(ValueError, match=f"{state.value} cannot handle {event.value}"):
        transition(state, event)


def test_every_state_handles_lease_loss_and_shutdown_requests() -> None:
    for state in S:
        transition(state, E.LEASE_LOST)
        transition(state, E.SHUTDOWN_REQUESTED)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            [E.PARENTS_DONE, E.INITIALIZED, E.SHARD_ENDED, E.SHUTDOWN_DONE],
            id="shard-end",
        ),
        pytest.param(
            [E.PARENTS_DONE, E.INITIALIZED, E.SHUTDOWN_REQUESTED, E.SHUTDOWN_NOTIFIED, E.SHUTDOWN_DONE],
            id="graceful-shutdown",
        ),
        pytest.param([E.PARENTS_DONE, E.INITIALIZED, E.LEASE_LOST, E.SHUTDOWN_DONE], id="lease-lost-processing"),
        pytest.param(
            [E.PARENTS_DONE, E.INITIALIZED, E.SHUTDOWN_REQUESTED, E.LEASE_LOST, E.SHUTDOWN_DONE],
            id="lease-lost-while-shutdown-requested",
        ),
        pytest.param([E.PARENTS_DONE, E.SHARD_ENDED, E.SHUTDOWN_DONE], id="taken-at-shard-end"),
        pytest.param([E.LEASE_LOST], id="lease-lost-waiting"),
        pytest.param([E.SHUTDOWN_REQUESTED], id="shutdown-waiting"),
        pytest.param([E.PARENTS_DONE, E.LEASE_LOST], id="lease-lost-initializing"),
        pytest.param([E.PARENTS_DONE, E.SHUTDOWN_REQUESTED], id="shutdown-initializing"),
        pytest.param(
            [E.PARENTS_DONE, E.INITIALIZED, E.SHARD_ENDED, E.LEASE_LOST, E.SHUTDOWN_REQUESTED, E.SHUTDOWN_DONE],
            id="lease-lost-and-shutdown-while-shutting-down",
        ),
    ],
)
def test_documented_paths_end_in_shutdown_complete(path: list[ConsumerEvent]) -> None:
    state = S.WAITING_ON_PARENT_SHARDS
    for event in path:
        state = transition(state, event)
    assert state is S.SHUTDOWN_COMPLETE


@given(st.lists(st.sampled_from(list(E)), max_size=40))
def test_any_event_sequence_stays_on_documented_paths(events: list[ConsumerEvent]) -> None:
    state = S.WAITING_ON_PARENT_SHARDS
    seen = [state]
    for event in events:
        if (state, event) not in EXPECTED:
            with pytest.raises(ValueError, match="cannot handle"):
                transition(state, event)
            continue
        new_state = transition(state, event)
        if state is S.SHUTDOWN_COMPLETE:
            assert new_state is S.SHUTDOWN_COMPLETE, "left SHUTDOWN_COMPLETE"
        elif new_state is S.SHUTDOWN_COMPLETE:
            assert (state, event) in INTO_COMPLETE
        if new_state is S.PROCESSING:
            assert (state, event) == (S.INITIALIZING, E.INITIALIZED)
        if new_state is S.SHUTDOWN_REQUESTED and state is not S.SHUTDOWN_REQUESTED:
            assert state is S.PROCESSING
        state = new_state
        seen.append(state)
    # Past states are never revisited once left (the machine only moves forward).
    order = list(S)
    ranks = [order.index(s) for s in seen]
    assert ranks == sorted(ranks)
