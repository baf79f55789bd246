"""The DynamoDB lease store's read-saving parts (issue 15), against the moto server: assignment signals on lease
items, the malformed items of the last scan, and a malformed-lease reporter that rides on scans made anyway."""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

import boto3
import pytest

from shardwise.backends.aws.lease_signals import ATTR_ASSIGNMENT_SIGNAL
from shardwise.backends.aws.lease_table import DynamoDBLeaseStoreConfig
from shardwise.backends.aws.leases import DynamoDBLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.leases.model import Lease
from shardwise.leases.store import AssignmentSignals, SharedTableScan
from shardwise.leasing.bad_items import METRIC_NAME, METRIC_OPERATION, MalformedLeaseReporter
from shardwise.metrics import InMemoryMetricsSink
from support.clocks import FakeClock

pytestmark = pytest.mark.aws

REGION = "us-east-1"
KEY = "shardId-000000000000"
OTHER = "shardId-000000000001"
BAD = "shardId-000000000002"


class Server(Protocol):
    @property
    def endpoint_url(self) -> str: ...


@pytest.fixture
def table_name() -> str:
    return f"shardwise-signals-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["fast", "boto3"])
def stores(
    moto_server: Server, table_name: str, request: pytest.FixtureRequest
) -> tuple[DynamoDBLeaseStore, DynamoDBLeaseStore]:
    """Two workers' stores of one table: the leader's and a worker's (lease updates on either client)."""
    config = DynamoDBLeaseStoreConfig(table_name=table_name, table_poll_interval_s=0.05)
    leader, worker = (
        DynamoDBLeaseStore(config, endpoint_url=moto_server.endpoint_url, region_name=REGION, data_client=request.param)
        for _ in range(2)
    )
    leader.create_table_if_not_exists()
    return leader, worker


def _owned(store: DynamoDBLeaseStore, key: str, owner: str) -> Lease:
    created = store.create_lease_if_not_exists(Lease(key, TRIM_HORIZON))
    assert created is not None
    taken = store.take_lease(created, owner)
    assert taken is not None
    return taken


def test_a_signal_reaches_the_holder_through_its_next_renewal(
    stores: tuple[DynamoDBLeaseStore, DynamoDBLeaseStore],
) -> None:
    leader, worker = stores
    assert isinstance(worker, AssignmentSignals)
    _owned(leader, KEY, "w1")
    held = worker.get_lease(KEY)  # the worker's first sighting (its discovery read) only notes the signal
    assert held is not None
    renewed = worker.renew_lease(held)
    assert renewed is not None
    assert worker.assignment_signals_seen() == 0

    assert leader.signal_assignment(held) is True
    # The signal leaves the counter alone: the holder's renewal, conditioned on the counter it read, still holds.
    again = worker.renew_lease(renewed)
    assert again is not None and again.lease_counter == renewed.lease_counter + 1
    assert worker.assignment_signals_seen() == 1
    assert worker.renew_lease(again) is not None
    assert worker.assignment_signals_seen() == 1  # the same signal counts once


def test_a_signal_needs_the_observed_owner(stores: tuple[DynamoDBLeaseStore, DynamoDBLeaseStore]) -> None:
    leader, _ = stores
    held = _owned(leader, KEY, "w1")
    assert leader.signal_assignment(held.with_changes(lease_owner="w2")) is False
    assert leader.signal_assignment(held.with_changes(lease_owner=None)) is False
    raw = boto3.client("dynamodb", endpoint_url=leader.client.meta.endpoint_url, region_name=REGION)
    item = raw.get_item(TableName=leader.table_name, Key={"leaseKey": {"S": KEY}}, ConsistentRead=True)["Item"]
    assert ATTR_ASSIGNMENT_SIGNAL not in item
    assert leader.signal_assignment(held) is True
    item = raw.get_item(TableName=leader.table_name, Key={"leaseKey": {"S": KEY}}, ConsistentRead=True)["Item"]
    assert item[ATTR_ASSIGNMENT_SIGNAL] == {"N": "1"}
    assert leader.get_lease(KEY) == held  # still the same lease to every reader


def _plant_malformed(store: DynamoDBLeaseStore) -> None:
    raw = boto3.client("dynamodb", endpoint_url=store.client.meta.endpoint_url, region_name=REGION)
    raw.put_item(TableName=store.table_name, Item={"leaseKey": {"S": BAD}, "checkpoint": {"S": "TRIM_HORIZON"}})


def test_every_full_scan_records_its_malformed_items(stores: tuple[DynamoDBLeaseStore, DynamoDBLeaseStore]) -> None:
    leader, _ = stores
    assert isinstance(leader, SharedTableScan)
    assert leader.last_scan_malformed() == (0, [])
    _owned(leader, KEY, "w1")
    _plant_malformed(leader)
    for read in (leader.list_leases, leader.list_leases_and_other_items, leader.scan_leases):
        before = leader.last_scan_malformed()[0]
        read()
        number, malformed = leader.last_scan_malformed()
        assert number == before + 1
        assert [bad.key for bad in malformed] == [BAD]


def test_the_reporter_rides_on_scans_made_anyway_and_scans_only_when_needed(
    stores: tuple[DynamoDBLeaseStore, DynamoDBLeaseStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    store, _ = stores
    _owned(store, OTHER, "w1")
    _plant_malformed(store)
    clock = FakeClock()
    metrics = InMemoryMetricsSink()
    needed = [False]
    reporter = MalformedLeaseReporter(store, metrics, clock, interval_ms=1_000, scan_needed=lambda: needed[0])

    def scans() -> int:
        return store.last_scan_others()[0]

    reporter.run()  # nobody scanned and no scan is needed: nothing read, nothing reported
    assert scans() == 0 and metrics.values(METRIC_OPERATION, METRIC_NAME) == []

    store.list_leases()  # e.g. the taker's or the leader's scan
    reporter.run()
    assert scans() == 1  # the reporter used that scan, and read nothing itself
    assert metrics.values(METRIC_OPERATION, METRIC_NAME) == [1]
    assert any(repr(BAD) in r.getMessage() and "shardwise leases repair" in r.getMessage() for r in caplog.records)

    needed[0] = True  # e.g. the leader publishes malformed items: the reporter scans when nobody else did
    clock.advance(1_000_000_000)
    reporter.run()
    assert scans() == 2 and metrics.values(METRIC_OPERATION, METRIC_NAME) == [1, 1]
    reporter.run()  # its own scan is not mistaken for someone else's
    assert scans() == 3 and metrics.values(METRIC_OPERATION, METRIC_NAME) == [1, 1, 1]
