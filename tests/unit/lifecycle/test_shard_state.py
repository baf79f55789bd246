"""``ShardState``: one shard's store as the framework opens, commits, discards and closes it — against the real
engines (SQLite, and RocksDB where it is cheap) and the real SQLite changelog, with a fake clock.

Two "workers" are two state directories sharing one changelog; a crash inside a commit is a commit observer
that raises at a stage (always removed again by the ``crash_at`` fixture)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shardwise.backends.sqlite.backend import SQLiteBackend
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import LATEST, SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import InvalidStateError, MalformedItemError
from shardwise.leases.model import Lease
from shardwise.lifecycle.stateful import (
    MergeFunction,
    ShardState,
    StateConfig,
    StateServices,
    ensured_once,
    set_commit_observer,
)
from shardwise.metrics.sink import BYTES, COUNT, MILLISECONDS, InMemoryMetricsSink
from shardwise.state.engines import open_local_store
from shardwise.state.engines.sidecar import SIDECAR_NAME
from shardwise.state.port import FORMAT_IN_STORE, FORMAT_SIDECAR, Changelog, CommitMeta
from support.clocks import FakeClock

APP = "app"
S0, S1, S2 = (f"shardId-00000000000{i}" for i in range(3))
MS = 1_000_000
OPERATION = "StateStore"  # the metrics operation of state stores


def pos(n: int) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(str(49_000_000_000 + n))


class Crash(Exception):
    """The simulated death of the worker inside a commit."""


class TickingClock(FakeClock):
    """A fake clock that moves 3 ms at every reading, so durations measured with it are never 0."""

    def __call__(self) -> int:
        self.advance(3 * MS)
        return self.now


@dataclass
class World:
    tmp_path: Path
    backend: SQLiteBackend
    metrics: InMemoryMetricsSink = field(default_factory=InMemoryMetricsSink)
    clock: FakeClock = field(default_factory=TickingClock)
    opened: list[ShardState] = field(default_factory=list)
    closables: list[Callable[[], None]] = field(default_factory=list)

    @property
    def changelog(self) -> Changelog:
        changelog = self.backend.open_changelog(APP)
        changelog.ensure_exists()
        return changelog

    def services(
        self,
        worker: str = "w1",
        *,
        engine: str = "sqlite",
        write_level: int = FORMAT_IN_STORE,
        backend: SQLiteBackend | None = None,
    ) -> StateServices:
        source = backend or self.backend
        return StateServices(
            config=StateConfig(dir_path=self.tmp_path / worker / "state", engine=engine, write_level=write_level),
            changelog=ensured_once(lambda: source.open_changelog(APP)),
            open_store=open_local_store,
            metrics=self.metrics,
            clock_ns=self.clock,
        )

    def open(
        self,
        shard_id: str = S0,
        worker: str = "w1",
        *,
        lease_checkpoint: ExtendedSequenceNumber = TRIM_HORIZON,
        engine: str = "sqlite",
        write_level: int = FORMAT_IN_STORE,
        backend: SQLiteBackend | None = None,
        parents: frozenset[str] = frozenset(),
        lease_store: SQLiteLeaseStore | None = None,
        merge: MergeFunction | None = None,
    ) -> ShardState:
        state = ShardState.open(
            self.services(worker, engine=engine, write_level=write_level, backend=backend),
            shard_id=shard_id,
            lease_checkpoint=lease_checkpoint,
            parent_shard_ids=parents,
            lease_store=lease_store,
            merge=merge,
        )
        self.opened.append(state)
        return state

    def other_backend(self, name: str) -> SQLiteBackend:
        backend = SQLiteBackend(self.tmp_path / name)
        self.closables.append(backend.database.close)
        return backend

    def lease_store(self) -> SQLiteLeaseStore:
        store = SQLiteLeaseStore(self.tmp_path / "leases.db", APP)
        store.create_table_if_not_exists()
        self.closables.append(store.close)
        return store


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    backend = SQLiteBackend(tmp_path / "shardwise.db")
    world = World(tmp_path, backend)
    try:
        yield world
    finally:
        for state in world.opened:
            state.close()
        for close in world.closables:
            close()
        backend.database.close()


@pytest.fixture
def crash_at() -> Iterator[Callable[[str], None]]:
    """``crash_at(stage)``: the next commit raises :class:`Crash` at ``stage`` (once)."""

    def install(stage: str) -> None:
        armed = [True]

        def observer(at: str, shard_id: str) -> None:
            if at == stage and armed[0]:
                armed[0] = False
                raise Crash(f"{shard_id} dies at {at}")

        set_commit_observer(observer)

    try:
        yield install
    finally:
        set_commit_observer(None)


@pytest.fixture(params=["sqlite", "rocksdb"])
def engine(request: pytest.FixtureRequest) -> str:
    assert isinstance(request.param, str)
    return request.param


def contents(state: ShardState) -> dict[bytes, bytes]:
    return dict(state.store.range())


def finished(state: ShardState) -> bool:
    """A call, so that type checkers do not narrow the property across commits."""
    return state.finished


def write(state: ShardState, **values: str) -> None:
    for key, value in values.items():
        state.store.put(key.encode(), value.encode())


# -- case (a): restore from the changelog ------------------------------------------------------------------------


def test_restore_into_an_empty_directory_gives_exactly_the_committed_state(world: World, engine: str) -> None:
    first = world.open(engine=engine)
    write(first, a="1", b="2")
    first.commit(pos(1))
    write(first, c="3")
    first.store.delete(b"a")
    first.commit(pos(2))
    write(first, d="never committed")
    first.close()

    # Another worker, an empty state directory, the same changelog; its lease is behind the store's position.
    second = world.open(worker="w2", engine=engine, lease_checkpoint=pos(1))
    assert contents(second) == {b"b": b"2", b"c": b"3"}
    committed = second.store.committed()
    assert committed is not None
    head = world.changelog.head(S0)
    assert head is not None
    assert committed == CommitMeta(2, pos(2), head.lineage)
    assert second.position == pos(2)
    assert second.start_position(pos(1)) == pos(2)
    assert not second.store.has_pending()
    # It goes on from there: its next commit is commit 3 of the same lineage.
    write(second, e="5")
    second.commit(pos(3))
    head = world.changelog.head(S0)
    assert head is not None
    assert (head.commit, head.position, head.lineage) == (3, pos(3), committed.lineage)


def test_a_store_one_commit_behind_the_changelog_is_restored_to_the_head(
    world: World, engine: str, crash_at: Callable[[str], None]
) -> None:
    state = world.open(engine=engine)
    write(state, **{f"k{i}": str(i) for i in range(10)})
    state.commit(pos(1))
    write(state, k0="changed", new="x")
    state.store.delete(b"k9")
    crash_at("after-changelog")
    with pytest.raises(Crash):
        state.commit(pos(2))
    local = state.store.committed()
    assert local is not None
    assert local.commit == 1  # the changelog has commit 2, the store does not
    head = world.changelog.head(S0)
    assert head is not None
    assert head.commit == 2
    state.close()
    world.metrics.clear()

    reopened = world.open(engine=engine, lease_checkpoint=pos(1))
    expected = {f"k{i}".encode(): str(i).encode() for i in range(1, 9)} | {b"k0": b"changed", b"new": b"x"}
    assert contents(reopened) == expected
    assert reopened.store.committed() == CommitMeta(2, pos(2), head.lineage)
    assert reopened.start_position(pos(1)) == pos(2)
    # Only what the store lacked was applied: the three changes of commit 2, not the whole state.
    assert world.metrics.values(OPERATION, "RestoredKeys") == [3]


def test_a_crash_after_the_store_commit_leaves_the_store_ahead_of_the_lease_and_its_position_wins(
    world: World, engine: str, crash_at: Callable[[str], None]
) -> None:
    state = world.open(engine=engine)
    write(state, a="1")
    state.commit(pos(1))  # the lease checkpoint follows: pos(1)
    write(state, a="2")
    crash_at("after-store")
    with pytest.raises(Crash):
        state.commit(pos(5))  # the lease checkpoint write never happens
    state.close()
    world.metrics.clear()

    reopened = world.open(engine=engine, lease_checkpoint=pos(1))
    assert reopened.position == pos(5)
    assert reopened.start_position(pos(1)) == pos(5)
    assert contents(reopened) == {b"a": b"2"}
    assert world.metrics.values(OPERATION, "RestoredKeys") == [0]  # nothing was missing


def test_a_store_of_another_lineage_is_replaced_by_the_changelog_state(world: World) -> None:
    old = world.open()
    write(old, a="1", b="1")
    old.commit(pos(1))
    old.close()
    world.changelog.delete(S0)
    # Another worker starts the shard's changelog over (a new lineage) while the old store sits on w1's disk.
    other = world.open(worker="w2", lease_checkpoint=pos(1))
    write(other, c="3")
    other.commit(pos(2))
    other.close()

    reopened = world.open(lease_checkpoint=pos(2))
    assert contents(reopened) == {b"c": b"3"}  # wholesale: a and b are gone
    head = world.changelog.head(S0)
    assert head is not None
    assert reopened.store.committed() == CommitMeta(head.commit, pos(2), head.lineage)


# -- case (b): the changelog was lost ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "fresh-database"])
def test_a_lost_changelog_is_republished_as_commit_1_of_a_new_lineage(
    world: World, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = world.open()
    write(state, a="1", b="2")
    state.commit(pos(1))
    write(state, c="3")
    state.commit(pos(2))
    old = state.store.committed()
    assert old is not None
    state.close()

    backend = world.backend
    if how == "deleted":
        world.changelog.delete(S0)
    else:
        backend = world.other_backend("recreated.db")
    with caplog.at_level(logging.WARNING, logger="shardwise.lifecycle.stateful"):
        reopened = world.open(backend=backend, lease_checkpoint=pos(2))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert S0 in warnings[0].getMessage()
    assert "new lineage" in warnings[0].getMessage()

    changelog = backend.open_changelog(APP)
    head = changelog.head(S0)
    assert head is not None
    assert (head.commit, head.position) == (1, pos(2))
    assert head.lineage != old.lineage
    assert reopened.store.committed() == CommitMeta(1, pos(2), head.lineage)  # adopted locally
    plan = changelog.plan_restore(S0, lineage=None, after_commit=None)
    assert plan is not None
    assert dict(plan.changes) == {b"a": b"1", b"b": b"2", b"c": b"3"}
    # The next commit follows the new lineage in both places.
    write(reopened, d="4")
    reopened.commit(pos(3))
    head = changelog.head(S0)
    assert head is not None
    assert (head.commit, head.lineage) == (2, reopened.store.committed().lineage)  # type: ignore[union-attr]


# -- case (c): a reshard's children ------------------------------------------------------------------------------


def _finish_parent(world: World, shard_id: str, **values: str) -> None:
    parent = world.open(shard_id, worker=f"parent-{shard_id}")
    write(parent, **values)
    parent.commit(pos(7))
    parent.commit(SHARD_END)
    parent.close()


def test_a_split_hands_each_child_the_parents_full_state(world: World) -> None:
    _finish_parent(world, S0, a="1", b="2")
    leases = world.lease_store()
    assert leases.create_lease_if_not_exists(Lease(S0, SHARD_END, child_shard_ids=frozenset({S1, S2})))

    first = world.open(S1, lease_checkpoint=TRIM_HORIZON, parents=frozenset({S0}), lease_store=leases)
    assert contents(first) == {b"a": b"1", b"b": b"2"}
    committed = first.store.committed()
    assert committed is not None
    assert (committed.commit, committed.position) == (1, TRIM_HORIZON)  # seeded at the lease checkpoint
    head = world.changelog.head(S1)
    assert head is not None
    assert (head.commit, head.position, head.lineage) == (1, TRIM_HORIZON, committed.lineage)
    assert first.start_position(TRIM_HORIZON) == TRIM_HORIZON  # reading starts at the child's beginning
    assert world.changelog.head(S0) is not None  # S2 has not taken its share yet

    second = world.open(S2, worker="w2", lease_checkpoint=TRIM_HORIZON, parents=frozenset({S0}), lease_store=leases)
    assert contents(second) == {b"a": b"1", b"b": b"2"}
    assert world.changelog.head(S0) is None  # every child has its state: the parent's changelog is gone
    assert sorted(world.changelog.shard_ids()) == [S1, S2]


def test_a_child_without_the_lease_store_keeps_the_parents_changelog(world: World) -> None:
    _finish_parent(world, S0, a="1")
    world.lease_store().create_lease_if_not_exists(Lease(S0, SHARD_END, child_shard_ids=frozenset({S1})))
    child = world.open(S1, parents=frozenset({S0}))
    assert contents(child) == {b"a": b"1"}
    assert world.changelog.head(S0) is not None


@pytest.fixture
def merged_parents(world: World) -> SQLiteLeaseStore:
    _finish_parent(world, S0, a="1", shared="left")
    _finish_parent(world, S1, b="2", shared="right")
    leases = world.lease_store()
    for parent in (S0, S1):
        assert leases.create_lease_if_not_exists(Lease(parent, SHARD_END, child_shard_ids=frozenset({S2})))
    return leases


def test_a_merge_unions_the_parents_and_the_later_parent_wins_a_conflict_with_a_warning(
    world: World, merged_parents: SQLiteLeaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shardwise.lifecycle.stateful"):
        child = world.open(S2, lease_checkpoint=LATEST, parents=frozenset({S1, S0}), lease_store=merged_parents)
    assert contents(child) == {b"a": b"1", b"b": b"2", b"shared": b"right"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "merge_state" in warnings[0]
    assert S0 in warnings[0]
    assert S1 in warnings[0]
    assert child.store.committed() is not None
    assert child.position == LATEST
    assert world.changelog.head(S0) is None
    assert world.changelog.head(S1) is None


def test_a_merge_function_combines_a_key_both_parents_hold(
    world: World, merged_parents: SQLiteLeaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[bytes, bytes, bytes]] = []

    def combine(key: bytes, left: bytes, right: bytes) -> bytes:
        calls.append((key, left, right))
        return left + b"+" + right

    with caplog.at_level(logging.WARNING, logger="shardwise.lifecycle.stateful"):
        child = world.open(S2, parents=frozenset({S0, S1}), lease_store=merged_parents, merge=combine)
    assert calls == [(b"shared", b"left", b"right")]  # left: the parent earlier in lease-key order
    assert contents(child) == {b"a": b"1", b"b": b"2", b"shared": b"left+right"}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    plan = world.changelog.plan_restore(S2, lineage=None, after_commit=None)
    assert plan is not None
    assert dict(plan.changes) == contents(child)  # the seed is durable


# -- case (d): nothing anywhere ----------------------------------------------------------------------------------


def test_nothing_anywhere_starts_empty_at_the_lease_checkpoint_and_writes_nothing(world: World) -> None:
    state = world.open(lease_checkpoint=pos(4))
    assert contents(state) == {}
    assert state.store.committed() is None
    assert state.position is None
    assert state.start_position(pos(4)) == pos(4)
    assert world.changelog.head(S0) is None


def test_a_child_already_checkpointed_at_a_real_position_is_not_seeded(world: World) -> None:
    # The application becomes stateful after the reshard: the child's lease moved on without any state.
    _finish_parent(world, S0, a="1")
    leases = world.lease_store()
    assert leases.create_lease_if_not_exists(Lease(S0, SHARD_END, child_shard_ids=frozenset({S1})))
    child = world.open(S1, lease_checkpoint=pos(9), parents=frozenset({S0}), lease_store=leases)
    assert contents(child) == {}
    assert world.changelog.head(S1) is None
    assert world.changelog.head(S0) is not None


# -- metrics ----------------------------------------------------------------------------------------------------


def test_metrics_are_reported_under_the_state_store_operation(world: World) -> None:
    first = world.open()
    write(first, a="1", b="2", c="3")
    first.commit(pos(1))
    first.commit(pos(1))  # nothing pending, same position: not a commit
    write(first, d="4")
    first.commit(pos(2))
    first.close()
    second = world.open(worker="w2")

    data = world.metrics.data()
    assert data
    assert {d.operation for d in data} == {OPERATION}
    assert all(d.dimensions == {"ShardId": S0} for d in data)
    units = {d.name: d.unit for d in data}
    assert units == {
        "Commits": COUNT,
        "CommitTime": MILLISECONDS,
        "RestoredKeys": COUNT,
        "RestoreTime": MILLISECONDS,
        "StoreKeys": COUNT,
        "StoreSizeBytes": BYTES,
    }
    assert world.metrics.total(OPERATION, "Commits") == 2
    assert len(world.metrics.values(OPERATION, "CommitTime")) == 2
    assert all(v > 0 for v in world.metrics.values(OPERATION, "CommitTime"))  # the injected clock's
    assert world.metrics.values(OPERATION, "RestoredKeys") == [4]  # w2's restore (w1 started empty)
    [restore_time] = world.metrics.values(OPERATION, "RestoreTime")
    assert restore_time > 0
    # The store's size at each open and close: w1 empty, w1 closing with 4 keys, w2 restored with 4.
    assert world.metrics.values(OPERATION, "StoreKeys") == [0, 4, 4]
    assert world.metrics.values(OPERATION, "StoreSizeBytes")[-1] > 0
    assert len(second.store) == 4


# -- the shell's rules ---------------------------------------------------------------------------------------------


def test_a_second_open_of_an_open_store_is_refused_until_it_is_closed(world: World) -> None:
    first = world.open()
    write(first, a="1")
    first.commit(pos(1))
    with pytest.raises(InvalidStateError, match="still open"):
        world.open()
    first.close()
    first.close()  # idempotent
    again = world.open()
    assert contents(again) == {b"a": b"1"}
    # Another shard, or the same shard in another worker's directory, is not affected.
    world.open(S1)
    world.open(worker="w2")


def test_a_failed_open_releases_the_path(world: World, tmp_path: Path) -> None:
    broken = StateServices(
        config=StateConfig(dir_path=tmp_path / "w1" / "state"),
        changelog=_failing_changelog,
        open_store=open_local_store,
        clock_ns=world.clock,
    )
    with pytest.raises(RuntimeError, match="changelog down"):
        ShardState.open(broken, shard_id=S0, lease_checkpoint=TRIM_HORIZON)
    world.open()  # not refused as "still open"


def _failing_changelog() -> Changelog:
    raise RuntimeError("changelog down")


def test_discard_drops_what_is_pending_and_commits_nothing_of_it(world: World) -> None:
    state = world.open()
    write(state, a="1")
    state.commit(pos(1))
    write(state, a="2", b="2")
    state.store.delete(b"a")
    state.discard()
    assert not state.store.has_pending()
    assert contents(state) == {b"a": b"1"}
    state.commit(pos(2))
    plan = world.changelog.plan_restore(S0, lineage=None, after_commit=None)
    assert plan is not None
    assert dict(plan.changes) == {b"a": b"1"}
    write(state, c="3")
    state.close()  # closing discards too
    assert contents(world.open(worker="w2")) == {b"a": b"1"}


def test_a_commit_never_moves_the_position_back(world: World) -> None:
    state = world.open()
    write(state, a="1")
    state.commit(pos(5))
    write(state, b="2")
    state.commit(pos(3))
    assert state.position == pos(5)
    head = world.changelog.head(S0)
    assert head is not None
    assert (head.commit, head.position) == (2, pos(5))


def test_a_shard_committed_at_shard_end_is_finished(world: World) -> None:
    state = world.open()
    assert not finished(state)
    state.commit(pos(1))
    assert not finished(state)
    state.commit(SHARD_END)
    assert finished(state)
    state.close()
    assert finished(world.open(worker="w2"))


# -- format levels -----------------------------------------------------------------------------------------------


def test_a_level_1_store_is_upgraded_in_place_by_a_level_2_worker(
    world: World, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = world.open(engine=engine, write_level=FORMAT_SIDECAR)
    assert old.store.format_level == FORMAT_SIDECAR
    write(old, a="1")
    old.commit(pos(3))
    store_dir = world.tmp_path / "w1" / "state" / S0
    assert (store_dir / SIDECAR_NAME).is_file()
    head = world.changelog.head(S0)
    assert head is not None
    assert head.format_level == FORMAT_SIDECAR
    old.close()

    with caplog.at_level(logging.INFO, logger="shardwise.lifecycle.stateful"):
        new = world.open(engine=engine, lease_checkpoint=pos(1))
    assert new.store.format_level == FORMAT_IN_STORE
    assert not (store_dir / SIDECAR_NAME).exists()
    assert new.store.committed() == CommitMeta(1, pos(3), head.lineage)
    assert new.start_position(pos(1)) == pos(3)
    assert contents(new) == {b"a": b"1"}
    assert "state.format 1" in caplog.text
    write(new, b="2")
    new.commit(pos(4))
    head = world.changelog.head(S0)
    assert head is not None
    assert (head.commit, head.format_level) == (2, FORMAT_IN_STORE)


# -- changelog compaction ------------------------------------------------------------------------------------------


def test_maintain_compacts_the_changelog_every_16_commits_when_the_log_has_grown(world: World) -> None:
    state = world.open()
    write(state, **{f"k{i:03}": "v" for i in range(120)})
    state.commit(pos(1))
    for n in range(2, 16):  # commits 2..15 each delete one key: 14 tombstones
        state.store.delete(f"k{n - 2:03}".encode())
        state.commit(pos(n))
        state.maintain()
    stats = world.changelog.stats(S0)
    assert stats is not None
    assert (stats.key_count, stats.items) == (106, 121)  # nothing compacted before the 16th commit
    assert world.changelog.needs_compaction(S0)

    state.store.delete(b"k014")
    state.commit(pos(16))
    write(state, pending="yes")
    state.maintain()  # not with changes pending
    assert world.changelog.needs_compaction(S0)
    state.discard()
    state.maintain()
    assert not world.changelog.needs_compaction(S0)
    stats = world.changelog.stats(S0)
    assert stats is not None
    assert (stats.key_count, stats.items) == (105, 106)  # the tombstones are gone
    state.close()

    # A restore after the compaction still gives exactly the committed state.
    restored = world.open(worker="w2")
    assert contents(restored) == {f"k{i:03}".encode(): b"v" for i in range(15, 120)}
    assert restored.position == pos(16)


def test_a_malformed_changelog_head_is_named_with_the_fix_and_frees_the_store(world: World) -> None:
    first = world.open()
    write(first, a="1")
    first.commit(pos(1))
    first.close()
    _corrupt_head(world.tmp_path / "shardwise.db")

    with pytest.raises(MalformedItemError) as raised:
        world.open(worker="w2")
    message = str(raised.value)
    assert f"{S0}/head" in message and "garbage" in message
    assert f"shardwise state wipe --app <application> --shard {S0} --changelog" in message
    assert isinstance(raised.value.__cause__, MalformedItemError)
    # The failed open released the store: once the item is repaired, the shard opens on this worker.
    _corrupt_head(world.tmp_path / "shardwise.db", str(pos(1)))
    assert contents(world.open(worker="w2")) == {b"a": b"1"}


def _corrupt_head(db: Path, value: str = "garbage") -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE shardwise_state_heads SET sequence_number = ?", (value,))
