"""The owner index (KCL 3.x ``LeaseOwnerToLeaseKeyIndex``) on both lease stores: created as KCL creates it,
its status, per-owner key queries, deletion."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pytest
from botocore.stub import Stubber

from shardwise.backends.aws.lease_table import OWNER_INDEX_NAME, DynamoDBLeaseStoreConfig
from shardwise.backends.aws.leases import DynamoDBLeaseStore
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.errors import DependencyError, ResourceNotFoundError, ThrottlingError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, OwnerIndex

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

REGION = "us-east-1"


class Server(Protocol):
    @property
    def endpoint_url(self) -> str: ...


def own(store: LeaseStore, key: str, owner: str | None) -> None:
    created = store.create_lease_if_not_exists(Lease(lease_key=key, checkpoint=TRIM_HORIZON))
    assert created is not None
    if owner is not None:
        assert store.take_lease(created, owner) is not None


def populate(store: LeaseStore) -> None:
    for index, owner in enumerate(["worker-a", "worker-b", "worker-a", None, "worker-a", "worker-b"]):
        own(store, f"shardId-{index:012d}", owner)


# ------------------------------------------------------------------------------------------------- DynamoDB


@pytest.fixture
def endpoint(moto_server: Server) -> str:
    return moto_server.endpoint_url


@pytest.fixture
def raw(endpoint: str) -> DynamoDBClient:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION)


StoreFactory = Callable[..., DynamoDBLeaseStore]


@pytest.fixture
def make_store(endpoint: str) -> StoreFactory:
    def make(**settings: Any) -> DynamoDBLeaseStore:
        settings.setdefault("table_name", f"owner-index-{uuid.uuid4().hex[:12]}")
        settings.setdefault("table_poll_interval_s", 0.05)
        store = DynamoDBLeaseStore(DynamoDBLeaseStoreConfig(**settings), endpoint_url=endpoint, region_name=REGION)
        store.create_table_if_not_exists()
        return store

    return make


def owner_index(raw: DynamoDBClient, table: str) -> dict[str, Any]:
    description = raw.describe_table(TableName=table)["Table"]
    [index] = [i for i in description.get("GlobalSecondaryIndexes", []) if i["IndexName"] == OWNER_INDEX_NAME]
    return dict(index)


@pytest.mark.aws
class TestDynamoDB:
    def test_satisfies_the_protocol(self, make_store: StoreFactory) -> None:
        assert isinstance(make_store(), OwnerIndex)

    def test_create_on_an_on_demand_table(self, make_store: StoreFactory, raw: DynamoDBClient) -> None:
        store = make_store()
        assert store.owner_index_status() is None
        assert store.create_owner_index() is True
        assert store.owner_index_status() == "ACTIVE"
        index = owner_index(raw, store.table_name)
        assert index["KeySchema"] == [
            {"AttributeName": "leaseOwner", "KeyType": "HASH"},
            {"AttributeName": "leaseKey", "KeyType": "RANGE"},
        ]
        assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
        throughput = index.get("ProvisionedThroughput", {})
        assert throughput.get("ReadCapacityUnits", 0) == throughput.get("WriteCapacityUnits", 0) == 0
        definitions = raw.describe_table(TableName=store.table_name)["Table"]["AttributeDefinitions"]
        assert {"AttributeName": "leaseOwner", "AttributeType": "S"} in definitions
        assert store.create_owner_index() is False  # exists: another worker got there first

    def test_create_on_a_provisioned_table_copies_its_capacity(
        self, make_store: StoreFactory, raw: DynamoDBClient
    ) -> None:
        store = make_store(billing_mode="PROVISIONED", read_capacity_units=7, write_capacity_units=3)
        assert store.create_owner_index() is True
        throughput = owner_index(raw, store.table_name)["ProvisionedThroughput"]
        assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (7, 3)
        assert store.owner_index_status() == "ACTIVE"

    def test_query_returns_each_owners_keys(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.create_owner_index()
        populate(store)
        before = store.consumed_capacity[0]
        assert store.list_lease_keys_for_owner("worker-a") == [
            "shardId-000000000000",
            "shardId-000000000002",
            "shardId-000000000004",
        ]
        assert store.list_lease_keys_for_owner("worker-b") == ["shardId-000000000001", "shardId-000000000005"]
        assert store.list_lease_keys_for_owner("nobody") == []
        assert store.consumed_capacity[0] > before

    def test_query_follows_the_owner_changes(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.create_owner_index()
        populate(store)
        lease = store.get_lease("shardId-000000000000")
        assert lease is not None
        assert store.assign_lease(lease, "worker-b") is not None
        assert store.list_lease_keys_for_owner("worker-b") == [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000005",
        ]

    def test_delete(self, make_store: StoreFactory) -> None:
        store = make_store()
        assert store.delete_owner_index() is False  # nothing to delete
        store.create_owner_index()
        assert store.delete_owner_index() is True
        assert store.owner_index_status() in (None, "DELETING")

    def test_missing_table(self, endpoint: str) -> None:
        store = DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=f"missing-{uuid.uuid4().hex[:8]}"),
            endpoint_url=endpoint,
            region_name=REGION,
        )
        with pytest.raises(ResourceNotFoundError, match="lease table"):
            store.owner_index_status()
        with pytest.raises(ResourceNotFoundError):
            store.create_owner_index()
        with pytest.raises(ResourceNotFoundError):
            store.list_lease_keys_for_owner("worker-a")


def stubbed_store() -> tuple[DynamoDBLeaseStore, Stubber]:
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url="http://127.0.0.1:9")
    return DynamoDBLeaseStore(DynamoDBLeaseStoreConfig(table_name="app"), client=client), Stubber(client)


def test_query_is_paginated_and_eventually_consistent() -> None:
    store, stubber = stubbed_store()
    expected = {
        "TableName": "app",
        "IndexName": OWNER_INDEX_NAME,
        "KeyConditionExpression": "#n0 = :v0",
        "ExpressionAttributeNames": {"#n0": "leaseOwner"},
        "ExpressionAttributeValues": {":v0": {"S": "worker-a"}},
        "ConsistentRead": False,
        "ReturnConsumedCapacity": "TOTAL",
    }
    last_key = {"leaseOwner": {"S": "worker-a"}, "leaseKey": {"S": "shardId-2"}}
    stubber.add_response(
        "query",
        {
            "Items": [
                {"leaseOwner": {"S": "worker-a"}, "leaseKey": {"S": "shardId-1"}},
                {"leaseOwner": {"S": "worker-a"}, "leaseKey": {"S": "shardId-2"}},
            ],
            "LastEvaluatedKey": last_key,
            "ConsumedCapacity": {"TableName": "app", "CapacityUnits": 0.5},
        },
        expected,
    )
    stubber.add_response(
        "query",
        {
            "Items": [{"leaseOwner": {"S": "worker-a"}, "leaseKey": {"S": "shardId-3"}}],
            "ConsumedCapacity": {"TableName": "app", "CapacityUnits": 0.5},
        },
        {**expected, "ExclusiveStartKey": last_key},
    )
    with stubber:
        assert store.list_lease_keys_for_owner("worker-a") == ["shardId-1", "shardId-2", "shardId-3"]
    assert store.consumed_capacity == (1.0, 0.0)


def test_a_concurrent_creation_is_not_an_error() -> None:
    store, stubber = stubbed_store()
    description = {"Table": {"TableName": "app", "TableStatus": "ACTIVE"}}
    stubber.add_response("describe_table", description)
    stubber.add_client_error("update_table", "ResourceInUseException", "Table is being updated")
    stubber.add_response("describe_table", description)
    stubber.add_client_error(
        "update_table", "ValidationException", "Attempting to create an index which already exists"
    )
    stubber.add_response("describe_table", description)
    stubber.add_client_error("update_table", "LimitExceededException", "too many")
    with stubber:
        assert store.create_owner_index() is False
        assert store.create_owner_index() is False
        with pytest.raises(DependencyError, match="LimitExceededException"):
            store.create_owner_index()


def test_query_throttling_is_translated() -> None:
    store, stubber = stubbed_store()
    stubber.add_client_error("query", "ProvisionedThroughputExceededException")
    with stubber, pytest.raises(ThrottlingError):
        store.list_lease_keys_for_owner("worker-a")


# --------------------------------------------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SQLiteLeaseStore:
    store = SQLiteLeaseStore(tmp_path / "leases.db", "app")
    store.create_table_if_not_exists()
    return store


class TestSQLite:
    def test_the_index_always_exists(self, sqlite_store: SQLiteLeaseStore) -> None:
        assert isinstance(sqlite_store, OwnerIndex)
        assert sqlite_store.owner_index_status() == "ACTIVE"
        assert sqlite_store.create_owner_index() is False
        assert sqlite_store.delete_owner_index() is False
        assert sqlite_store.owner_index_status() == "ACTIVE"

    def test_query_returns_each_owners_keys(self, sqlite_store: SQLiteLeaseStore) -> None:
        populate(sqlite_store)
        assert sqlite_store.list_lease_keys_for_owner("worker-a") == [
            "shardId-000000000000",
            "shardId-000000000002",
            "shardId-000000000004",
        ]
        assert sqlite_store.list_lease_keys_for_owner("worker-b") == ["shardId-000000000001", "shardId-000000000005"]
        assert sqlite_store.list_lease_keys_for_owner("nobody") == []
