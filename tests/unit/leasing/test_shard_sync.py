"""Shard sync: KCL's lease-creation rules (pure), child leases, clean-up, hole audit, and the I/O shell."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.backends.sqlite.stream import LocalStreamStore, shard_id_for_index
from shardwise.checkpoint.sequence import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
)
from shardwise.errors import ConfigurationError, InvalidStateError
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.leases.model import Lease
from shardwise.leasing.shard_sync import (
    HoleAuditor,
    InitialPosition,
    InitialPositionKind,
    ShardSyncer,
    child_leases,
    deferred_merge_children,
    hash_range_holes,
    inconsistent_shard_ids,
    leases_to_clean_up,
    leases_to_create,
    shards_at_initial_position,
)
from shardwise.retrieval.model import ChildShard, Shard, ShardFilter, ShardFilterType

FULL = HashKeyRange(0, MAX_HASH_KEY)
SEQ_START = 10**20
SEQ_ONE = ExtendedSequenceNumber("1")
SEQ_THREE = ExtendedSequenceNumber("3")
TS = datetime(2026, 1, 1, tzinfo=timezone.utc)
POSITIONS = [InitialPosition.latest(), InitialPosition.trim_horizon(), InitialPosition.at_timestamp(TS)]


def sid(i: int) -> str:
    return shard_id_for_index(i)


def seq(n: int) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(str(n))


def split_range(r: HashKeyRange, parts: int) -> list[HashKeyRange]:
    size = (r.end - r.start + 1) // parts
    bounds = [r.start + i * size for i in range(parts)] + [r.end + 1]
    return [HashKeyRange(a, b - 1) for a, b in itertools.pairwise(bounds)]


def union(*ranges: HashKeyRange) -> HashKeyRange:
    return HashKeyRange(min(r.start for r in ranges), max(r.end for r in ranges))


def make_shard(
    i: int, hash_range: HashKeyRange, start: int, end: int | None = None, parents: Sequence[int] = ()
) -> Shard:
    return Shard(
        shard_id=sid(i),
        hash_key_range=hash_range,
        starting_sequence_number=str(start),
        ending_sequence_number=None if end is None else str(end),
        parent_shard_id=sid(parents[0]) if parents else None,
        adjacent_parent_shard_id=sid(parents[1]) if len(parents) > 1 else None,
    )


def lease_for(shard: Shard, checkpoint: ExtendedSequenceNumber = SEQ_ONE) -> Lease:
    return Lease(
        lease_key=shard.shard_id,
        checkpoint=checkpoint,
        parent_shard_ids=frozenset(shard.parent_shard_ids),
        hash_key_range=shard.hash_key_range,
    )


def keys(leases: Sequence[Lease]) -> list[str]:
    return [lease.lease_key for lease in leases]


# The hierarchy of KCL's docs/lease-lifecycle.md (and the HierarchicalShardSyncer javadoc):
#
#   0 1 2 3 4   5    - shards till epoch 102
#   \ / \ / |   |
#    6   7  4   5    - shards from epoch 103 - 205
#    \  /   |  / \
#      8    4 9  10  - shards from epoch 206+ (still open)
R = split_range(FULL, 6)
R9, R10 = split_range(R[5], 2)
EXAMPLE = [
    make_shard(0, R[0], 1000, 1999),
    make_shard(1, R[1], 1001, 1999),
    make_shard(2, R[2], 1002, 1999),
    make_shard(3, R[3], 1003, 1999),
    make_shard(4, R[4], 1004),
    make_shard(5, R[5], 1005, 2999),
    make_shard(6, union(R[0], R[1]), 2000, 2999, parents=(0, 1)),
    make_shard(7, union(R[2], R[3]), 2001, 2999, parents=(2, 3)),
    make_shard(8, union(R[0], R[3]), 3000, parents=(6, 7)),
    make_shard(9, R9, 3001, parents=(5,)),
    make_shard(10, R10, 3002, parents=(5,)),
]
BY_ID = {s.shard_id: s for s in EXAMPLE}


def example_leases(*indexes: int) -> list[Lease]:
    return [lease_for(BY_ID[sid(i)]) for i in indexes]


# -- InitialPosition ---------------------------------------------------------------------------------------


def test_initial_position_checkpoints_and_filters() -> None:
    assert InitialPosition.latest().checkpoint == LATEST
    assert InitialPosition.trim_horizon().checkpoint == TRIM_HORIZON
    assert InitialPosition.at_timestamp(TS).checkpoint == AT_TIMESTAMP
    assert InitialPosition.latest().shard_filter == ShardFilter(ShardFilterType.AT_LATEST)
    assert InitialPosition.trim_horizon().shard_filter == ShardFilter(ShardFilterType.AT_TRIM_HORIZON)
    assert InitialPosition.at_timestamp(TS).shard_filter == ShardFilter(ShardFilterType.AT_TIMESTAMP, timestamp=TS)
    assert InitialPosition.at_timestamp(TS).kind is InitialPositionKind.AT_TIMESTAMP


def test_initial_position_validation() -> None:
    with pytest.raises(ConfigurationError, match="needs a timestamp"):
        InitialPosition(InitialPositionKind.AT_TIMESTAMP)
    with pytest.raises(ConfigurationError, match="needs a timestamp"):
        InitialPosition(InitialPositionKind.LATEST, TS)
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        InitialPosition.at_timestamp(datetime(2026, 1, 1))
    with pytest.raises(ConfigurationError, match="must be one of"):
        InitialPosition("LATEST")  # type: ignore[arg-type]


# -- empty lease table -------------------------------------------------------------------------------------


def test_empty_table_latest_creates_the_open_shards() -> None:
    created = leases_to_create(EXAMPLE, [], InitialPosition.latest())
    assert keys(created) == [sid(4), sid(8), sid(9), sid(10)]  # starting sequence number order
    assert all(lease.checkpoint == LATEST for lease in created)
    by_key = {lease.lease_key: lease for lease in created}
    assert by_key[sid(8)].parent_shard_ids == {sid(6), sid(7)}
    assert by_key[sid(9)].parent_shard_ids == {sid(5)}
    assert by_key[sid(4)].parent_shard_ids == frozenset()
    assert by_key[sid(8)].hash_key_range == union(R[0], R[3])
    assert all(lease.lease_owner is None and lease.lease_counter == 0 for lease in created)


@pytest.mark.parametrize(
    ("position", "checkpoint"),
    [(InitialPosition.trim_horizon(), TRIM_HORIZON), (InitialPosition.at_timestamp(TS), AT_TIMESTAMP)],
)
def test_empty_table_trim_horizon_and_at_timestamp_create_the_oldest_generation(
    position: InitialPosition, checkpoint: ExtendedSequenceNumber
) -> None:
    created = leases_to_create(EXAMPLE, [], position)
    assert keys(created) == [sid(i) for i in range(6)]
    assert all(lease.checkpoint == checkpoint for lease in created)


def test_empty_table_after_trimming_uses_the_oldest_retained_generation() -> None:
    # Shards 0-3 aged out of the stream: 6 and 7 are now the oldest retained generation.
    listing = [s for s in EXAMPLE if s.shard_id not in {sid(0), sid(1), sid(2), sid(3)}]
    created = leases_to_create(listing, [], InitialPosition.trim_horizon())
    assert keys(created) == [sid(4), sid(5), sid(6), sid(7)]
    # Parent ids name every parent the shard reports, listed or not (KCL's newKCLLease).
    assert {lease.lease_key: lease for lease in created}[sid(6)].parent_shard_ids == {sid(0), sid(1)}


def test_empty_table_orders_by_starting_sequence_number_then_shard_id() -> None:
    a, b = split_range(FULL, 2)
    shards = [make_shard(3, b, 50, parents=(1,)), make_shard(2, a, 50, parents=(1,)), make_shard(1, FULL, 9, 49)]
    assert keys(leases_to_create(shards, [], InitialPosition.latest())) == [sid(2), sid(3)]
    # Integer order, not string order: "9" < "10".
    shards = [make_shard(1, a, 10), make_shard(2, b, 9)]
    assert keys(leases_to_create(shards, [], InitialPosition.latest())) == [sid(2), sid(1)]


def test_shards_at_initial_position_is_stable_on_a_service_filtered_listing() -> None:
    for position in POSITIONS:
        chosen = shards_at_initial_position(EXAMPLE, position)
        assert shards_at_initial_position(chosen, position) == chosen


def test_inconsistent_shards_are_skipped() -> None:
    a, b = split_range(FULL, 2)
    # A listing taken mid-reshard: the parent still shows open while its children already exist.
    shards = [make_shard(0, FULL, 1), make_shard(1, a, 5, parents=(0,)), make_shard(2, b, 5, parents=(0,))]
    assert inconsistent_shard_ids(shards) == {sid(1), sid(2)}
    assert keys(leases_to_create(shards, [], InitialPosition.latest())) == [sid(0)]
    other = lease_for(make_shard(99, a, 1))
    assert keys(leases_to_create(shards, [other], InitialPosition.latest())) == [sid(0)]


# -- non-empty lease table: the hierarchical rule ----------------------------------------------------------


def test_lease_lifecycle_example_latest_creates_6() -> None:
    created = leases_to_create(EXAMPLE, example_leases(4, 5, 7), InitialPosition.latest())
    assert keys(created) == [sid(6)]
    # 6 is the parent of 8 whose own lineage has no lease: KCL creates it at the initial position.
    assert created[0].checkpoint == LATEST
    assert created[0].parent_shard_ids == {sid(0), sid(1)}
    assert created[0].hash_key_range == union(R[0], R[1])


def test_lease_lifecycle_example_trim_horizon_creates_0_and_1() -> None:
    created = leases_to_create(EXAMPLE, example_leases(4, 5, 7), InitialPosition.trim_horizon())
    assert keys(created) == [sid(0), sid(1)]
    assert all(lease.checkpoint == TRIM_HORIZON for lease in created)


def test_lease_lifecycle_example_at_timestamp_creates_0_and_1() -> None:
    created = leases_to_create(EXAMPLE, example_leases(4, 5, 7), InitialPosition.at_timestamp(TS))
    assert keys(created) == [sid(0), sid(1)]
    assert all(lease.checkpoint == AT_TIMESTAMP for lease in created)


@pytest.mark.parametrize("position", POSITIONS)
def test_lease_lifecycle_example_is_idempotent(position: InitialPosition) -> None:
    leases = example_leases(4, 5, 7)
    created = leases_to_create(EXAMPLE, leases, position)
    assert leases_to_create(EXAMPLE, leases + created, position) == []


def test_children_of_a_leased_shard_wait_for_shard_end() -> None:
    # 5 has a lease: its open children 9 and 10 get theirs when 5 reaches SHARD_END, not from a sync.
    leases = example_leases(4, 5, 8)
    for position in POSITIONS:
        assert leases_to_create(EXAMPLE, leases, position) == []


def test_only_the_first_missing_level_is_created() -> None:
    # X split into A and B, then A split into C and D. Only X has a lease: nothing to create (A comes at
    # X's SHARD_END, C and D at A's).
    a, b = split_range(FULL, 2)
    c, d = split_range(a, 2)
    shards = [
        make_shard(0, FULL, 1, 9),
        make_shard(1, a, 10, 19, parents=(0,)),
        make_shard(2, b, 10, parents=(0,)),
        make_shard(3, c, 20, parents=(1,)),
        make_shard(4, d, 20, parents=(1,)),
    ]
    for position in POSITIONS:
        assert leases_to_create(shards, [lease_for(shards[0])], position) == []
    # With only B's lease, TRIM_HORIZON goes back to X (the root of A's lineage); LATEST starts the open
    # shards C and D where they are.
    leases = [lease_for(shards[2])]
    th = leases_to_create(shards, leases, InitialPosition.trim_horizon())
    assert [(x.lease_key, x.checkpoint) for x in th] == [(sid(0), TRIM_HORIZON)]
    latest = leases_to_create(shards, leases, InitialPosition.latest())
    assert [(x.lease_key, x.checkpoint) for x in latest] == [(sid(3), LATEST), (sid(4), LATEST)]


def test_unrelated_new_shard_is_created_at_the_initial_position() -> None:
    a, b = split_range(FULL, 2)
    # The parent of shard 2 expired from the stream: shard 2 has no listed ancestor.
    shards = [make_shard(1, a, 1), make_shard(2, b, 5, parents=(0,))]
    for position in POSITIONS:
        created = leases_to_create(shards, [lease_for(shards[0])], position)
        assert [(x.lease_key, x.checkpoint) for x in created] == [(sid(2), position.checkpoint)]
        assert created[0].parent_shard_ids == {sid(0)}


def test_merge_with_a_partly_leased_lineage() -> None:
    # 0 and 1 merged into 2; only 1 has a lease. LATEST: 0 is created at LATEST (KCL's documented case);
    # TRIM_HORIZON / AT_TIMESTAMP: 0 is a root to read from the start.
    a, b = split_range(FULL, 2)
    shards = [make_shard(0, a, 1, 9), make_shard(1, b, 2, 9), make_shard(2, FULL, 10, parents=(0, 1))]
    leases = [lease_for(shards[1])]
    expected = {"LATEST": LATEST, "TRIM_HORIZON": TRIM_HORIZON, "AT_TIMESTAMP": AT_TIMESTAMP}
    for position in POSITIONS:
        created = leases_to_create(shards, leases, position)
        assert [(x.lease_key, x.checkpoint) for x in created] == [(sid(0), expected[position.kind.value])]


def test_long_lineage_does_not_recurse() -> None:
    # 3000 generations of one shard re-split and merged back: no RecursionError.
    shards = [make_shard(0, FULL, 1, 2)]
    n = 1
    a, b = split_range(FULL, 2)
    for gen in range(1500):
        parent = n - 1
        shards.append(make_shard(n, a, 10 * gen + 3, 10 * gen + 4, parents=(parent,)))
        shards.append(make_shard(n + 1, b, 10 * gen + 3, 10 * gen + 4, parents=(parent,)))
        shards.append(make_shard(n + 2, FULL, 10 * gen + 5, 10 * gen + 6, parents=(n, n + 1)))
        n += 3
    last = shards[-1]
    shards[-1] = Shard(last.shard_id, last.hash_key_range, last.starting_sequence_number, None, *last.parent_shard_ids)
    other = lease_for(make_shard(999_999, a, 1))
    created = leases_to_create(shards, [other], InitialPosition.trim_horizon())
    assert keys(created) == [sid(0)]


# -- Hypothesis: random split/merge histories --------------------------------------------------------------


@dataclass
class History:
    shards: list[Shard]
    created: dict[str, int]
    closed: dict[str, int] = field(default_factory=dict)

    def alive_at(self, t: float) -> list[Shard]:
        return [s for s in self.shards if self.created[s.shard_id] <= t and self.closed.get(s.shard_id, 10**9) > t]

    def listing(self, horizon: float) -> list[Shard]:
        """The shards the stream still lists once those closed before ``horizon`` aged out."""
        return [s for s in self.shards if self.closed.get(s.shard_id, 10**9) > horizon]


@st.composite
def histories(draw: st.DrawFn) -> History:
    count = draw(st.integers(min_value=1, max_value=4))
    ranges = split_range(FULL, count)
    shards: dict[str, Shard] = {}
    created: dict[str, int] = {}
    closed: dict[str, int] = {}
    next_index = 0
    for r in ranges:
        shards[sid(next_index)] = make_shard(next_index, r, 1_000 + next_index)
        created[sid(next_index)] = 0
        next_index += 1
    steps = draw(st.integers(min_value=0, max_value=12))
    for t in range(1, steps + 1):
        open_shards = sorted((s for s in shards.values() if s.is_open), key=lambda s: s.hash_key_range.start)
        pick = open_shards[draw(st.integers(min_value=0, max_value=len(open_shards) - 1))]
        start = 1_000 * (t + 1)
        pr = pick.hash_key_range
        neighbours = [s for s in open_shards if s.hash_key_range.start == pr.end + 1]
        merge = bool(neighbours) and draw(st.booleans())
        if not merge and pr.start == pr.end:
            continue
        parents: list[Shard] = [pick, neighbours[0]] if merge else [pick]
        for p in parents:
            shards[p.shard_id] = Shard(
                p.shard_id,
                p.hash_key_range,
                p.starting_sequence_number,
                str(start - 1),
                p.parent_shard_id,
                p.adjacent_parent_shard_id,
            )
            closed[p.shard_id] = t
        children: list[tuple[HashKeyRange, tuple[Shard, ...]]]
        if merge:
            children = [(union(pick.hash_key_range, neighbours[0].hash_key_range), (pick, neighbours[0]))]
        else:
            key = draw(st.integers(min_value=pr.start + 1, max_value=pr.end))
            children = [(HashKeyRange(pr.start, key - 1), (pick,)), (HashKeyRange(key, pr.end), (pick,))]
        for r, ps in children:
            index = next_index
            next_index += 1
            shards[sid(index)] = Shard(
                sid(index),
                r,
                str(start + index),
                None,
                ps[0].shard_id,
                ps[1].shard_id if len(ps) > 1 else None,
            )
            created[sid(index)] = t
    return History(list(shards.values()), created, closed)


def assert_tiles_exactly_once(ranges: Sequence[HashKeyRange]) -> None:
    ordered = sorted(ranges, key=lambda r: r.start)
    assert ordered[0].start == 0
    assert ordered[-1].end == MAX_HASH_KEY
    for left, right in itertools.pairwise(ordered):
        assert left.end + 1 == right.start


@given(histories(), st.integers(min_value=0, max_value=13), st.sampled_from(POSITIONS))
@settings(max_examples=300, deadline=None)
def test_bootstrap_covers_the_chosen_generation_exactly_once(
    history: History, trim_at: int, position: InitialPosition
) -> None:
    horizon = trim_at + 0.5  # shards closed before it aged out of the stream
    listing = history.listing(horizon)
    created = leases_to_create(listing, [], position)
    assert_tiles_exactly_once([lease.hash_key_range for lease in created if lease.hash_key_range is not None])
    assert all(lease.checkpoint == position.checkpoint for lease in created)
    if position.kind is InitialPositionKind.LATEST:
        assert {lease.lease_key for lease in created} == {s.shard_id for s in listing if s.is_open}
    else:
        # The oldest retained generation is the set of shards alive at the trim horizon.
        alive = {s.shard_id for s in history.alive_at(horizon)}
        assert {lease.lease_key for lease in created} == alive
    assert hash_range_holes(created) == []
    # A second sync over the bootstrapped table creates nothing.
    assert leases_to_create(listing, created, position) == []


@given(
    histories(),
    st.integers(min_value=0, max_value=13),
    st.sets(st.integers(min_value=0, max_value=40)),
    st.sampled_from(POSITIONS),
)
@settings(max_examples=300, deadline=None)
def test_sync_repairs_a_table_with_missing_leases(
    history: History, cut_at: int, missing: set[int], position: InitialPosition
) -> None:
    # The table holds a lease for every shard alive at some moment, except a few that went missing; after
    # a sync the unfinished leases cover the hash space again.
    cut = history.alive_at(cut_at + 0.5)
    kept = [lease_for(s, seq(5)) for i, s in enumerate(cut) if i not in missing]
    if not kept:
        kept = [lease_for(cut[0], seq(5))]
    created = leases_to_create(history.shards, kept, position)
    assert not {lease.lease_key for lease in created} & {lease.lease_key for lease in kept}
    assert len({lease.lease_key for lease in created}) == len(created)
    assert hash_range_holes(kept + created) == []


# -- child leases ------------------------------------------------------------------------------------------


def test_child_leases_after_a_split() -> None:
    a, b = split_range(FULL, 2)
    parent = Lease(sid(0), SHARD_END, hash_key_range=FULL)
    children = [ChildShard(sid(1), (sid(0),), a), ChildShard(sid(2), (sid(0),), b)]
    created = child_leases(parent, children, {parent.lease_key: parent})
    assert keys(created) == [sid(1), sid(2)]
    assert all(lease.checkpoint == TRIM_HORIZON for lease in created)
    assert all(lease.parent_shard_ids == {sid(0)} for lease in created)
    assert [lease.hash_key_range for lease in created] == [a, b]
    # Children that have a lease already are skipped.
    existing = {parent.lease_key: parent, sid(1): created[0]}
    assert keys(child_leases(parent, children, existing)) == [sid(2)]


def test_merge_child_needs_the_other_parents_lease() -> None:
    a, b = split_range(FULL, 2)
    p0 = Lease(sid(0), SHARD_END, hash_key_range=a)
    p1 = Lease(sid(1), seq(7), hash_key_range=b)
    child = ChildShard(sid(2), (sid(0), sid(1)), FULL)
    # Both parents present: created, naming both parents.
    both = {p0.lease_key: p0, p1.lease_key: p1}
    created = child_leases(p0, [child], both)
    assert keys(created) == [sid(2)]
    assert created[0].parent_shard_ids == {sid(0), sid(1)}
    assert created[0].checkpoint == TRIM_HORIZON
    assert created[0].hash_key_range == FULL
    assert deferred_merge_children(p0, [child], both) == []
    # The other parent's lease is missing and so is the child's: deferred, as KCL does.
    assert child_leases(p0, [child], {p0.lease_key: p0}) == []
    assert deferred_merge_children(p0, [child], {p0.lease_key: p0}) == [sid(2)]
    # ``parent`` counts as present even if the snapshot lacks it.
    assert keys(child_leases(p0, [child], {p1.lease_key: p1})) == [sid(2)]
    # The other parent is gone because it finished and was cleaned up: the child's lease exists; fine.
    child_lease = created[0].with_changes(checkpoint=seq(99))
    done = {p0.lease_key: p0, child_lease.lease_key: child_lease}
    assert child_leases(p0, [child], done) == []
    assert deferred_merge_children(p0, [child], done) == []


def test_child_without_parents_is_an_error() -> None:
    parent = Lease(sid(0), SHARD_END)
    with pytest.raises(InvalidStateError, match="no parent shards"):
        child_leases(parent, [ChildShard(sid(1), (), FULL)], {})


# -- clean-up ----------------------------------------------------------------------------------------------


def finished(key: str, children: Sequence[str], parents: Sequence[str] = ()) -> Lease:
    return Lease(key, SHARD_END, parent_shard_ids=frozenset(parents), child_shard_ids=frozenset(children))


@pytest.mark.parametrize(
    ("child_checkpoint", "deleted"),
    [(TRIM_HORIZON, False), (AT_TIMESTAMP, False), (seq(12), True), (LATEST, True), (SHARD_END, True)],
)
def test_parent_is_cleaned_up_once_its_children_started(
    child_checkpoint: ExtendedSequenceNumber, deleted: bool
) -> None:
    parent = finished("p", ["c1", "c2"])
    c1 = Lease("c1", seq(50), parent_shard_ids=frozenset({"p"}))
    c2 = Lease("c2", child_checkpoint, parent_shard_ids=frozenset({"p"}))
    assert leases_to_clean_up([parent, c1, c2]) == (["p"] if deleted else [])


def test_clean_up_conditions() -> None:
    child = Lease("c", seq(50), parent_shard_ids=frozenset({"p"}))
    # A child lease is missing.
    assert leases_to_clean_up([finished("p", ["c", "c2"]), child]) == []
    # Not finished.
    assert leases_to_clean_up([Lease("p", seq(9), child_shard_ids=frozenset({"c"})), child]) == []
    # Finished but no children recorded.
    assert leases_to_clean_up([finished("p", []), child]) == []
    # Its own parent still has a lease (the grandparent goes first).
    grandparent = finished("g", ["p"])
    parent = finished("p", ["c"], parents=["g"])
    assert leases_to_clean_up([grandparent, parent, child]) == ["g"]
    assert leases_to_clean_up([parent, child]) == ["p"]


# -- hash-range holes and the auditor ----------------------------------------------------------------------


def ranged(key: str, r: HashKeyRange, checkpoint: ExtendedSequenceNumber = SEQ_THREE) -> Lease:
    return Lease(key, checkpoint, hash_key_range=r)


def test_hash_range_holes() -> None:
    a, b, c = split_range(FULL, 3)
    assert hash_range_holes([]) == [FULL]
    assert hash_range_holes([ranged("a", a), ranged("b", b), ranged("c", c)]) == []
    assert hash_range_holes([ranged("a", a), ranged("c", c)]) == [b]
    assert hash_range_holes([ranged("b", b)]) == [a, c]
    # Finished leases do not count; their unfinished children do; overlaps are fine.
    assert hash_range_holes([ranged("p", FULL, SHARD_END), ranged("a", a)]) == [union(b, c)]
    assert hash_range_holes([ranged("p", FULL), ranged("a", a), ranged("b", b)]) == []
    # Leases without a hash range are ignored.
    assert hash_range_holes([Lease("x", seq(1)), ranged("a", union(a, b))]) == [c]
    # Single keys at the edges.
    assert hash_range_holes([ranged("x", HashKeyRange(1, MAX_HASH_KEY - 1))]) == [
        HashKeyRange(0, 0),
        HashKeyRange(MAX_HASH_KEY, MAX_HASH_KEY),
    ]


def test_hole_auditor_needs_the_same_holes_three_times_in_a_row() -> None:
    a, b = split_range(FULL, 2)
    auditor = HoleAuditor()
    assert [auditor.record([a]) for _ in range(4)] == [False, False, True, True]
    assert auditor.consecutive == 4
    assert auditor.record([]) is False
    assert auditor.consecutive == 0
    assert [auditor.record([a]), auditor.record([a]), auditor.record([b]), auditor.record([b])] == [
        False,
        False,
        False,
        False,
    ]
    assert auditor.record([b]) is True
    one = HoleAuditor(confidence_threshold=1)
    assert one.record([a]) is True
    with pytest.raises(ConfigurationError):
        HoleAuditor(confidence_threshold=0)


# -- the shell, against SQLite leases and a local stream ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def streams(tmp_path: Path, clock: Clock) -> Iterator[LocalStreamStore]:
    with LocalStreamStore(tmp_path / "streams.db", clock=clock) as s:
        yield s


@pytest.fixture
def leases(tmp_path: Path) -> Iterator[SQLiteLeaseStore]:
    store = SQLiteLeaseStore(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    yield store
    store.close()


def reshard(streams: LocalStreamStore, clock: Clock) -> None:
    """Stream "s": 2 shards (0, 1); at +100 s shard 0 splits into 2 and 3; at +200 s 3 and 1 merge into 4."""
    streams.create_stream("s", 2)
    clock.now += 100
    r0 = streams.stream("s").list_shards()[0].hash_key_range
    streams.split_shard("s", sid(0), r0.start + (r0.end - r0.start + 1) // 2)
    clock.now += 100
    streams.merge_shards("s", sid(3), sid(1))
    clock.now += 100


def stored(store: SQLiteLeaseStore) -> dict[str, Lease]:
    return {lease.lease_key: lease for lease in store.list_leases()}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("LATEST", [2, 4]), ("TRIM_HORIZON", [0, 1]), ("AT_TIMESTAMP_150", [1, 2, 3]), ("AT_TIMESTAMP_0", [0, 1])],
)
def test_sync_on_an_empty_table(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock, kind: str, expected: list[int]
) -> None:
    start = clock.now
    reshard(streams, clock)
    if kind.startswith("AT_TIMESTAMP"):
        offset = int(kind.rsplit("_", 1)[1])
        position = InitialPosition.at_timestamp(datetime.fromtimestamp(start + offset, tz=timezone.utc))
    else:
        position = InitialPosition(InitialPositionKind(kind))
    syncer = ShardSyncer(leases, streams.stream("s"), position)
    created = syncer.sync()
    assert sorted(keys(created)) == [sid(i) for i in expected]
    table = stored(leases)
    assert sorted(table) == [sid(i) for i in expected]
    assert all(lease.checkpoint == position.checkpoint for lease in table.values())
    assert hash_range_holes(list(table.values())) == []
    # Idempotent.
    assert syncer.sync() == []
    assert stored(leases) == table


def test_sync_on_a_non_empty_table_follows_the_hierarchy(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock
) -> None:
    reshard(streams, clock)
    source = streams.stream("s")
    # Bootstrapped at TRIM_HORIZON before the reshards: leases 0 and 1 exist; nothing new is created (the
    # children come at SHARD_END).
    shards = {s.shard_id: s for s in source.list_shards()}
    for i in (0, 1):
        assert leases.create_lease_if_not_exists(lease_for(shards[sid(i)], TRIM_HORIZON))
    syncer = ShardSyncer(leases, source, InitialPosition.trim_horizon())
    assert syncer.sync() == []
    # Lease 1 is lost: 1 is the other parent of 4, a root of the stream, so TRIM_HORIZON re-creates it.
    leases.delete_lease(sid(1))
    assert [(x.lease_key, x.checkpoint) for x in syncer.sync()] == [(sid(1), TRIM_HORIZON)]


def sync_after(barrier: threading.Barrier, syncer: ShardSyncer, results: list[list[Lease]], i: int) -> None:
    barrier.wait()
    results[i] = syncer.sync()


def test_two_syncers_racing_create_each_lease_once(tmp_path: Path, streams: LocalStreamStore, clock: Clock) -> None:
    reshard(streams, clock)
    for round_ in range(5):
        table = f"race{round_}"
        stores = [SQLiteLeaseStore(tmp_path / "leases.db", table) for _ in range(4)]
        stores[0].create_table_if_not_exists()
        syncers = [ShardSyncer(s, streams.stream("s"), InitialPosition.trim_horizon()) for s in stores]
        barrier = threading.Barrier(len(syncers))
        results: list[list[Lease]] = [[] for _ in syncers]
        threads = [
            threading.Thread(target=sync_after, args=(barrier, syncer, results, i)) for i, syncer in enumerate(syncers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        created = [lease.lease_key for result in results for lease in result]
        assert sorted(created) == [sid(0), sid(1)]  # each lease created by exactly one syncer
        assert sorted(stored(stores[0])) == [sid(0), sid(1)]
        for s in stores:
            s.close()


def test_a_syncer_that_sees_a_half_created_table_completes_it(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock
) -> None:
    reshard(streams, clock)
    source = streams.stream("s")
    plan = leases_to_create(source.list_shards(), [], InitialPosition.trim_horizon())
    assert keys(plan) == [sid(0), sid(1)]
    # The first syncer crashed after creating its first lease; another syncer sees a non-empty table.
    assert leases.create_lease_if_not_exists(plan[0])
    created = ShardSyncer(leases, source, InitialPosition.trim_horizon()).sync()
    assert keys(created) == [sid(1)]
    assert stored(leases)[sid(1)].checkpoint == TRIM_HORIZON


def children_of(source_shards: Sequence[Shard], parent: str) -> list[ChildShard]:
    return [
        ChildShard(s.shard_id, s.parent_shard_ids, s.hash_key_range)
        for s in source_shards
        if parent in s.parent_shard_ids
    ]


def test_child_leases_after_a_split_and_a_merge(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock
) -> None:
    reshard(streams, clock)
    source = streams.stream("s")
    syncer = ShardSyncer(leases, source, InitialPosition.trim_horizon())
    syncer.sync()  # empty table: leases 0 and 1
    shards = source.list_shards()

    # Shard 0 ends: its split children 2 and 3 get leases, and 0 records them.
    p0 = stored(leases)[sid(0)]
    created = syncer.create_child_leases(p0, children_of(shards, sid(0)))
    assert keys(created) == [sid(2), sid(3)]
    table = stored(leases)
    assert table[sid(0)].child_shard_ids == {sid(2), sid(3)}
    for i in (2, 3):
        assert table[sid(i)].checkpoint == TRIM_HORIZON
        assert table[sid(i)].parent_shard_ids == {sid(0)}
    # Again (a retried shutdown): nothing new, no error.
    assert syncer.create_child_leases(p0, children_of(shards, sid(0))) == []

    # Shard 3 ends: merge child 4 (parents 3 and 1); both parents' leases exist.
    p3 = stored(leases)[sid(3)]
    created = syncer.create_child_leases(p3, children_of(shards, sid(3)))
    assert keys(created) == [sid(4)]
    lease4 = stored(leases)[sid(4)]
    assert lease4.parent_shard_ids == {sid(1), sid(3)}
    assert lease4.hash_key_range == next(s.hash_key_range for s in shards if s.shard_id == sid(4))
    assert stored(leases)[sid(3)].child_shard_ids == {sid(4)}
    # Shard 1 ends later: 4 exists already.
    p1 = stored(leases)[sid(1)]
    assert syncer.create_child_leases(p1, children_of(shards, sid(1))) == []
    assert stored(leases)[sid(1)].child_shard_ids == {sid(4)}


def test_merge_child_is_deferred_while_the_other_parent_has_no_lease(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock
) -> None:
    reshard(streams, clock)
    source = streams.stream("s")
    shards = {s.shard_id: s for s in source.list_shards()}
    p3 = leases.create_lease_if_not_exists(lease_for(shards[sid(3)], SHARD_END))
    assert p3 is not None
    syncer = ShardSyncer(leases, source, InitialPosition.latest())
    with pytest.raises(InvalidStateError, match="waits for the lease of its other parent"):
        syncer.create_child_leases(p3, children_of(list(shards.values()), sid(3)))
    assert sorted(stored(leases)) == [sid(3)]
    assert stored(leases)[sid(3)].child_shard_ids == frozenset()


def test_create_child_leases_fails_when_the_parent_lease_is_gone(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock
) -> None:
    reshard(streams, clock)
    source = streams.stream("s")
    shards = {s.shard_id: s for s in source.list_shards()}
    ghost = lease_for(shards[sid(0)], SHARD_END)
    syncer = ShardSyncer(leases, source, InitialPosition.latest())
    with pytest.raises(InvalidStateError, match="no longer exists"):
        syncer.create_child_leases(ghost, children_of(list(shards.values()), sid(0)))
    assert syncer.create_child_leases(ghost, []) == []


def checkpoint(store: SQLiteLeaseStore, key: str, value: ExtendedSequenceNumber) -> None:
    lease = store.get_lease(key)
    assert lease is not None
    assert store.update_lease(lease.with_changes(checkpoint=value)) is not None


def test_clean_up_deletes_the_parent_only_when_children_progressed(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock
) -> None:
    reshard(streams, clock)
    source = streams.stream("s")
    syncer = ShardSyncer(leases, source, InitialPosition.trim_horizon())
    syncer.sync()
    shards = source.list_shards()
    p0 = stored(leases)[sid(0)]
    syncer.create_child_leases(p0, children_of(shards, sid(0)))
    assert syncer.clean_up() == []  # 0 is not finished
    checkpoint(leases, sid(0), SHARD_END)
    assert syncer.clean_up() == []  # children still at TRIM_HORIZON
    checkpoint(leases, sid(2), seq(SEQ_START))
    assert syncer.clean_up() == []  # child 3 has not started
    checkpoint(leases, sid(3), seq(SEQ_START))
    assert syncer.clean_up() == [sid(0)]
    assert sid(0) not in stored(leases)
    assert syncer.clean_up() == []


def test_audit_syncs_after_three_audits_with_the_same_hole(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock
) -> None:
    streams.create_stream("s", 3)
    source = streams.stream("s")
    syncer = ShardSyncer(leases, source, InitialPosition.latest())
    # No lease at all: sync at once.
    assert syncer.audit() is True
    assert sorted(stored(leases)) == [sid(0), sid(1), sid(2)]
    assert syncer.audit() is False
    leases.delete_lease(sid(1))
    assert [syncer.audit(), syncer.audit()] == [False, False]
    assert sid(1) not in stored(leases)
    assert syncer.audit() is True
    assert stored(leases)[sid(1)].checkpoint == LATEST
    assert syncer.audit() is False
    assert syncer.auditor.consecutive == 0


def test_audit_fills_in_missing_hash_ranges(streams: LocalStreamStore, leases: SQLiteLeaseStore, clock: Clock) -> None:
    streams.create_stream("s", 2)
    source = streams.stream("s")
    for s in source.list_shards():
        assert leases.create_lease_if_not_exists(Lease(s.shard_id, seq(5)))  # an old client wrote no range
    syncer = ShardSyncer(leases, source, InitialPosition.latest())
    assert [syncer.audit() for _ in range(4)] == [False] * 4
    table = stored(leases)
    assert all(lease.hash_key_range is not None for lease in table.values())
    assert hash_range_holes(list(table.values())) == []


def test_bootstrap_listing_with_a_gap_is_refused(leases: SQLiteLeaseStore) -> None:
    a, _b, c = split_range(FULL, 3)

    class GappySource:
        stream_name = "gappy"

        def list_shards(self, shard_filter: ShardFilter | None = None) -> list[Shard]:
            return [make_shard(0, a, 1), make_shard(2, c, 2)]

    syncer = ShardSyncer(leases, GappySource(), InitialPosition.latest())  # type: ignore[arg-type]
    with pytest.raises(InvalidStateError, match="do not cover"):
        syncer.sync()
    assert stored(leases) == {}

    class EmptySource(GappySource):
        def list_shards(self, shard_filter: ShardFilter | None = None) -> list[Shard]:
            return []

    with pytest.raises(InvalidStateError, match="no shards"):
        ShardSyncer(leases, EmptySource(), InitialPosition.latest()).sync()  # type: ignore[arg-type]


def test_sync_logs_creations(
    streams: LocalStreamStore, leases: SQLiteLeaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    streams.create_stream("s", 1)
    with caplog.at_level("INFO", logger="shardwise.leasing.shard_sync"):
        ShardSyncer(leases, streams.stream("s"), InitialPosition.latest()).sync()
    assert f"created lease {sid(0)} at LATEST" in caplog.text
