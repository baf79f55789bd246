"""LeaseTaker (the I/O shell of the KCL 2.x taker) against a real SQLite lease store and a fake clock."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from shardwise.assignment.taker import TakerConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.errors import DependencyError, ThrottlingError
from shardwise.leases.model import Lease
from shardwise.leasing.taker import LeaseTaker
from support.clocks import FakeClock

CONFIG = TakerConfig()
MS = 1_000_000
FAILOVER_NS = CONFIG.failover_time_ms * MS
TAKER_INTERVAL_NS = CONFIG.taker_interval_ms * MS


class HookedStore(SQLiteLeaseStore):
    """A SQLite store that can fail scans or run a hook right after a scan returns (before any take)."""

    def __init__(self, path: Path, table_name: str) -> None:
        super().__init__(path, table_name)
        self.scan_failures: list[Exception] = []
        self.after_scan: Callable[[list[Lease]], None] | None = None
        self.reads: list[str] = []

    def list_leases(self) -> list[Lease]:
        if self.scan_failures:
            raise self.scan_failures.pop(0)
        leases = super().list_leases()
        if self.after_scan is not None:
            hook, self.after_scan = self.after_scan, None
            hook(leases)
        return leases

    def get_lease(self, lease_key: str) -> Lease | None:
        self.reads.append(lease_key)
        return super().get_lease(lease_key)


def key(n: int) -> str:
    return f"shardId-{n:012d}"


@pytest.fixture
def store(tmp_path: Path) -> HookedStore:
    created = HookedStore(tmp_path / "leases.db", "app")
    created.create_table_if_not_exists()
    return created


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def create_leases(store: SQLiteLeaseStore, count: int) -> None:
    for n in range(count):
        assert store.create_lease_if_not_exists(Lease(key(n), TRIM_HORIZON)) is not None


def owners(store: SQLiteLeaseStore) -> dict[str, str | None]:
    return {lease.lease_key: lease.lease_owner for lease in store.list_leases()}


def held_by(store: SQLiteLeaseStore, worker: str) -> set[str]:
    return {k for k, owner in owners(store).items() if owner == worker}


def renew_all(store: SQLiteLeaseStore) -> None:
    """What every worker's renewer does between taker runs."""
    for lease in store.list_leases():
        if lease.lease_owner is not None:
            assert store.renew_lease(lease) is not None


def taker(
    store: SQLiteLeaseStore, worker: str, clock: FakeClock, seed: int = 1, config: TakerConfig = CONFIG
) -> LeaseTaker:
    return LeaseTaker(store, worker, config, clock_ns=clock, rng=random.Random(seed))


def test_first_run_takes_every_never_owned_lease(store: HookedStore, clock: FakeClock) -> None:
    create_leases(store, 5)
    a = taker(store, "A", clock)
    taken = a.take_leases()
    assert sorted(lease.lease_key for lease in taken) == [key(n) for n in range(5)]
    assert all(lease.lease_owner == "A" and lease.lease_counter == 1 for lease in taken)
    assert all(lease.owner_switches_since_checkpoint == 0 for lease in taken)
    assert held_by(store, "A") == {key(n) for n in range(5)}
    decision = a.last_decision
    assert decision is not None and decision.priority
    metrics = a.last_metrics
    assert metrics is not None
    assert metrics.as_dict()["TakenLeases"] == 5
    assert metrics.very_old_leases == 5
    assert metrics.expired_leases == 5
    assert metrics.num_workers == 1
    # The taken leases are remembered as freshly renewed: the next run takes nothing.
    assert all(obs.last_counter_change_ns == clock.now for obs in a.observations.values())
    assert a.take_leases() == []
    assert a.runs == 2
    assert a.total_taken == 5


def test_second_worker_steals_one_lease_per_run_until_balanced(
    store: HookedStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    create_leases(store, 5)
    assert len(taker(store, "A", clock).take_leases()) == 5
    b = taker(store, "B", clock)

    caplog.set_level(logging.INFO, logger="shardwise.leasing.taker")
    stolen: list[Lease] = []
    for _ in range(2):
        clock.advance(TAKER_INTERVAL_NS)
        renew_all(store)
        taken = b.take_leases()
        assert len(taken) == 1
        decision = b.last_decision
        assert decision is not None and decision.steal_from == "A"
        stolen.extend(taken)
    assert "needed 3 leases but none were expired, so it will steal lease" in caplog.text
    assert "needed 2 leases but none were expired, so it will steal lease" in caplog.text
    assert all(lease.owner_switches_since_checkpoint == 1 for lease in stolen)

    for _ in range(3):  # balanced (3 + 2): no more steals
        clock.advance(TAKER_INTERVAL_NS)
        renew_all(store)
        assert b.take_leases() == []
    assert len(held_by(store, "A")) == 3
    assert held_by(store, "B") == {lease.lease_key for lease in stolen}


def test_leases_expire_after_the_failover_time_on_the_observers_clock(store: HookedStore, clock: FakeClock) -> None:
    create_leases(store, 1)
    assert len(taker(store, "A", clock).take_leases()) == 1
    # A stops renewing. B only starts counting when it first sees the lease, however long ago A renewed it.
    clock.advance(10 * FAILOVER_NS)
    b = taker(store, "B", clock)
    assert b.take_leases() == []  # 1 lease, 2 workers: target 1, A at target, B needs 1: no steal
    first_seen = clock.now

    clock.advance(FAILOVER_NS)  # exactly the failover time: not expired yet
    assert b.take_leases() == []
    decision = b.last_decision
    assert decision is not None and decision.expired_keys == ()

    clock.advance(1)
    taken = b.take_leases()
    assert [(lease.lease_key, lease.lease_owner) for lease in taken] == [(key(0), "B")]
    assert taken[0].owner_switches_since_checkpoint == 1
    assert clock.now - first_seen == FAILOVER_NS + 1
    metrics = b.last_metrics
    assert metrics is not None and metrics.expired_leases == 1 and metrics.very_old_leases == 0


def test_a_renewal_restarts_the_observers_expiry_timer(store: HookedStore, clock: FakeClock) -> None:
    create_leases(store, 1)
    assert len(taker(store, "A", clock).take_leases()) == 1
    b = taker(store, "B", clock)
    assert b.take_leases() == []

    clock.advance(FAILOVER_NS - MS)
    renew_all(store)  # A's last renewal, just before B would have considered the lease expired
    clock.advance(MS + 1)
    assert b.take_leases() == []  # counter moved since B's last scan: fresh again

    clock.advance(FAILOVER_NS)
    assert b.take_leases() == []
    clock.advance(1)
    assert [lease.lease_owner for lease in b.take_leases()] == ["B"]


def test_a_lost_race_is_skipped(store: HookedStore, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    create_leases(store, 3)

    def intruder(leases: list[Lease]) -> None:
        # Another worker takes shard 1 between A's scan and A's take.
        assert store.take_lease(leases[1], "intruder") is not None

    store.after_scan = intruder
    a = taker(store, "A", clock)
    caplog.set_level(logging.DEBUG, logger="shardwise.leasing.taker")
    taken = a.take_leases()
    assert sorted(lease.lease_key for lease in taken) == [key(0), key(2)]
    assert owners(store) == {key(0): "A", key(1): "intruder", key(2): "A"}
    assert "lost the race for lease shardId-000000000001" in caplog.text
    assert "failed to take 1 leases: shardId-000000000001" in caplog.text
    metrics = a.last_metrics
    assert metrics is not None and (metrics.taken_leases, metrics.untaken_leases) == (2, 1)


def test_a_slow_scan_rereads_leases_before_stealing_them(store: HookedStore, clock: FakeClock) -> None:
    create_leases(store, 2)
    assert len(taker(store, "A", clock).take_leases()) == 2
    b = taker(store, "B", clock)

    def slow_scan_while_a_renews(leases: list[Lease]) -> None:
        renew_all(store)
        clock.advance(CONFIG.failover_time_ms // 3 * MS // 2 + 1)  # > 50 % of the renewal interval

    store.after_scan = slow_scan_while_a_renews
    taken = b.take_leases()
    assert [lease.lease_owner for lease in taken] == ["B"]
    assert store.reads == [taken[0].lease_key]


def test_a_fast_scan_steals_the_scanned_value_and_can_lose(store: HookedStore, clock: FakeClock) -> None:
    create_leases(store, 2)
    assert len(taker(store, "A", clock).take_leases()) == 2
    b = taker(store, "B", clock)

    store.after_scan = lambda leases: renew_all(store)  # A renews right after B's (fast) scan
    assert b.take_leases() == []
    assert store.reads == []
    assert held_by(store, "A") == {key(0), key(1)}


def test_a_failed_scan_is_retried_once(store: HookedStore, clock: FakeClock) -> None:
    create_leases(store, 2)
    store.scan_failures = [ThrottlingError("slow down")]
    a = taker(store, "A", clock)
    assert len(a.take_leases()) == 2


def test_a_scan_throttled_twice_ends_the_run_with_nothing_taken(store: HookedStore, clock: FakeClock) -> None:
    create_leases(store, 2)
    store.scan_failures = [ThrottlingError("slow down"), ThrottlingError("slow down")]
    a = taker(store, "A", clock)
    assert a.take_leases() == []
    metrics = a.last_metrics
    assert metrics is not None and metrics.as_dict()["ListLeases"] == 0
    assert a.last_decision is None
    assert len(a.take_leases()) == 2


def test_a_scan_failing_twice_for_another_reason_raises(store: HookedStore, clock: FakeClock) -> None:
    store.scan_failures = [DependencyError("down"), DependencyError("still down")]
    with pytest.raises(DependencyError, match="still down"):
        taker(store, "A", clock).take_leases()


def test_max_leases_for_worker_limits_the_first_run(store: HookedStore, clock: FakeClock) -> None:
    create_leases(store, 6)
    a = taker(store, "A", clock, config=TakerConfig(max_leases_for_worker=4))
    assert len(a.take_leases()) == 4
    clock.advance(TAKER_INTERVAL_NS)
    renew_all(store)
    assert a.take_leases() == []  # at the max: priority takes nothing more
    metrics = a.last_metrics
    assert metrics is not None and metrics.lease_spillover == 2


def test_each_taken_lease_is_stamped_right_before_its_own_take(tmp_path: Path, clock: FakeClock) -> None:
    """A slow take run must not leave its last leases stamped at the run's start: the renewer counts each lease's
    local expiry from its stamp."""

    class SlowTakes(HookedStore):
        def take_lease(self, lease: Lease, owner: str) -> Lease | None:
            clock.advance(5_000_000_000)
            return super().take_lease(lease, owner)

    store = SlowTakes(tmp_path / "slow.db", "app")
    store.create_table_if_not_exists()
    create_leases(store, 3)
    start = clock.now
    a = taker(store, "A", clock)
    assert len(a.take_leases()) == 3
    assert sorted(a.last_take_stamps.values()) == [start, start + 5_000_000_000, start + 10_000_000_000]
