"""The running feature-level check reads nothing of its own where the worker scans the lease table anyway, reads
the two items only when the leader's publication changes under a shardwise 3.x leader, and falls back to reading
them every ``FALLBACK_TICKS`` ticks otherwise (issue 15)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.metrics.sink import NullMetricsSink
from shardwise.versions.features import LEASE_ASSIGNMENT, SupportedRange
from shardwise.worker.config import WorkerConfig
from shardwise.worker.features import FALLBACK_TICKS, FeatureVersions
from shardwise.worker.items import CoordinatorItems
from shardwise.worker_metrics import WorkerMetricsCollector
from support.dynamodb_units import ReadUnitsMeter
from support.standins import Server

pytestmark = pytest.mark.aws

SUPPORTED = {LEASE_ASSIGNMENT: SupportedRange(0, 1)}


@pytest.fixture
def store(moto_server: Server) -> DynamoDBLeaseStore:
    table = f"features-{uuid.uuid4().hex[:8]}"
    lease_store = DynamoDBLeaseStore(
        DynamoDBLeaseStoreConfig(table_name=table), endpoint_url=moto_server.endpoint_url, region_name="us-east-1"
    )
    lease_store.create_table_if_not_exists()
    return lease_store


def _versions(
    store: DynamoDBLeaseStore, published: Callable[[], str | None] | None = None
) -> tuple[FeatureVersions, ReadUnitsMeter]:
    """A worker's feature check; one given ``published`` (a 3.x worker that does not lead) does not scan."""
    config = WorkerConfig(store.table_name, "stream", worker_id="w1")
    items = CoordinatorItems(
        config,
        store,
        collector=WorkerMetricsCollector(None),
        metrics=NullMetricsSink(),
        clock_epoch_s=lambda: 1_000.0,
    )
    if published is None:
        versions = FeatureVersions(config, items, clock_epoch_s=lambda: 1_000.0, lease_store=store)
    else:
        versions = FeatureVersions(config, items, clock_epoch_s=lambda: 1_000.0, published=published)
    meter = ReadUnitsMeter()
    meter.attach(store.client)
    return versions, meter


def _finalize_assignment_2(versions: FeatureVersions) -> None:
    feature_store = versions.store()
    current = feature_store.read()
    assert feature_store.apply(current, {LEASE_ASSIGNMENT: 2}, "test") is not None


def _item_reads(meter: ReadUnitsMeter) -> int:
    return sum(n for kind, n in meter.snapshot().requests.items() if kind.startswith("GetItem"))


def test_admission_reads_the_items_and_a_scanning_worker_reads_them_from_its_scan(store: DynamoDBLeaseStore) -> None:
    versions, meter = _versions(store)
    assert versions.first_unsupported(SUPPORTED) is None  # admission: the two consistent GetItems
    assert _item_reads(meter) == 2
    store.list_leases()  # the worker's own scan (the 2.x taker's, the 3.x leader's)
    assert versions.first_unsupported(SUPPORTED, running=True) is None
    assert _item_reads(meter) == 2
    assert versions.sources["scan"] == 1
    _finalize_assignment_2(versions)
    before = _item_reads(meter)
    store.list_leases()
    found = versions.first_unsupported(SUPPORTED, running=True)
    assert found is not None
    assert found[0][:2] == (LEASE_ASSIGNMENT, 2)
    assert found[1].startswith("Migration3.0")  # lease.assignment 2 is reflected from Migration3.0
    assert _item_reads(meter) == before  # noticed from the scan, without reading the items


def test_a_worker_without_a_scan_reads_the_items_every_fallback_ticks(store: DynamoDBLeaseStore) -> None:
    versions, meter = _versions(store)
    assert versions.first_unsupported(SUPPORTED) is None
    _finalize_assignment_2(versions)
    start = _item_reads(meter)
    results = [versions.first_unsupported(SUPPORTED, running=True) for _ in range(FALLBACK_TICKS)]
    assert results[:-1] == [None] * (FALLBACK_TICKS - 1)  # nothing new to look at: no read
    assert _item_reads(meter) - start == 2  # one fallback read of the two items ...
    last = results[-1]
    assert last is not None and last[0][:2] == (LEASE_ASSIGNMENT, 2)  # ... which notices the change


def test_a_scan_that_stopped_early_does_not_count(store: DynamoDBLeaseStore) -> None:
    versions, _meter = _versions(store)
    before = store.last_scan_others()[0]
    assert store.list_leases() == []
    assert store.last_scan_others()[0] == before + 1
    versions.first_unsupported(SUPPORTED, running=True)
    assert versions.sources == {"scan": 1, "read": 0, "skipped": 0}
    versions.first_unsupported(SUPPORTED, running=True)  # no scan since: a skipped tick, not a stale reuse
    assert versions.sources == {"scan": 1, "read": 0, "skipped": 1}


def test_under_a_publishing_leader_a_worker_reads_the_items_only_when_the_publication_changes(
    store: DynamoDBLeaseStore,
) -> None:
    publication: list[str | None] = [None]
    versions, meter = _versions(store, lambda: publication[0])
    leader_versions, _ = _versions(store)
    assert versions.first_unsupported(SUPPORTED) is None  # admission: the two consistent GetItems
    assert leader_versions.first_unsupported(SUPPORTED) is None
    assert versions.summary == leader_versions.summary
    publication[0] = leader_versions.summary  # the leader publishes what it read: the same as this worker
    start = _item_reads(meter)
    assert [versions.first_unsupported(SUPPORTED, running=True) for _ in range(3 * FALLBACK_TICKS)] == [None] * (
        3 * FALLBACK_TICKS
    )
    assert _item_reads(meter) == start  # a steady fleet: never a read, not even the fallback's

    _finalize_assignment_2(leader_versions)  # (reads through its own client)
    start = _item_reads(meter)
    assert versions.first_unsupported(SUPPORTED, running=True) is None  # the leader has not noticed yet
    assert _item_reads(meter) == start
    store.list_leases()  # the leader's next assignment run scans ...
    assert leader_versions.first_unsupported(SUPPORTED, running=True) is not None
    publication[0] = leader_versions.summary  # ... and its next heartbeat publishes the new levels
    assert publication[0] is not None and f"{LEASE_ASSIGNMENT}=2" in publication[0]
    before = _item_reads(meter)
    found = versions.first_unsupported(SUPPORTED, running=True)
    assert found is not None and found[0][:2] == (LEASE_ASSIGNMENT, 2)
    assert _item_reads(meter) - before == 2  # one read of the two items, at once
    assert versions.first_unsupported(SUPPORTED, running=True) is None  # read: nothing new until it changes again
    assert _item_reads(meter) - before == 2


def test_a_publication_that_never_matches_what_the_worker_reads_costs_one_read_per_change(
    store: DynamoDBLeaseStore,
) -> None:
    publication: list[str | None] = ["table.layout=2,some.future.feature=3"]  # a newer leader's view, say
    versions, meter = _versions(store, lambda: publication[0])
    versions.first_unsupported(SUPPORTED)
    start = _item_reads(meter)
    for _ in range(3 * FALLBACK_TICKS):
        versions.first_unsupported(SUPPORTED, running=True)
    assert _item_reads(meter) - start == 2  # read once for the publication, then not again while it stays
    publication[0] = None  # a leader that publishes nothing (a Java worker): the fallback schedule again
    for _ in range(FALLBACK_TICKS):
        versions.first_unsupported(SUPPORTED, running=True)
    assert _item_reads(meter) - start == 4
