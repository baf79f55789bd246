"""A 3.x worker under a shardwise leader queries the owner index only when told to (issue 15): it holds no lease,
a lease it was given could not be taken yet, a renewal returned a changed assignment signal, or five polling
ceilings have passed. Under a leader that publishes nothing (a Java worker) it polls as KCL does."""

from __future__ import annotations

import random
import uuid

import pytest

from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.leadership.lock import ATTR_FINALIZED_FEATURES, ATTR_MALFORMED_LEASES, ATTR_PUBLISHED_BY, LeaderLock
from shardwise.leases.model import Lease
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.metrics.sink import NullMetricsSink
from shardwise.worker.config import CoordinationConfig, WorkerConfig
from shardwise.worker.generations import GenerationContext, UtilizationGeneration
from shardwise.worker.items import CoordinatorItems
from shardwise.worker_metrics import WorkerMetricsCollector
from support.clocks import FakeClock
from support.dynamodb_units import ReadUnitsMeter
from support.standins import Server

pytestmark = pytest.mark.aws

S = 1_000_000_000
CEILING_MS = 60_000


def _key(n: int) -> str:
    return f"shardId-{n:012d}"


class Setup:
    def __init__(self, server: Server, *, leader_publishes: bool) -> None:
        table = f"signals-{uuid.uuid4().hex[:8]}"
        self.store = DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=table), endpoint_url=server.endpoint_url, region_name="us-east-1"
        )
        self.store.create_table_if_not_exists()
        self.clock = FakeClock()
        config = WorkerConfig(
            table,
            "stream",
            worker_id="w2",
            assignment="utilization-3x",
            coordination=CoordinationConfig(max_lease_discovery_interval_ms=CEILING_MS),
        )
        items = CoordinatorItems(
            config,
            self.store,
            collector=WorkerMetricsCollector(None),
            metrics=NullMetricsSink(),
            clock_epoch_s=lambda: 1.0,
        )
        self.renewer = LeaseRenewer(self.store, "w2", failover_time_ms=10_000, clock_ns=self.clock)
        context = GenerationContext(
            config,
            self.store,
            self.renewer,
            items,
            NullMetricsSink(),
            self.clock,
            lambda: 1.0,
            random.Random(0),
            lambda: False,
            lambda: "lease.assignment=1",  # what w2 last read of the finalized levels
        )
        self.generation = UtilizationGeneration(context)
        self.generation.open()
        self.published = {ATTR_PUBLISHED_BY: "w1"} if leader_publishes else {}
        self.leader = LeaderLock(items.open().coordinator, "w1", published=lambda: self.published)
        assert self.leader.try_acquire()
        assert self.generation.assign() is None  # w2 reads the lock: w1 leads
        self.meter = ReadUnitsMeter()
        self.meter.attach(self.store.client)

    def publish(self, attribute: str, value: str) -> None:
        """The leader writes ``attribute`` on the lock item at its next heartbeat; w2 reads the lock next."""
        self.published[attribute] = value
        assert self.leader.heartbeat()
        lock = self.generation.lock
        assert lock is not None
        assert lock.try_acquire() is False  # w2's next read of the lock

    def queries(self) -> int:
        return sum(n for kind, n in self.meter.snapshot().requests.items() if kind.startswith("Query"))

    def assign(self, n: int) -> Lease:
        """The leader's side: create a lease and give it to w2."""
        lease = self.store.create_lease_if_not_exists(Lease(_key(n), TRIM_HORIZON))
        assert lease is not None
        assigned = self.store.assign_lease(lease, "w2")
        assert assigned is not None
        return assigned

    def discover(self) -> list[str]:
        found = self.generation.discover()
        self.renewer.add_leases(found)
        return [lease.lease_key for lease in found]


def test_signalled_discovery_reads_only_when_told(moto_server: Server) -> None:
    setup = Setup(moto_server, leader_publishes=True)
    first = setup.assign(0)
    assert setup.discover() == [_key(0)]  # holding nothing: it queries
    assert setup.queries() == 1
    for _ in range(20):  # holding a lease, nothing signalled: no query, however often it looks
        setup.clock.advance(S)
        setup.renewer.renew_all()
        assert setup.discover() == []
    assert setup.queries() == 1
    assert setup.generation.discovery_interval_s() <= 10

    setup.assign(1)
    leader_side = DynamoDBLeaseStore(setup.store.config, client=setup.store.client)
    held = leader_side.get_lease(first.lease_key)
    assert held is not None and leader_side.signal_assignment(held)
    assert setup.discover() == []  # the signal is not seen before the holder's next renewal
    assert setup.queries() == 1
    setup.renewer.renew_all()
    assert setup.discover() == [_key(1)]  # the renewal returned it: one query, and the lease is found
    assert setup.queries() == 2

    for _ in range(5 * CEILING_MS // 3_000 - 1):  # renewing every 3 s, for five polling ceilings less 3 s
        setup.clock.advance(3 * S)
        setup.renewer.renew_all()
        assert setup.discover() == []
    assert setup.queries() == 2
    setup.clock.advance(3 * S)  # five polling ceilings since the last query: one unsignalled query
    setup.renewer.renew_all()
    assert setup.discover() == []
    assert setup.queries() == 3


def test_under_a_leader_that_publishes_nothing_it_polls(moto_server: Server) -> None:
    setup = Setup(moto_server, leader_publishes=False)
    setup.assign(0)
    assert setup.discover() == [_key(0)]
    for _ in range(3):
        setup.clock.advance(S)
        setup.discover()
    assert setup.queries() == 4  # every run queries; the loop itself backs off between runs
    assert setup.generation.discovery_interval_s() > 10


def test_a_worker_holding_nothing_polls_at_kcls_interval(moto_server: Server) -> None:
    setup = Setup(moto_server, leader_publishes=True)
    base_s = WorkerConfig("a", "s").lease_discovery_interval_ms / 1000
    assert setup.discover() == []
    assert setup.queries() == 1
    setup.clock.advance(int((base_s - 1) * S))
    assert setup.discover() == []
    assert setup.queries() == 1  # not yet: KCL's interval since the last query
    setup.clock.advance(S)
    setup.assign(0)
    assert setup.discover() == [_key(0)]
    assert setup.queries() == 2


@pytest.mark.parametrize("leader_publishes", [True, False])
def test_a_worker_scans_for_malformed_leases_only_when_the_leader_says_so(
    moto_server: Server, leader_publishes: bool
) -> None:
    setup = Setup(moto_server, leader_publishes=leader_publishes)
    # A leader that publishes nothing (a Java worker): scan for yourself. A shardwise leader that has not scanned
    # yet: it will, and publish what it found.
    assert setup.generation.needs_own_malformed_scan() is not leader_publishes
    if not leader_publishes:
        return
    for count, needed in (("2", True), ("0", False)):
        setup.publish(ATTR_MALFORMED_LEASES, count)
        assert setup.generation.needs_own_malformed_scan() is needed


@pytest.mark.parametrize("leader_publishes", [True, False])
def test_the_leaders_finalized_features_reach_the_others_on_the_lock(
    moto_server: Server, leader_publishes: bool
) -> None:
    setup = Setup(moto_server, leader_publishes=leader_publishes)
    setup.publish(ATTR_FINALIZED_FEATURES, "lease.assignment=2")
    # Only a shardwise leader's publication counts (a Java worker taking the lock over keeps the old attribute).
    assert setup.generation.published_features() == ("lease.assignment=2" if leader_publishes else None)

    # When w2 leads, it publishes what it read itself, and takes no publication from its own lock.
    assert setup.leader.release()
    lock = setup.generation.lock
    assert lock is not None and lock.try_acquire()  # w2 takes the released lock
    seen = setup.leader.current()  # as w1 reads it now
    assert seen is not None and seen.finalized_features == "lease.assignment=1" and seen.from_shardwise_leader
    assert setup.generation.published_features() is None
