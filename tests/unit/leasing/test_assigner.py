"""LeaseAssignmentManager (the I/O shell of the KCL 3.x leader) against a real SQLite lease table and a fake clock.

The rules themselves are the pure :mod:`shardwise.assignment.liveness` and deciders; these tests check that the
shell reads the snapshot, judges it with those rules, writes the moves conditionally and remembers what it wrote.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from shardwise.assignment.model import WorkerMetricStats, metrics_to_attributes
from shardwise.assignment.utilization import AssignmentConfig
from shardwise.backends import open_coordinator_tables
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON
from shardwise.errors import DependencyError
from shardwise.leases.model import Lease
from shardwise.leasing.assigner import OPERATION, LeaseAssignmentManager, Strategy
from shardwise.metrics.sink import InMemoryMetricsSink
from shardwise.tables.items import ItemTable
from support.clocks import FakeClock

MS = 1_000_000
FAILOVER_MS = 10_000
FAILOVER_NS = FAILOVER_MS * MS
EPOCH = 1_800_000_000.0


class RacingStore(SQLiteLeaseStore):
    """A SQLite store in which someone else may act on a lease just before the leader's write to it."""

    def __init__(self, path: Path, table_name: str) -> None:
        super().__init__(path, table_name)
        self.before_write: dict[str, Callable[[], None]] = {}
        self.writes: list[tuple[str, str, str]] = []  # (method, lease key, new owner)

    def _race(self, method: str, lease: Lease, new_owner: str) -> None:
        self.writes.append((method, lease.lease_key, new_owner))
        hook = self.before_write.pop(lease.lease_key, None)
        if hook is not None:
            hook()

    def assign_lease(self, lease: Lease, new_owner: str) -> Lease | None:
        self._race("assign", lease, new_owner)
        return super().assign_lease(lease, new_owner)

    def initiate_graceful_handoff(self, lease: Lease, new_owner: str) -> Lease | None:
        self._race("handoff", lease, new_owner)
        return super().initiate_graceful_handoff(lease, new_owner)


def key(n: int) -> str:
    return f"shardId-{n:012d}"


@pytest.fixture
def store(tmp_path: Path) -> RacingStore:
    store = RacingStore(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    return store


@pytest.fixture
def metrics_table(store: RacingStore) -> ItemTable:
    return open_coordinator_tables(store, "app").worker_metrics


def report(metrics_table: ItemTable, *workers: str, lut: float = EPOCH) -> None:
    for worker in workers:
        metrics_table.upsert(worker, metrics_to_attributes(WorkerMetricStats(worker, lut=int(lut))))


def create(store: SQLiteLeaseStore, count: int, owner: str | None = None) -> None:
    for n in range(count):
        lease = store.create_lease_if_not_exists(Lease(key(n), TRIM_HORIZON))
        assert lease is not None
        if owner is not None:
            assert store.take_lease(lease, owner) is not None


def owners(store: SQLiteLeaseStore) -> dict[str, tuple[str | None, str | None]]:
    """Lease key → (lease owner, checkpoint owner)."""
    return {lease.lease_key: (lease.lease_owner, lease.checkpoint_owner) for lease in store.list_leases()}


def held_counts(store: SQLiteLeaseStore) -> Counter[str | None]:
    """Lease owner → how many leases it holds."""
    return Counter(lease.lease_owner for lease in store.list_leases())


def renew(store: SQLiteLeaseStore, owner: str) -> None:
    """``owner`` renews every lease it holds outside a handoff."""
    for lease in store.list_leases():
        if lease.lease_owner == owner and lease.checkpoint_owner is None:
            assert store.renew_lease(lease) is not None


def manager(
    store: SQLiteLeaseStore,
    metrics_table: ItemTable,
    clock: FakeClock,
    *,
    strategy: Strategy = "lease-count",
    sink: InMemoryMetricsSink | None = None,
    config: AssignmentConfig | None = None,
    discovery_interval_ms: int = 0,
) -> LeaseAssignmentManager:
    return LeaseAssignmentManager(
        store,
        metrics_table,
        config=config or AssignmentConfig(),
        failover_time_ms=FAILOVER_MS,
        strategy=strategy,
        metrics=sink,
        clock_ns=clock,
        clock_epoch_s=lambda: EPOCH,
        rng=random.Random(3),
        discovery_interval_ms=discovery_interval_ms,
    )


@pytest.mark.parametrize("strategy", ["lease-count", "worker-utilization-aware"])
def test_it_assigns_unassigned_leases_and_reports_the_moves_it_wrote(
    store: RacingStore, metrics_table: ItemTable, strategy: Strategy
) -> None:
    create(store, 4)
    report(metrics_table, "w1", "w2")
    sink = InMemoryMetricsSink()
    run = manager(store, metrics_table, FakeClock(), strategy=strategy, sink=sink).run_once()

    assert run.workers == ("w1", "w2")
    assert run.failed == ()
    assert run.applied == tuple(move.lease_key for move in run.decision.moves)
    assert sorted(run.applied) == [key(n) for n in range(4)]
    assert {(move.reason, move.graceful) for move in run.decision.moves} == {("unassigned", False)}
    assert [method for method, _, _ in store.writes] == ["assign"] * 4
    held = owners(store)
    for move in run.decision.moves:
        assert held[move.lease_key] == (move.to_worker, None)
    assert held_counts(store) == {"w1": 2, "w2": 2}
    assert {name: sink.last(OPERATION, name) for name in ("TotalLeases", "NumWorkers", "ExpiredLeases")} == {
        "TotalLeases": 4,
        "NumWorkers": 2,
        "ExpiredLeases": 4,
    }
    assert sink.last(OPERATION, "FailedAssignmentCount") == 0
    assert sink.last(OPERATION, "NumOfLeasesReassignment") == 0


def test_a_lost_conditional_write_is_not_counted(
    store: RacingStore, metrics_table: ItemTable, caplog: pytest.LogCaptureFixture
) -> None:
    create(store, 4)
    report(metrics_table, "w1", "w2")

    def intruder_takes_it() -> None:  # another writer wins the race for key(1)
        current = store.get_lease(key(1))
        assert current is not None and store.take_lease(current, "intruder") is not None

    def throttled() -> None:
        raise DependencyError("throttled")

    store.before_write = {key(1): intruder_takes_it, key(2): throttled}
    sink = InMemoryMetricsSink()
    with caplog.at_level(logging.WARNING, logger="shardwise.leasing.assigner"):
        run = manager(store, metrics_table, FakeClock(), sink=sink).run_once()

    assert len(run.decision.moves) == 4
    assert sorted(run.failed) == [key(1), key(2)]
    assert sorted(run.applied) == [key(0), key(3)]
    assert sink.last(OPERATION, "FailedAssignmentCount") == 2
    assert f"could not move lease {key(2)} to " in caplog.text
    assert owners(store)[key(1)] == ("intruder", None)
    assert owners(store)[key(2)] == (None, None)


def test_a_lost_handoff_is_not_counted_as_a_reassignment(store: RacingStore, metrics_table: ItemTable) -> None:
    create(store, 4, owner="w1")
    report(metrics_table, "w1", "w2")
    sink = InMemoryMetricsSink()
    assigner = manager(store, metrics_table, FakeClock(), sink=sink)
    lost: list[str] = []

    def w1_releases_the_first() -> None:  # the owner let the first lease to be handed off go meanwhile
        if lost:
            return
        lease_key = store.writes[-1][1]
        current = store.get_lease(lease_key)
        assert current is not None and store.evict_lease(current) is not None
        lost.append(lease_key)

    store.before_write = dict.fromkeys((key(n) for n in range(4)), w1_releases_the_first)
    run = assigner.run_once()  # the term's first run rebalances: 2 of w1's 4 leases go to w2

    moves = run.decision.rebalance_moves
    assert len(moves) == 2
    assert all(move.graceful and move.to_worker == "w2" for move in moves)
    assert len(lost) == 1
    assert run.failed == tuple(lost)
    assert run.applied == tuple(move.lease_key for move in moves if move.lease_key not in lost)
    assert sink.last(OPERATION, "NumOfLeasesReassignment") == 1
    assert sink.last(OPERATION, "FailedAssignmentCount") == 1
    assert owners(store)[lost[0]] == (None, None)
    assert owners(store)[run.applied[0]] == ("w2", "w1")  # a graceful handoff: w1 checkpoints first


def test_it_does_not_move_leases_during_the_hold(store: RacingStore, metrics_table: ItemTable) -> None:
    create(store, 4, owner="w1")
    report(metrics_table, "w1", "w2")  # w2 holds nothing: a rebalance would hand it two leases
    clock = FakeClock()
    assigner = manager(store, metrics_table, clock)
    assigner.reset(skip_rebalance_until_ns=clock.now + 5_000 * MS)
    before = owners(store)
    for _ in range(3):  # the term's first run (on the cadence) and two runs within the hold
        run = assigner.run_once()
        assert not run.decision.rebalanced
        assert run.decision.moves == ()
        assert owners(store) == before
        renew(store, "w1")
        clock.advance(2_000 * MS)
    assert assigner.runs == 3
    run = assigner.run_once()  # past the hold, on the cadence (every 3rd run)
    assert len(run.applied) == 2
    assert held_counts(store) == {"w1": 2, "w2": 2}


def test_it_rebalances_on_the_first_run_of_a_term_and_then_every_third(
    store: RacingStore, metrics_table: ItemTable
) -> None:
    create(store, 6, owner="w1")
    report(metrics_table, "w1", "w2", "w3")
    clock = FakeClock()
    assigner = manager(store, metrics_table, clock, config=AssignmentConfig(graceful_lease_handoff=False))
    rebalanced = []
    for _ in range(4):
        rebalanced.append(assigner.run_once().decision.rebalanced)
        for worker in ("w1", "w2", "w3"):
            renew(store, worker)
        clock.advance(1_000 * MS)
    assert rebalanced == [True, False, False, True]
    assert held_counts(store) == {"w1": 2, "w2": 2, "w3": 2}


def test_it_judges_expiry_on_its_own_clock(store: RacingStore, metrics_table: ItemTable) -> None:
    create(store, 3, owner="w0")  # w0 reports no metrics: it gets no lease, its leases stay while renewed
    report(metrics_table, "w1")
    clock = FakeClock()
    assigner = manager(store, metrics_table, clock)

    first = assigner.run_once()  # a new term declares nothing expired yet
    assert (first.decision.expired_or_unassigned, first.applied) == (0, ())
    clock.advance(FAILOVER_NS // 2)
    lease = store.get_lease(key(0))
    assert lease is not None and store.renew_lease(lease) is not None  # w0 still renews key(0)
    clock.advance(FAILOVER_NS // 2)
    assert assigner.run_once().applied == ()  # exactly a failover time: not expired yet
    clock.advance(1)
    run = assigner.run_once()
    assert sorted(run.applied) == [key(1), key(2)]
    assert {(move.reason, move.to_worker) for move in run.decision.moves} == {("expired", "w1")}
    assert owners(store) == {key(0): ("w0", None), key(1): ("w1", None), key(2): ("w1", None)}

    assigner.reset()  # a new term starts from scratch: w0's key(0), unrenewed since, is not expired at once
    assert assigner.runs == 0
    clock.advance(FAILOVER_NS)
    assert assigner.run_once().decision.expired_or_unassigned == 0


def test_a_handed_off_lease_is_not_expired_before_its_new_owner_could_discover_it(
    store: RacingStore, metrics_table: ItemTable
) -> None:
    """A handoff does not move the counter: the handed-off lease keeps its old stamp. It stays put for the
    assignment grace (discovery interval + failover), then, its handoff unfinished, counts as expired and
    available again (#1765)."""
    create(store, 4, owner="w1")
    report(metrics_table, "w1", "w2")
    clock = FakeClock()
    config = AssignmentConfig(graceful_lease_handoff_timeout_ms=0)  # handoff grace: one failover time
    assigner = manager(store, metrics_table, clock, config=config, discovery_interval_ms=2 * FAILOVER_MS)
    handed = sorted(assigner.run_once().applied)
    assert len(handed) == 2
    assert all(owners(store)[lease_key] == ("w2", "w1") for lease_key in handed)

    for _ in range(2):  # 10 s, then 20 s after the handoffs: within the 30 s assignment grace
        clock.advance(FAILOVER_NS + MS)
        renew(store, "w1")  # w1 renews the leases it kept; nobody renews the handed-off ones
        run = assigner.run_once()
        assert run.decision.moves == ()
        assert run.decision.expired_or_unassigned == 0

    clock.advance(FAILOVER_NS + MS)  # 30 s: the grace is over and the handoffs never finished
    renew(store, "w1")
    run = assigner.run_once()
    reassigned = sorted(move.lease_key for move in run.decision.moves if move.reason == "expired")
    assert reassigned == handed
    assert all(owners(store)[lease_key][1] is None for lease_key in handed)  # assign_lease ends the handoff


def test_a_lease_in_a_graceful_handoff_is_not_moved_again_within_its_grace(
    store: RacingStore, metrics_table: ItemTable
) -> None:
    """Until the handoff finishes, the old owner still processes the lease (it is its actual owner), so the next
    rebalance still sees w1 overloaded; the leader must not pick the lease a second time."""
    for n in range(4):  # one lease w1 could give away; three finished ones (SHARD_END) that still weigh on it
        lease = store.create_lease_if_not_exists(Lease(key(n), TRIM_HORIZON if n == 0 else SHARD_END))
        assert lease is not None
        taken = store.take_lease(lease, "w1")
        assert taken is not None and store.renew_lease(taken, throughput_kbps=100.0) is not None
    report(metrics_table, "w1", "w2")
    clock = FakeClock()
    assigner = manager(store, metrics_table, clock, strategy="worker-utilization-aware")
    first = assigner.run_once()
    assert first.applied == (key(0),)
    assert first.decision.moves[0].graceful
    for _ in range(3):  # the third is the next rebalancing run; the handoff is still within its 40 s grace
        clock.advance(1_000 * MS)
        for lease in store.list_leases():  # everyone alive: the handoff is merely slow
            assert store.renew_lease(lease) is not None
        run = assigner.run_once()
        assert run.decision.moves == ()
    assert run.decision.rebalanced
    assert run.decision.rebalance_metric == "T"  # w1 is still out of balance, but has nothing left to give
    assert owners(store)[key(0)] == ("w2", "w1")


def test_it_deletes_stale_worker_metrics_and_keeps_the_latest_scan(
    store: RacingStore, metrics_table: ItemTable
) -> None:
    create(store, 2, owner="w1")
    report(metrics_table, "w1")
    report(metrics_table, "gone", lut=EPOCH - 2 * 86_400)
    clock = FakeClock()
    assert manager(store, metrics_table, clock).last_leases is None  # no run yet
    assigner = manager(store, metrics_table, clock)
    run = assigner.run_once()
    assert run.workers == ("w1",)
    assert metrics_table.get("gone") is None
    assert metrics_table.get("w1") is not None
    assert assigner.last_leases is not None
    scanned_at, leases = assigner.last_leases
    assert scanned_at == clock.now
    assert sorted(lease.lease_key for lease in leases) == [key(0), key(1)]
