"""The pure decisions of the stateful runtime (``shardwise.lifecycle.stateful``), as Hypothesis properties:
which open case applies, where reading resumes, when the commit interval is due, what the next commit is, and
how the parents' states are merged into a new child's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardwise.checkpoint.sequence import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
)
from shardwise.lifecycle.stateful import (
    OpenCase,
    commit_due,
    merge_states,
    next_commit,
    open_case,
    start_position,
)
from shardwise.state.port import Change, CommitMeta

PROPERTIES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MS = 1_000_000

INITIAL_SENTINELS = (TRIM_HORIZON, LATEST, AT_TIMESTAMP)

real_positions = st.builds(
    lambda seq, sub: ExtendedSequenceNumber(str(seq), sub),
    st.integers(min_value=0, max_value=10**40),
    st.integers(min_value=0, max_value=5),
)
initial_sentinels = st.sampled_from(INITIAL_SENTINELS)
positions = st.one_of(real_positions, initial_sentinels, st.just(SHARD_END))
lineages = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


# -- open_case -----------------------------------------------------------------------------------------------------


@PROPERTIES
@given(local=st.booleans(), parents=st.booleans(), sentinel=st.booleans())
def test_a_changelog_head_always_means_restore(local: bool, parents: bool, sentinel: bool) -> None:
    case = open_case(has_head=True, local_has_commits=local, has_parents=parents, checkpoint_is_sentinel=sentinel)
    assert case is OpenCase.RESTORE


@PROPERTIES
@given(parents=st.booleans(), sentinel=st.booleans())
def test_no_head_with_local_commits_means_republish_even_for_a_new_child(parents: bool, sentinel: bool) -> None:
    case = open_case(has_head=False, local_has_commits=True, has_parents=parents, checkpoint_is_sentinel=sentinel)
    assert case is OpenCase.REPUBLISH


def test_a_new_child_with_nothing_local_is_seeded_from_its_parents() -> None:
    case = open_case(has_head=False, local_has_commits=False, has_parents=True, checkpoint_is_sentinel=True)
    assert case is OpenCase.SEED_FROM_PARENTS


@PROPERTIES
@given(parents=st.booleans(), sentinel=st.booleans())
def test_otherwise_the_state_starts_empty(parents: bool, sentinel: bool) -> None:
    # A child already checkpointed at a real position (the application became stateful after the reshard) or a
    # shard without parents: nothing to seed from.
    if parents and sentinel:
        return
    case = open_case(has_head=False, local_has_commits=False, has_parents=parents, checkpoint_is_sentinel=sentinel)
    assert case is OpenCase.EMPTY


def test_every_case_is_reachable() -> None:
    cases = {
        open_case(has_head=h, local_has_commits=lc, has_parents=p, checkpoint_is_sentinel=s)
        for h in (False, True)
        for lc in (False, True)
        for p in (False, True)
        for s in (False, True)
    }
    assert cases == set(OpenCase)


# -- start_position ------------------------------------------------------------------------------------------------


@PROPERTIES
@given(lease=positions, store=st.one_of(st.none(), positions))
def test_reading_never_resumes_before_the_lease_checkpoint(
    lease: ExtendedSequenceNumber, store: ExtendedSequenceNumber | None
) -> None:
    resumed = start_position(lease, store)
    assert resumed >= lease
    assert resumed in (lease, store)


@PROPERTIES
@given(lease=positions, store=real_positions)
def test_a_later_store_position_wins(lease: ExtendedSequenceNumber, store: ExtendedSequenceNumber) -> None:
    resumed = start_position(lease, store)
    assert resumed == max(lease, store)
    if store > lease:
        assert resumed == store


@PROPERTIES
@given(lease=positions)
def test_no_store_position_defers_to_the_lease(lease: ExtendedSequenceNumber) -> None:
    assert start_position(lease, None) == lease


@PROPERTIES
@given(lease=positions, store=initial_sentinels)
def test_an_initial_sentinel_in_the_store_defers_to_the_lease(
    lease: ExtendedSequenceNumber, store: ExtendedSequenceNumber
) -> None:
    # A child seeded at TRIM_HORIZON while its lease says LATEST (or AT_TIMESTAMP): the lease decides, even where
    # the sentinel order would put the store's sentinel later.
    assert start_position(lease, store) == lease


def test_an_initial_sentinel_in_the_store_does_not_override_an_earlier_lease_sentinel() -> None:
    assert start_position(AT_TIMESTAMP, LATEST) == AT_TIMESTAMP
    assert start_position(TRIM_HORIZON, LATEST) == TRIM_HORIZON


@PROPERTIES
@given(lease=positions)
def test_a_store_at_shard_end_wins(lease: ExtendedSequenceNumber) -> None:
    assert start_position(lease, SHARD_END) == SHARD_END


# -- commit_due ----------------------------------------------------------------------------------------------------


@PROPERTIES
@given(
    last=st.integers(min_value=0, max_value=10**15),
    elapsed=st.integers(min_value=0, max_value=10**12),
    interval_ms=st.integers(min_value=1, max_value=10**5),
)
def test_a_commit_is_due_once_the_interval_has_passed(last: int, elapsed: int, interval_ms: int) -> None:
    assert commit_due(last, last + elapsed, interval_ms) is (elapsed >= interval_ms * MS)


@PROPERTIES
@given(last=st.integers(min_value=0, max_value=10**15), interval_ms=st.integers(min_value=1, max_value=10**5))
def test_the_commit_interval_boundary_is_exact(last: int, interval_ms: int) -> None:
    assert not commit_due(last, last + interval_ms * MS - 1, interval_ms)
    assert commit_due(last, last + interval_ms * MS, interval_ms)
    assert not commit_due(last, last, interval_ms)


# -- next_commit ---------------------------------------------------------------------------------------------------


def _lineage_source(value: str) -> tuple[Callable[[], str], list[str]]:
    calls: list[str] = []

    def new_lineage() -> str:
        calls.append(value)
        return value

    return new_lineage, calls


@PROPERTIES
@given(commit=st.integers(min_value=1, max_value=10**9), lineage=lineages, old=positions, position=positions)
def test_the_next_commit_follows_the_committed_one_in_its_lineage(
    commit: int, lineage: str, old: ExtendedSequenceNumber, position: ExtendedSequenceNumber
) -> None:
    new_lineage, calls = _lineage_source("f" * 32)
    meta = next_commit(CommitMeta(commit, old, lineage), position, new_lineage)
    assert meta == CommitMeta(commit + 1, position, lineage)
    assert calls == []  # no new lineage is drawn


@PROPERTIES
@given(lineage=lineages, position=positions)
def test_the_first_commit_is_commit_1_of_a_new_lineage(lineage: str, position: ExtendedSequenceNumber) -> None:
    new_lineage, calls = _lineage_source(lineage)
    assert next_commit(None, position, new_lineage) == CommitMeta(1, position, lineage)
    assert calls == [lineage]


# -- merge_states --------------------------------------------------------------------------------------------------

keys = st.binary(min_size=1, max_size=2)  # few distinct keys: parents often share some
values = st.binary(min_size=0, max_size=4)
parent_states = st.dictionaries(keys, st.one_of(st.none(), values), max_size=8)


def _live(state: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
    return {key: value for key, value in state.items() if value is not None}


def _changes(state: dict[bytes, bytes | None]) -> list[Change]:
    return sorted(state.items())


@PROPERTIES
@given(parents=st.lists(parent_states, min_size=1, max_size=3))
def test_the_merged_state_is_the_union_and_the_later_parent_wins(parents: list[dict[bytes, bytes | None]]) -> None:
    merged, conflicts = merge_states([_changes(p) for p in parents], None)
    expected: dict[bytes, bytes] = {}
    for parent in parents:
        expected.update(_live(parent))  # later parents overwrite
    assert merged == expected
    holders = Counter(key for parent in parents for key in _live(parent))
    assert Counter(conflicts) == Counter({key: n - 1 for key, n in holders.items() if n > 1})


@PROPERTIES
@given(left=parent_states, right=parent_states)
def test_a_merge_function_decides_the_keys_both_parents_hold(
    left: dict[bytes, bytes | None], right: dict[bytes, bytes | None]
) -> None:
    calls: list[tuple[bytes, bytes, bytes]] = []

    def combine(key: bytes, a: bytes, b: bytes) -> bytes:
        calls.append((key, a, b))
        return b"<" + a + b"|" + b + b">"

    merged, conflicts = merge_states([_changes(left), _changes(right)], combine)
    live_left, live_right = _live(left), _live(right)
    shared = live_left.keys() & live_right.keys()
    assert sorted(calls) == sorted((key, live_left[key], live_right[key]) for key in shared)
    assert sorted(conflicts) == sorted(shared)
    assert merged.keys() == live_left.keys() | live_right.keys()
    for key, value in merged.items():
        if key in shared:
            assert value == b"<" + live_left[key] + b"|" + live_right[key] + b">"
        else:
            assert value == live_left.get(key, live_right.get(key))


@PROPERTIES
@given(state=parent_states)
def test_tombstones_are_ignored(state: dict[bytes, bytes | None]) -> None:
    # A key one parent deleted neither hides the other parent's value nor counts as a conflict.
    deleted: dict[bytes, bytes | None] = dict.fromkeys(state)
    calls: list[bytes] = []

    def combine(key: bytes, a: bytes, b: bytes) -> bytes:
        calls.append(key)
        return a + b

    for parents in ([_changes(deleted), _changes(state)], [_changes(state), _changes(deleted)]):
        merged, conflicts = merge_states(parents, combine)
        assert merged == _live(state)
        assert conflicts == []
    assert calls == []


def test_a_merge_of_two_parents_example() -> None:
    left: list[Change] = [(b"a", b"1"), (b"b", b"2"), (b"gone", None)]
    right: list[Change] = [(b"b", b"20"), (b"c", b"30"), (b"gone", None)]
    assert merge_states([left, right], None) == ({b"a": b"1", b"b": b"20", b"c": b"30"}, [b"b"])
    assert merge_states([left, right], lambda _k, a, b: a + b) == ({b"a": b"1", b"b": b"220", b"c": b"30"}, [b"b"])
    assert merge_states([], None) == ({}, [])
