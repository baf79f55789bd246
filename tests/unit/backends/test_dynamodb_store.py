"""Tests specific to the DynamoDB lease store, against the moto server (the generic behaviour of every
operation is in the contract suite, tests/contract/test_lease_store.py)."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from shardwise.backends.aws.lease_items import Item, lease_from_item, lease_to_item
from shardwise.backends.aws.lease_table import DynamoDBLeaseStoreConfig
from shardwise.backends.aws.leases import DynamoDBLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import (
    AccessDeniedError,
    ConfigurationError,
    DependencyError,
    InvalidStateError,
    ResourceNotFoundError,
    TableNotFoundError,
    ThrottlingError,
)
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

pytestmark = pytest.mark.aws

REGION = "us-east-1"
WORKER = "4f7c1a2e-8b3d-4e59-9a61-0c2d7e5b9f13"
SEQ = "49682361785432198765432101234567890123456789012345672690"

StoreFactory = Callable[..., DynamoDBLeaseStore]


class Server(Protocol):
    """What these tests use of the ``moto_server`` fixture (tests/support/standins.py)."""

    @property
    def endpoint_url(self) -> str: ...


@pytest.fixture
def endpoint(moto_server: Server) -> str:
    return moto_server.endpoint_url


@pytest.fixture
def raw_client(endpoint: str) -> DynamoDBClient:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture
def table_name() -> str:
    return f"shardwise-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_store(endpoint: str, table_name: str) -> StoreFactory:
    def make(*, client: DynamoDBClient | None = None, **settings: Any) -> DynamoDBLeaseStore:
        settings.setdefault("table_name", table_name)
        settings.setdefault("table_poll_interval_s", 0.05)
        config = DynamoDBLeaseStoreConfig(**settings)
        if client is not None:
            return DynamoDBLeaseStore(config, client=client)
        return DynamoDBLeaseStore(config, endpoint_url=endpoint, region_name=REGION)

    return make


@pytest.fixture
def store(make_store: StoreFactory) -> DynamoDBLeaseStore:
    store = make_store()
    assert store.create_table_if_not_exists() is True
    return store


def new_lease(key: str = "shardId-000000000000", **changes: object) -> Lease:
    lease = Lease(lease_key=key, checkpoint=TRIM_HORIZON, hash_key_range=HashKeyRange(0, MAX_HASH_KEY))
    return lease.with_changes(**changes) if changes else lease


def raw_item(client: DynamoDBClient, table: str, key: str) -> Item:
    response = client.get_item(TableName=table, Key={"leaseKey": {"S": key}}, ConsistentRead=True)
    return response["Item"]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ----------------------------------------------------------------------------------------------- table


def test_store_satisfies_the_protocol(make_store: StoreFactory) -> None:
    assert isinstance(make_store(), LeaseStore)


def test_create_table_defaults_to_on_demand(
    make_store: StoreFactory, raw_client: DynamoDBClient, table_name: str
) -> None:
    store = make_store()
    assert store.table_exists() is False

    assert store.create_table_if_not_exists() is True

    assert store.table_exists() is True
    table = raw_client.describe_table(TableName=table_name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "leaseKey", "AttributeType": "S"}]
    assert table.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST"
    assert table.get("DeletionProtectionEnabled") is False
    backups = raw_client.describe_continuous_backups(TableName=table_name)["ContinuousBackupsDescription"]
    assert backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") == "DISABLED"


def test_create_table_is_idempotent(make_store: StoreFactory) -> None:
    assert make_store().create_table_if_not_exists() is True

    assert make_store().create_table_if_not_exists() is False
    assert make_store().create_table_if_not_exists() is False


def test_create_table_provisioned_uses_kcl_capacity(
    make_store: StoreFactory, raw_client: DynamoDBClient, table_name: str
) -> None:
    make_store(billing_mode="PROVISIONED").create_table_if_not_exists()

    table = raw_client.describe_table(TableName=table_name)["Table"]
    assert table.get("BillingModeSummary", {}).get("BillingMode") == "PROVISIONED"
    throughput = table["ProvisionedThroughput"]
    assert (throughput.get("ReadCapacityUnits"), throughput.get("WriteCapacityUnits")) == (10, 10)


def test_create_table_provisioned_with_custom_capacity(
    make_store: StoreFactory, raw_client: DynamoDBClient, table_name: str
) -> None:
    make_store(billing_mode="PROVISIONED", read_capacity_units=7, write_capacity_units=3).create_table_if_not_exists()

    throughput = raw_client.describe_table(TableName=table_name)["Table"]["ProvisionedThroughput"]
    assert (throughput.get("ReadCapacityUnits"), throughput.get("WriteCapacityUnits")) == (7, 3)


def test_create_table_with_tags(make_store: StoreFactory, raw_client: DynamoDBClient, table_name: str) -> None:
    make_store(tags={"team": "streams", "app": "orders"}).create_table_if_not_exists()

    arn = raw_client.describe_table(TableName=table_name)["Table"]["TableArn"]
    tags = raw_client.list_tags_of_resource(ResourceArn=arn)["Tags"]
    assert {tag["Key"]: tag["Value"] for tag in tags} == {"team": "streams", "app": "orders"}


def test_create_table_enables_point_in_time_recovery(
    make_store: StoreFactory, raw_client: DynamoDBClient, table_name: str
) -> None:
    make_store(point_in_time_recovery=True).create_table_if_not_exists()

    backups = raw_client.describe_continuous_backups(TableName=table_name)["ContinuousBackupsDescription"]
    assert backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") == "ENABLED"


def test_create_table_with_deletion_protection(
    make_store: StoreFactory, raw_client: DynamoDBClient, table_name: str
) -> None:
    make_store(deletion_protection=True).create_table_if_not_exists()

    assert raw_client.describe_table(TableName=table_name)["Table"].get("DeletionProtectionEnabled") is True
    with pytest.raises(raw_client.exceptions.ClientError, match="DeletionProtection"):
        raw_client.delete_table(TableName=table_name)


class _FakeTables:
    """A client whose table is stuck in one status (moto tables are ACTIVE at once)."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.describe_calls = 0

    def describe_table(self, **_: object) -> dict[str, object]:
        self.describe_calls += 1
        return {"Table": {"TableStatus": self.status}}


def test_create_table_times_out_when_the_table_never_becomes_active() -> None:
    fake = _FakeTables("CREATING")
    config = DynamoDBLeaseStoreConfig("app", table_creation_timeout_s=0.2, table_poll_interval_s=0.02)
    store = DynamoDBLeaseStore(config, client=cast("DynamoDBClient", fake))

    with pytest.raises(InvalidStateError, match=r"'app' is CREATING, not ACTIVE"):
        store.create_table_if_not_exists()
    assert fake.describe_calls > 2
    assert store.table_exists() is False


def test_create_table_fails_at_once_for_a_deleting_table() -> None:
    fake = _FakeTables("DELETING")
    config = DynamoDBLeaseStoreConfig("app", table_creation_timeout_s=60)
    store = DynamoDBLeaseStore(config, client=cast("DynamoDBClient", fake))

    with pytest.raises(InvalidStateError, match="DELETING"):
        store.create_table_if_not_exists()


def test_updating_table_counts_as_existing() -> None:
    store = DynamoDBLeaseStore(DynamoDBLeaseStoreConfig("app"), client=cast("DynamoDBClient", _FakeTables("UPDATING")))

    assert store.table_exists() is True
    assert store.create_table_if_not_exists() is False


# ---------------------------------------------------------------------------------------- foreign items


def _plant_foreign_items(client: DynamoDBClient, table: str) -> list[str]:
    items: list[Item] = [
        # The DynamoDB lock client's leader lock (no entityType before 3.5).
        {
            "leaseKey": {"S": "Leader"},
            "ownerName": {"S": WORKER},
            "leaseDuration": {"S": "120000"},
            "recordVersionNumber": {"S": str(uuid.uuid4())},
        },
        # The client-version migration state, also without entityType.
        {
            "leaseKey": {"S": "Migration3.0"},
            "cv": {"S": "CLIENT_VERSION_3X"},
            "mb": {"S": WORKER},
            "mts": {"N": "1700000000000"},
            "h": {"L": [{"M": {"cv": {"S": "CLIENT_VERSION_INIT"}, "mb": {"S": WORKER}, "mts": {"N": "1"}}}]},
        },
        # Worker metrics in the single-table layout.
        {
            "leaseKey": {"S": WORKER},
            "entityType": {"S": "WORKER_METRIC_STATS"},
            "lut": {"N": "1700000000"},
            "opr": {"M": {}},
            "sts": {"M": {}},
        },
        # Broken leases.
        {"leaseKey": {"S": "shardId-000000000090"}, "checkpoint": {"S": "TRIM_HORIZON"}},
        {
            "leaseKey": {"S": "shardId-000000000091"},
            "leaseCounter": {"S": "3"},
            "checkpoint": {"S": "TRIM_HORIZON"},
        },
    ]
    for item in items:
        client.put_item(TableName=table, Item=item)
    return [item["leaseKey"]["S"] for item in items]


def test_scan_skips_coordinator_items_quietly_and_malformed_leases_with_one_warning_each(
    store: DynamoDBLeaseStore,
    raw_client: DynamoDBClient,
    table_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = [store.create_lease_if_not_exists(new_lease(f"shardId-{i:012d}")) for i in (3, 1, 2)]
    skipped = _plant_foreign_items(raw_client, table_name)
    malformed = [key for key in skipped if key.startswith("shardId-")]

    with caplog.at_level(logging.DEBUG, logger="shardwise"):
        leases = store.list_leases()

    assert leases == sorted((lease for lease in good if lease is not None), key=lambda lease: lease.lease_key)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key in skipped:
        # Coordinator items belong in the single-table layout's lease table: no warning, only a debug line.
        expected = 1 if key in malformed else 0
        assert sum(repr(key) in message for message in warnings) == expected, (key, warnings)
    assert any("leaseCounter" in message for message in warnings)

    # The next scan reports them at debug level only.
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="shardwise"):
        assert store.list_leases() == leases
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert {key for key in skipped if any(repr(key) in r.getMessage() for r in caplog.records)} == set(skipped)


def test_get_lease_of_a_foreign_or_malformed_item_is_none(
    store: DynamoDBLeaseStore, raw_client: DynamoDBClient, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    skipped = _plant_foreign_items(raw_client, table_name)

    with caplog.at_level(logging.WARNING, logger="shardwise"):
        for key in skipped:
            assert store.get_lease(key) is None
            assert store.get_checkpoint(key) is None

    warned = " ".join(r.getMessage() for r in caplog.records)
    for key in skipped:  # a coordinator item is not a lease, and not a problem either: only malformed leases warn
        assert (key in warned) is key.startswith("shardId-"), (key, warned)


def test_table_with_only_foreign_items_is_empty(
    store: DynamoDBLeaseStore, raw_client: DynamoDBClient, table_name: str
) -> None:
    _plant_foreign_items(raw_client, table_name)

    assert store.is_empty() is True
    store.create_lease_if_not_exists(new_lease())
    assert store.is_empty() is False


def test_conditional_updates_never_touch_foreign_items(
    store: DynamoDBLeaseStore, raw_client: DynamoDBClient, table_name: str
) -> None:
    _plant_foreign_items(raw_client, table_name)
    before = raw_item(raw_client, table_name, WORKER)
    impostor = new_lease(WORKER)  # no owner: "leaseOwner absent" holds for the metrics item

    assert store.assign_lease(impostor, "worker-b") is None
    assert store.evict_lease(impostor) is None
    assert store.update_lease_meta(WORKER, child_shard_ids=["shardId-000000000001"]) is None
    assert store.assign_lease(new_lease("Leader"), "worker-b") is None
    assert raw_item(raw_client, table_name, WORKER) == before


def test_reserved_key_cannot_be_created_as_a_lease(store: DynamoDBLeaseStore) -> None:
    with pytest.raises(ValueError, match="reserved"):
        store.create_lease_if_not_exists(new_lease("Migration3.0"))


class _SmallPages:
    """Delegates to a real client but makes Scan return two items per page."""

    def __init__(self, client: DynamoDBClient) -> None:
        self._client = client
        self.scans = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def scan(self, **kwargs: Any) -> Any:
        self.scans += 1
        return self._client.scan(Limit=2, **kwargs)


def test_scan_follows_every_page(
    store: DynamoDBLeaseStore, make_store: StoreFactory, raw_client: DynamoDBClient
) -> None:
    keys = [f"shardId-{i:012d}" for i in range(7)]
    for key in reversed(keys):
        store.create_lease_if_not_exists(new_lease(key))
    paged = _SmallPages(raw_client)
    paging_store = make_store(client=cast("DynamoDBClient", paged))

    assert [lease.lease_key for lease in paging_store.list_leases()] == keys
    assert paged.scans >= 4


# ------------------------------------------------------------------------------------- attribute layout


def test_created_item_is_exactly_what_items_module_produces(
    store: DynamoDBLeaseStore, raw_client: DynamoDBClient, table_name: str
) -> None:
    lease = Lease(
        lease_key="shardId-000000000007",
        lease_owner="worker-a",
        lease_counter=41,
        checkpoint=ExtendedSequenceNumber(SEQ, 3),
        pending_checkpoint=ExtendedSequenceNumber("49682361785432198765432101234567890123456789012345679999", 1),
        pending_checkpoint_state=b"\x00app-state\xff",
        owner_switches_since_checkpoint=2,
        parent_shard_ids=frozenset({"shardId-000000000001", "shardId-000000000002"}),
        child_shard_ids=frozenset({"shardId-000000000009"}),
        hash_key_range=HashKeyRange(2**127, MAX_HASH_KEY),
        throughput_kbps=0.098896,
        checkpoint_owner="worker-b",
    )

    assert store.create_lease_if_not_exists(lease) == lease

    assert raw_item(raw_client, table_name, lease.lease_key) == lease_to_item(lease, entity_type=True)


def test_entity_type_is_not_written_when_disabled(
    make_store: StoreFactory, raw_client: DynamoDBClient, table_name: str
) -> None:
    store = make_store(write_entity_type=False)
    store.create_table_if_not_exists()
    lease = new_lease()

    store.create_lease_if_not_exists(lease)

    assert raw_item(raw_client, table_name, lease.lease_key) == lease_to_item(lease, entity_type=False)


def test_updated_items_keep_the_kcl_layout(
    store: DynamoDBLeaseStore, raw_client: DynamoDBClient, table_name: str
) -> None:
    created = store.create_lease_if_not_exists(new_lease())
    assert created is not None
    taken = store.take_lease(created, "worker-a")
    assert taken is not None
    renewed = store.renew_lease(taken, throughput_kbps=0.098896)
    assert renewed is not None
    prepared = store.update_lease(
        renewed.with_changes(pending_checkpoint=ExtendedSequenceNumber(SEQ, 1), pending_checkpoint_state=b"s")
    )
    assert prepared is not None
    assert raw_item(raw_client, table_name, created.lease_key) == lease_to_item(prepared, entity_type=True)

    handed = store.initiate_graceful_handoff(prepared, "worker-b")
    assert handed is not None
    committed = store.update_lease(
        handed.with_changes(
            checkpoint=ExtendedSequenceNumber(SEQ, 1), pending_checkpoint=None, pending_checkpoint_state=None
        )
    )
    assert committed is not None
    item = raw_item(raw_client, table_name, created.lease_key)
    assert item == lease_to_item(committed, entity_type=True)
    assert "pendingCheckpoint" not in item
    assert "pendingCheckpointState" not in item
    assert item["checkpointOwner"] == {"S": "worker-a"}
    assert item["throughputKBps"] == {"N": "0.098896"}


def test_store_works_on_a_lease_written_by_java_kcl(
    store: DynamoDBLeaseStore, raw_client: DynamoDBClient, table_name: str
) -> None:
    kcl_item: Item = {
        "leaseKey": {"S": "shardId-000000000000"},
        "leaseOwner": {"S": WORKER},
        "leaseCounter": {"N": "4"},
        "checkpoint": {"S": SEQ},
        "checkpointSubSequenceNumber": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "startingHashKey": {"S": "0"},
        "endingHashKey": {"S": "170141183460469231731687303715884105726"},
        "throughputKBps": {"N": "0.098896"},
    }
    raw_client.put_item(TableName=table_name, Item=kcl_item)

    lease = store.get_lease("shardId-000000000000")
    assert lease == lease_from_item(kcl_item)
    assert lease is not None
    renewed = store.renew_lease(lease)
    assert renewed is not None
    assert renewed.lease_counter == 5
    assert raw_item(raw_client, table_name, lease.lease_key) == {**kcl_item, "leaseCounter": {"N": "5"}}


def test_update_lease_meta_with_empty_children_removes_the_attribute(
    store: DynamoDBLeaseStore, raw_client: DynamoDBClient, table_name: str
) -> None:
    store.create_lease_if_not_exists(new_lease(child_shard_ids=frozenset({"shardId-000000000001"})))

    updated = store.update_lease_meta("shardId-000000000000", child_shard_ids=[])

    assert updated is not None
    assert updated.child_shard_ids == frozenset()
    assert "childShardIds" not in raw_item(raw_client, table_name, "shardId-000000000000")
    with pytest.raises(ValueError, match="needs"):
        store.update_lease_meta("shardId-000000000000")


def test_handoff_of_an_unowned_lease_is_refused(store: DynamoDBLeaseStore) -> None:
    created = store.create_lease_if_not_exists(new_lease())
    assert created is not None

    assert store.initiate_graceful_handoff(created, "worker-b") is None


# ------------------------------------------------------------------------------------ error translation


_LEASE = new_lease(lease_owner="worker-a", lease_counter=3)
OPERATIONS: dict[str, Callable[[DynamoDBLeaseStore], object]] = {
    "GetItem": lambda store: store.get_lease(_LEASE.lease_key),
    "Scan": lambda store: store.list_leases(),
    "Scan(is_empty)": lambda store: store.is_empty(),
    "PutItem": lambda store: store.create_lease_if_not_exists(_LEASE),
    "UpdateItem(renew)": lambda store: store.renew_lease(_LEASE),
    "UpdateItem(take)": lambda store: store.take_lease(_LEASE, "worker-b"),
    "UpdateItem(assign)": lambda store: store.assign_lease(_LEASE, "worker-b"),
    "UpdateItem(handoff)": lambda store: store.initiate_graceful_handoff(_LEASE, "worker-b"),
    "UpdateItem(update)": lambda store: store.update_lease(_LEASE),
    "UpdateItem(meta)": lambda store: store.update_lease_meta(_LEASE.lease_key, child_shard_ids=["x"]),
    "DeleteItem": lambda store: store.delete_lease(_LEASE.lease_key),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_operations_on_a_missing_table_raise_resource_not_found(
    make_store: StoreFactory, table_name: str, operation: str
) -> None:
    store = make_store()

    with pytest.raises(ResourceNotFoundError) as caught:
        OPERATIONS[operation](store)

    assert table_name in str(caught.value)
    assert "create_table_if_not_exists" in str(caught.value)
    assert store.table_exists() is False


def test_unreachable_endpoint_raises_dependency_error(table_name: str) -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region_name=REGION,
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    store = DynamoDBLeaseStore(DynamoDBLeaseStoreConfig(table_name), client=client)

    with pytest.raises(DependencyError) as caught:
        store.get_lease("shardId-000000000000")
    assert "GetItem" in str(caught.value)
    assert table_name in str(caught.value)
    assert not isinstance(caught.value, ThrottlingError)

    with pytest.raises(DependencyError, match="DescribeTable"):
        store.table_exists()
    with pytest.raises(DependencyError, match="Scan"):
        store.list_leases()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ProvisionedThroughputExceededException", ThrottlingError),
        ("ThrottlingException", ThrottlingError),
        ("RequestLimitExceeded", ThrottlingError),
        ("ResourceNotFoundException", TableNotFoundError),
        ("ValidationException", DependencyError),
        ("InternalServerError", DependencyError),
        ("AccessDeniedException", AccessDeniedError),
        ("UnrecognizedClientException", AccessDeniedError),
        ("ExpiredTokenException", AccessDeniedError),
    ],
)
def test_service_errors_are_translated(table_name: str, code: str, expected: type[Exception]) -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    store = DynamoDBLeaseStore(DynamoDBLeaseStoreConfig(table_name), client=client)
    lease = new_lease(lease_owner="worker-a", lease_counter=3)

    with Stubber(client) as stubber:
        stubber.add_client_error("update_item", service_error_code=code, service_message="no")
        with pytest.raises(expected) as caught:
            store.renew_lease(lease)
        stubber.add_client_error("get_item", service_error_code=code, service_message="no")
        with pytest.raises(expected):
            store.get_lease(lease.lease_key)

    assert type(caught.value) is expected
    assert table_name in str(caught.value)


def test_condition_failure_on_a_conditional_write_is_a_lost_race(table_name: str) -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    store = DynamoDBLeaseStore(DynamoDBLeaseStoreConfig(table_name), client=client)

    with Stubber(client) as stubber:
        stubber.add_client_error("update_item", service_error_code="ConditionalCheckFailedException")
        assert store.renew_lease(new_lease(lease_counter=3)) is None
        stubber.add_client_error("put_item", service_error_code="ConditionalCheckFailedException")
        assert store.create_lease_if_not_exists(new_lease()) is None


# ----------------------------------------------------------------------------------- consumed capacity


def test_consumed_capacity_grows(store: DynamoDBLeaseStore) -> None:
    assert store.consumed_capacity == (0.0, 0.0)

    created = store.create_lease_if_not_exists(new_lease())
    assert created is not None
    read_0, write_1 = store.consumed_capacity
    assert read_0 == 0.0
    assert write_1 > 0.0

    store.renew_lease(created)
    store.get_lease(created.lease_key)
    store.list_leases()
    read_2, write_2 = store.consumed_capacity
    assert read_2 > 0.0
    assert write_2 > write_1


def test_consumed_capacity_is_summed_across_threads(store: DynamoDBLeaseStore) -> None:
    created = store.create_lease_if_not_exists(new_lease())
    assert created is not None
    before, _ = store.consumed_capacity
    store.get_lease(created.lease_key)
    per_read = store.consumed_capacity[0] - before
    assert per_read > 0

    def reads() -> None:
        for _ in range(10):
            store.get_lease(created.lease_key)

    threads = [threading.Thread(target=reads) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.consumed_capacity[0] == pytest.approx(before + per_read * 41)


# ------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"table_name": "ab"}, "table_name"),
        ({"table_name": "bad name!"}, "table_name"),
        ({"billing_mode": "ON_DEMAND"}, "billing_mode"),
        ({"read_capacity_units": 0}, "read_capacity_units"),
        ({"write_capacity_units": 2.5}, "write_capacity_units"),
        ({"tags": {"aws:owner": "x"}}, "tag key"),
        ({"tags": {"k": "v" * 257}}, "tag 'k'"),
        ({"consistent_reads": "yes"}, "consistent_reads"),
        ({"table_creation_timeout_s": 0}, "table_creation_timeout_s"),
        ({"table_poll_interval_s": -1.0}, "table_poll_interval_s"),
    ],
)
def test_invalid_config_names_the_field(settings: dict[str, Any], field: str) -> None:
    settings.setdefault("table_name", "app")

    with pytest.raises(ConfigurationError, match=field):
        DynamoDBLeaseStoreConfig(**settings)


def test_config_tags_are_a_frozen_copy() -> None:
    tags = {"team": "streams"}
    config = DynamoDBLeaseStoreConfig("app", tags=tags)
    tags["team"] = "changed"

    assert dict(config.tags) == {"team": "streams"}


def test_client_and_endpoint_together_are_refused(endpoint: str) -> None:
    client = boto3.client("dynamodb", region_name=REGION)

    with pytest.raises(ConfigurationError, match="either client or endpoint_url"):
        DynamoDBLeaseStore(DynamoDBLeaseStoreConfig("app"), client=client, endpoint_url=endpoint)


def test_missing_region_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)

    with pytest.raises(ConfigurationError, match="region_name"):
        DynamoDBLeaseStore(DynamoDBLeaseStoreConfig("app"))
