"""The ItemTable contract: coordinator items behave the same on SQLite and on DynamoDB in both KCL 3.x layouts.

Every test runs for both namespaces (coordinator, worker metrics) unless it is about one of them. A lost race
returns None/False; only infrastructure faults raise.
"""

from __future__ import annotations

import functools
import math
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardwise.assignment.model import WorkerMetricStats, metrics_from_attributes
from shardwise.backends.aws.items import DynamoDBItemTable, open_dynamodb_item_tables
from shardwise.backends.aws.lease_table import DynamoDBLeaseStoreConfig
from shardwise.backends.aws.leases import DynamoDBLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.errors import ConfigurationError, DependencyError, ResourceNotFoundError, ThrottlingError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.tables.items import ABSENT, ItemRecord, ItemTable, ItemWrite, Layout, Namespace
from support.backends import ItemBackend

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

KEYS: dict[Namespace, tuple[str, str, str]] = {
    "coordinator": ("Leader", "Migration3.0", "TableMigration3.5"),
    "worker-metrics": ("worker-a", "worker-b", "worker-c"),
}
ENTITY_TYPES = {
    "Leader": "LEADER",
    "Migration3.0": "CLIENT_VERSION_MIGRATION",
    "TableMigration3.5": "TABLE_MIGRATION",
}

# One value of every supported type, and what it reads back as.
EVERY_TYPE: dict[str, Any] = {
    "s": "text ✓",
    "empty_s": "",
    "i": 42,
    "negative": -7,
    "big": 12345678901234567890123456789,
    "f": 2.5,
    "small_f": 1e-7,
    "integral_f": 3.0,
    "dec": Decimal("0.125"),
    "b": b"\x00\x01\xff",
    "empty_b": b"",
    "yes": True,
    "no": False,
    "null": None,
    "l": [1, "two", 3.5, None, False, b"x"],
    "empty_l": [],
    "m": {"C": [10.5, -1, 30], "T": [100]},
    "empty_m": {},
    "ss": {"shardId-1", "shardId-2"},
    "ns": {1, 2.5},
    "bs": {b"a", b"b"},
    "nested": {"h": [{"cv": "CLIENT_VERSION_3X", "mts": 1700000000000, "tags": {"x"}}], "deep": {"a": {"b": [[]]}}},
}
EVERY_TYPE_READ_BACK: dict[str, Any] = {**EVERY_TYPE, "integral_f": 3, "dec": 0.125}


@pytest.fixture
def lease_store(item_backend: ItemBackend) -> LeaseStore:
    store = item_backend.open_lease_store()
    store.create_table_if_not_exists()
    return store


@pytest.fixture
def tables(item_backend: ItemBackend, lease_store: LeaseStore) -> tuple[ItemTable, ItemTable]:
    coordinator, metrics = item_backend.open_tables()
    coordinator.create_if_not_exists()
    metrics.create_if_not_exists()
    return coordinator, metrics


@pytest.fixture(params=["coordinator", "worker-metrics"])
def namespace(request: pytest.FixtureRequest) -> Namespace:
    value: Namespace = request.param
    return value


@pytest.fixture
def table(tables: tuple[ItemTable, ItemTable], namespace: Namespace) -> ItemTable:
    return tables[0] if namespace == "coordinator" else tables[1]


@pytest.fixture
def other_client(item_backend: ItemBackend, tables: tuple[ItemTable, ItemTable], namespace: Namespace) -> ItemTable:
    """The same namespace through another client (another connection / boto3 client)."""
    coordinator, metrics = item_backend.open_tables()
    return coordinator if namespace == "coordinator" else metrics


@pytest.fixture
def keys(namespace: Namespace) -> tuple[str, str, str]:
    return KEYS[namespace]


def expected_entity_type(backend: ItemBackend, namespace: Namespace, key: str) -> str | None:
    if backend.layout == "legacy":
        return None
    return "WORKER_METRIC_STATS" if namespace == "worker-metrics" else ENTITY_TYPES[key]


def lease(key: str) -> Lease:
    return Lease(lease_key=key, checkpoint=TRIM_HORIZON)


# --------------------------------------------------------------------------------------------------- basics


def test_satisfies_the_protocol(table: ItemTable, namespace: Namespace, item_backend: ItemBackend) -> None:
    assert isinstance(table, ItemTable)
    assert table.namespace == namespace
    assert table.layout == item_backend.layout
    assert table.exists()


def test_get_of_an_absent_item_is_none(table: ItemTable, keys: tuple[str, str, str]) -> None:
    assert table.get(keys[0]) is None
    assert table.scan() == []


class TestPutIfAbsent:
    def test_creates_once(
        self, table: ItemTable, keys: tuple[str, str, str], namespace: Namespace, item_backend: ItemBackend
    ) -> None:
        assert table.put_if_absent(keys[0], {"a": "1", "n": 5}) is True
        assert table.put_if_absent(keys[0], {"a": "2"}) is False
        record = table.get(keys[0])
        assert record == ItemRecord(keys[0], {"a": "1", "n": 5}, expected_entity_type(item_backend, namespace, keys[0]))

    def test_empty_attributes(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        assert table.put_if_absent(keys[0], {}) is True
        record = table.get(keys[0])
        assert record is not None
        assert dict(record.attributes) == {}


class TestUpdate:
    def test_never_creates(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        assert table.update(keys[0], set_attributes={"a": 1}) is None
        assert table.update(keys[0], set_attributes={"a": 1}, expect={"a": ABSENT}) is None
        assert table.get(keys[0]) is None

    def test_sets_and_removes_and_returns_the_new_item(
        self, table: ItemTable, keys: tuple[str, str, str], namespace: Namespace, item_backend: ItemBackend
    ) -> None:
        table.put_if_absent(keys[0], {"a": "1", "b": 2, "c": [3]})
        updated = table.update(keys[0], set_attributes={"a": "one", "d": {"x": 1}}, remove_attributes=["c", "zz"])
        entity = expected_entity_type(item_backend, namespace, keys[0])
        assert updated == ItemRecord(keys[0], {"a": "one", "b": 2, "d": {"x": 1}}, entity)
        assert table.get(keys[0]) == updated

    def test_expect_equality(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        table.put_if_absent(keys[0], {"cv": "CLIENT_VERSION_2X", "n": 1})
        assert table.update(keys[0], set_attributes={"cv": "X"}, expect={"cv": "CLIENT_VERSION_3X"}) is None
        assert table.update(keys[0], set_attributes={"cv": "X"}, expect={"missing": "v"}) is None
        updated = table.update(keys[0], set_attributes={"cv": "X"}, expect={"cv": "CLIENT_VERSION_2X", "n": 1})
        assert updated is not None
        assert updated.attributes["cv"] == "X"

    def test_expect_absent(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        table.put_if_absent(keys[0], {"a": 1})
        assert table.update(keys[0], set_attributes={"b": 1}, expect={"a": ABSENT}) is None
        updated = table.update(keys[0], set_attributes={"b": 1}, expect={"b": ABSENT, "a": 1})
        assert updated is not None
        assert dict(updated.attributes) == {"a": 1, "b": 1}

    def test_expect_compares_values_by_type(
        self, table: ItemTable, keys: tuple[str, str, str], item_backend: ItemBackend
    ) -> None:
        table.put_if_absent(
            keys[0], {"n": 1, "f": 0.1, "t": True, "ss": {"a", "b"}, "m": {"k": [1, "x"]}, "null": None}
        )
        if item_backend.name == "sqlite":
            # DynamoDB never finds BOOL equal to N; moto compares them by Python equality (True == 1), so this
            # part of DynamoDB's rule can only be checked on the backend that implements it here.
            assert table.update(keys[0], set_attributes={"x": 1}, expect={"t": 1}) is None
            assert table.update(keys[0], set_attributes={"x": 1}, expect={"n": True}) is None
        assert table.update(keys[0], set_attributes={"x": 1}, expect={"n": "1"}) is None
        assert table.update(keys[0], set_attributes={"x": 1}, expect={"m": {"k": [1, "y"]}}) is None
        updated = table.update(
            keys[0],
            set_attributes={"x": 1},
            expect={
                "n": 1.0,
                "f": 0.1,
                "t": True,
                "ss": frozenset({"b", "a"}),
                "m": {"k": [Decimal(1), "x"]},
                "null": None,
            },
        )
        assert updated is not None

    def test_rejects_empty_and_overlapping_updates(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        table.put_if_absent(keys[0], {"a": 1})
        with pytest.raises(ValueError, match="set_attributes"):
            table.update(keys[0], set_attributes={})
        with pytest.raises(ValueError, match="both set and remove"):
            table.update(keys[0], set_attributes={"a": 2}, remove_attributes=["a"])
        with pytest.raises(TypeError, match="not a string"):
            table.update(keys[0], set_attributes={}, remove_attributes="a")
        record = table.get(keys[0])
        assert record is not None
        assert dict(record.attributes) == {"a": 1}


class TestUpsert:
    def test_creates_then_merges(
        self, table: ItemTable, keys: tuple[str, str, str], namespace: Namespace, item_backend: ItemBackend
    ) -> None:
        table.upsert(keys[0], {"lut": 1, "sts": {"C": [1.5]}})
        table.upsert(keys[0], {"lut": 2, "opr": {"C": [100]}})
        entity = expected_entity_type(item_backend, namespace, keys[0])
        assert table.get(keys[0]) == ItemRecord(keys[0], {"lut": 2, "sts": {"C": [1.5]}, "opr": {"C": [100]}}, entity)

    def test_needs_attributes(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        with pytest.raises(ValueError, match="at least one attribute"):
            table.upsert(keys[0], {})


class TestDelete:
    def test_missing_item(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        assert table.delete(keys[0]) is False
        assert table.delete(keys[0], expect={"a": ABSENT}) is False

    def test_with_and_without_expect(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        table.put_if_absent(keys[0], {"rvn": "r1"})
        table.put_if_absent(keys[1], {"rvn": "r1"})
        assert table.delete(keys[0], expect={"rvn": "r2"}) is False
        assert table.delete(keys[0], expect={"rvn": ABSENT}) is False
        assert table.get(keys[0]) is not None
        assert table.delete(keys[0], expect={"rvn": "r1", "other": ABSENT}) is True
        assert table.get(keys[0]) is None
        assert table.delete(keys[1]) is True
        assert table.scan() == []


class TestTransact:
    def test_creates_and_updates_are_applied_together(
        self, table: ItemTable, keys: tuple[str, str, str], namespace: Namespace, item_backend: ItemBackend
    ) -> None:
        table.put_if_absent(keys[0], {"rvn": "r0", "old": [1], "keep": "k"})
        applied = table.transact(
            [
                ItemWrite(keys[0], {"rvn": "r1", "new": {"x": 1}}, expect={"rvn": "r0"}, remove_attributes=("old",)),
                ItemWrite(keys[1], {"a": "1", "n": 5}, create=True),
            ]
        )
        assert applied is True
        entity = functools.partial(expected_entity_type, item_backend, namespace)
        assert table.get(keys[0]) == ItemRecord(keys[0], {"rvn": "r1", "new": {"x": 1}, "keep": "k"}, entity(keys[0]))
        assert table.get(keys[1]) == ItemRecord(keys[1], {"a": "1", "n": 5}, entity(keys[1]))
        assert [record.key for record in table.scan()] == sorted(keys[:2])

    def test_one_failed_expect_applies_nothing(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        table.put_if_absent(keys[0], {"rvn": "r0"})
        table.put_if_absent(keys[1], {"rvn": "x", "gone": 1})
        before = table.scan()
        applied = table.transact(
            [
                ItemWrite(keys[0], {"rvn": "r1"}, expect={"rvn": "r0"}),  # holds
                ItemWrite(keys[1], {"rvn": "y"}, expect={"rvn": "not-x"}, remove_attributes=("gone",)),  # fails
                ItemWrite(keys[2], {"a": 1}, create=True),  # would succeed
            ]
        )
        assert applied is False
        assert table.scan() == before
        assert table.get(keys[2]) is None

    def test_create_of_an_existing_key_applies_nothing(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        table.put_if_absent(keys[0], {"owner": "first"})
        table.put_if_absent(keys[1], {"rvn": "r0"})
        before = table.scan()
        applied = table.transact(
            [
                ItemWrite(keys[1], {"rvn": "r1"}, expect={"rvn": "r0"}),
                ItemWrite(keys[0], {"owner": "second"}, create=True),
            ]
        )
        assert applied is False
        assert table.scan() == before

    def test_update_of_a_missing_item_applies_nothing(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        assert table.transact([ItemWrite(keys[0], {"a": 1}, create=True), ItemWrite(keys[1], {"a": 1})]) is False
        assert table.transact([ItemWrite(keys[1], {"a": 1}, expect={"a": ABSENT})]) is False
        assert table.scan() == []

    def test_expect_absent(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        table.put_if_absent(keys[0], {"a": 1})
        assert table.transact([ItemWrite(keys[0], {"c": 1}, expect={"a": ABSENT})]) is False
        assert table.transact([ItemWrite(keys[0], {"b": 2}, expect={"b": ABSENT, "a": 1})]) is True
        record = table.get(keys[0])
        assert record is not None
        assert dict(record.attributes) == {"a": 1, "b": 2}

    def test_remove_attributes_alone(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        table.put_if_absent(keys[0], {"a": 1, "b": 2, "c": 3})
        assert table.transact([ItemWrite(keys[0], {}, remove_attributes=("b", "zz"))]) is True
        record = table.get(keys[0])
        assert record is not None
        assert dict(record.attributes) == {"a": 1, "c": 3}

    def test_created_items_are_those_put_if_absent_creates(
        self, tables: tuple[ItemTable, ItemTable], item_backend: ItemBackend
    ) -> None:
        coordinator, metrics = tables
        assert coordinator.transact([ItemWrite("Leader", {"ownerName": "w1"}, create=True)]) is True
        assert coordinator.put_if_absent("Migration3.0", {"cv": "CLIENT_VERSION_3X"}) is True
        assert metrics.transact([ItemWrite("worker-a", {"lut": 1}, create=True)]) is True
        assert metrics.put_if_absent("worker-b", {"lut": 1}) is True
        single = item_backend.layout == "single-table"
        assert coordinator.scan() == [
            ItemRecord("Leader", {"ownerName": "w1"}, "LEADER" if single else None),
            ItemRecord("Migration3.0", {"cv": "CLIENT_VERSION_3X"}, "CLIENT_VERSION_MIGRATION" if single else None),
        ]
        assert metrics.scan() == [
            ItemRecord(key, {"lut": 1}, "WORKER_METRIC_STATS" if single else None) for key in ("worker-a", "worker-b")
        ]
        assert metrics.get("Leader") is None
        assert coordinator.get("worker-a") is None

    def test_invalid_transactions_are_refused_before_writing(
        self, table: ItemTable, keys: tuple[str, str, str]
    ) -> None:
        table.put_if_absent(keys[0], {"a": 1})
        with pytest.raises(ValueError, match="more than once"):
            table.transact([ItemWrite(keys[0], {"a": 2}), ItemWrite(keys[0], {"b": 2})])
        with pytest.raises(ValueError, match="more than once"):
            table.transact([ItemWrite(keys[1], {"a": 2}, create=True), ItemWrite(keys[1], {"b": 2})])
        with pytest.raises(ValueError, match="at least one"):
            table.transact([])
        with pytest.raises(ValueError, match="at most 25"):
            table.transact([ItemWrite(f"{keys[0]}-{i}", {"a": 1}) for i in range(26)])
        with pytest.raises(ValueError, match="attribute"):
            table.transact([ItemWrite(keys[1], {"a": 1}, create=True), ItemWrite(keys[0], {"entityType": "x"})])
        with pytest.raises(ValueError, match="attribute"):
            table.transact([ItemWrite(keys[1], {"leaseKey": "x"}, create=True)])
        with pytest.raises(ValueError, match="both set and remove"):
            table.transact([ItemWrite(keys[0], {"a": 2}, remove_attributes=("a",))])
        with pytest.raises(ValueError, match="set_attributes"):
            table.transact([ItemWrite(keys[0], {})])
        with pytest.raises(ValueError, match="finite"):
            table.transact([ItemWrite(keys[1], {"v": math.nan}, create=True)])
        assert [(record.key, dict(record.attributes)) for record in table.scan()] == [(keys[0], {"a": 1})]

    def test_item_write_checks_its_mode(self) -> None:
        with pytest.raises(ValueError, match="expect"):
            ItemWrite("Leader", {"a": 1}, expect={"a": ABSENT}, create=True)
        with pytest.raises(ValueError, match="remove_attributes"):
            ItemWrite("Leader", {"a": 1}, create=True, remove_attributes=("b",))
        assert ItemWrite("Leader", {"a": 1}, create=True).expect is None

    def test_a_lost_race_between_clients(
        self, table: ItemTable, other_client: ItemTable, keys: tuple[str, str, str]
    ) -> None:
        table.put_if_absent(keys[0], {"rvn": "r0"})
        assert table.transact([ItemWrite(keys[0], {"rvn": "a"}, expect={"rvn": "r0"})]) is True
        lost = other_client.transact(
            [ItemWrite(keys[0], {"rvn": "b"}, expect={"rvn": "r0"}), ItemWrite(keys[1], {"rvn": "b"}, create=True)]
        )
        assert lost is False
        assert [(record.key, record.attributes["rvn"]) for record in other_client.scan()] == [(keys[0], "a")]


# ------------------------------------------------------------------------------------------------- isolation


class TestScanAndIsolation:
    def test_scan_returns_the_namespace_in_key_order(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        for key in reversed(keys):
            table.put_if_absent(key, {"k": key})
        assert [record.key for record in table.scan()] == sorted(keys)
        assert [record.attributes["k"] for record in table.scan()] == sorted(keys)

    def test_namespaces_do_not_see_each_other(self, tables: tuple[ItemTable, ItemTable]) -> None:
        coordinator, metrics = tables
        coordinator.put_if_absent("Leader", {"ownerName": "w1"})
        coordinator.put_if_absent("Migration3.0", {"cv": "CLIENT_VERSION_3X"})
        metrics.upsert("w1", {"lut": 1})
        metrics.upsert("w2", {"lut": 2})
        assert [record.key for record in coordinator.scan()] == ["Leader", "Migration3.0"]
        assert [record.key for record in metrics.scan()] == ["w1", "w2"]
        assert metrics.get("Leader") is None
        assert coordinator.get("w1") is None

    def test_leases_and_items_never_mix(
        self, tables: tuple[ItemTable, ItemTable], lease_store: LeaseStore, item_backend: ItemBackend
    ) -> None:
        coordinator, metrics = tables
        assert lease_store.create_lease_if_not_exists(lease("shardId-000000000000")) is not None
        assert lease_store.create_lease_if_not_exists(lease("shardId-000000000001")) is not None
        coordinator.put_if_absent("Leader", {"ownerName": "w1", "leaseDuration": "120000", "recordVersionNumber": "r"})
        coordinator.put_if_absent("Migration3.0", {"cv": "CLIENT_VERSION_3X", "mb": "w1", "mts": 1})
        metrics.upsert("worker-1", {"lut": 1, "sts": {"C": [1.0]}})
        # Items never appear as leases (KCL 3.5 readers skip them by entityType) ...
        assert [existing.lease_key for existing in lease_store.list_leases()] == [
            "shardId-000000000000",
            "shardId-000000000001",
        ]
        assert lease_store.get_lease("Leader") is None
        assert lease_store.get_lease("worker-1") is None
        # ... and leases never appear as items.
        assert [record.key for record in coordinator.scan()] == ["Leader", "Migration3.0"]
        assert [record.key for record in metrics.scan()] == ["worker-1"]
        assert metrics.get("shardId-000000000000") is None
        assert coordinator.get("shardId-000000000000") is None
        # Lease operations on the leases still work next to the items.
        taken = lease_store.take_lease(lease_store.list_leases()[0], "worker-1")
        assert taken is not None

    def test_an_application_with_only_items_has_no_leases(
        self, tables: tuple[ItemTable, ItemTable], lease_store: LeaseStore
    ) -> None:
        tables[0].put_if_absent("Leader", {"ownerName": "w1"})
        tables[1].upsert("worker-1", {"lut": 1})
        assert lease_store.is_empty()
        assert lease_store.list_leases() == []


class TestKeys:
    def test_coordinator_keys_are_kcls(self, tables: tuple[ItemTable, ItemTable]) -> None:
        with pytest.raises(ValueError, match="not a coordinator item key"):
            tables[0].put_if_absent("SomethingElse", {"a": 1})
        with pytest.raises(ValueError, match="not a coordinator item key"):
            tables[0].upsert("shardId-000000000000", {"a": 1})

    @pytest.mark.parametrize(
        "worker_id",
        [
            "shardId-000000000001",
            "Leader",
            "Migration3.0",
            "TableMigration3.5",
            "123456789012:orders:1700000000:shardId-000000000001",
        ],
    )
    def test_single_table_rejects_worker_ids_that_collide_with_other_items(
        self, tables: tuple[ItemTable, ItemTable], item_backend: ItemBackend, worker_id: str
    ) -> None:
        metrics = tables[1]
        writes: list[Callable[[], object]] = [
            lambda: metrics.upsert(worker_id, {"lut": 1}),
            lambda: metrics.put_if_absent(worker_id, {"lut": 1}),
            lambda: metrics.update(worker_id, set_attributes={"lut": 1}),
            lambda: metrics.delete(worker_id),
            lambda: metrics.transact([ItemWrite(worker_id, {"lut": 1}, create=True)]),
            lambda: metrics.transact([ItemWrite(worker_id, {"lut": 1})]),
        ]
        for write in writes:
            if item_backend.layout == "legacy":
                write()  # its own table, keyed by wid: no collision possible
            else:
                with pytest.raises(ConfigurationError, match="worker id") as raised:
                    write()
                assert repr(worker_id) in str(raised.value)
                assert "configure" in str(raised.value)

    def test_writes_never_touch_a_lease(
        self, tables: tuple[ItemTable, ItemTable], lease_store: LeaseStore, item_backend: ItemBackend
    ) -> None:
        lease_store.create_lease_if_not_exists(lease("orders-lease"))  # a lease key that is no shard id
        metrics = tables[1]
        assert metrics.update("orders-lease", set_attributes={"lut": 1}) is None
        assert metrics.delete("orders-lease") is False
        assert metrics.transact([ItemWrite("orders-lease", {"lut": 1})]) is False
        assert metrics.put_if_absent("orders-lease", {"lut": 1}) is (item_backend.layout == "legacy")
        # Single-table: the lease has the key; legacy: the put above created the item in its own table.
        assert metrics.transact([ItemWrite("orders-lease", {"lut": 2}, create=True)]) is False
        if item_backend.layout != "legacy":
            with pytest.raises(ConfigurationError, match="orders-lease"):
                metrics.upsert("orders-lease", {"lut": 1})
        stored = lease_store.get_lease("orders-lease")
        assert stored is not None
        assert stored.lease_counter == 0

    @pytest.mark.parametrize("name", ["leaseKey", "key", "wid", "entityType", ""])
    def test_reserved_attribute_names(self, table: ItemTable, keys: tuple[str, str, str], name: str) -> None:
        with pytest.raises(ValueError, match="attribute"):
            table.put_if_absent(keys[0], {name: "x"})
        table.put_if_absent(keys[0], {"a": 1})
        with pytest.raises(ValueError, match="attribute"):
            table.update(keys[0], set_attributes={name: "x"})
        with pytest.raises(ValueError, match="attribute"):
            table.update(keys[0], set_attributes={"a": 2}, expect={name: "x"})
        with pytest.raises(ValueError, match="attribute"):
            table.upsert(keys[0], {name: "x"})


# ---------------------------------------------------------------------------------------------------- values


class TestValues:
    def test_every_type_round_trips_through_put(self, table: ItemTable, keys: tuple[str, str, str]) -> None:
        assert table.put_if_absent(keys[0], EVERY_TYPE)
        record = table.get(keys[0])
        assert record is not None
        assert_same_values(dict(record.attributes), EVERY_TYPE_READ_BACK)

    def test_every_type_round_trips_through_update_and_upsert(
        self, table: ItemTable, keys: tuple[str, str, str]
    ) -> None:
        table.put_if_absent(keys[0], {"x": 0})
        updated = table.update(keys[0], set_attributes=EVERY_TYPE, expect={"x": 0})
        assert updated is not None
        assert_same_values(dict(updated.attributes), {"x": 0, **EVERY_TYPE_READ_BACK})
        table.upsert(keys[1], EVERY_TYPE)
        upserted = table.get(keys[1])
        assert upserted is not None
        assert_same_values(dict(upserted.attributes), EVERY_TYPE_READ_BACK)
        assert [record.key for record in table.scan()] == sorted(keys[:2])

    @pytest.mark.parametrize(
        ("value", "error"),
        [
            (math.nan, ValueError),
            (math.inf, ValueError),
            (Decimal("NaN"), ValueError),
            (set(), ValueError),
            ({"a", 1}, TypeError),
            ({1: "int key"}, TypeError),
            (object(), TypeError),
            ([1, {"x": math.inf}], ValueError),
            (1e127, ValueError),  # beyond DynamoDB's magnitude
            (5e-324, ValueError),
            (10**40, ValueError),  # more than 38 significant digits
            (Decimal("1." + "1" * 40), ValueError),
        ],
    )
    def test_unstorable_values_are_refused_before_writing(
        self, table: ItemTable, keys: tuple[str, str, str], value: object, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            table.put_if_absent(keys[0], {"v": value})
        with pytest.raises(error):
            table.upsert(keys[0], {"v": value})
        assert table.get(keys[0]) is None

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        value=st.recursive(
            st.none()
            | st.booleans()
            | st.text(max_size=8)
            | st.integers(min_value=-(10**30), max_value=10**30)
            | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f == 0 or 1e-120 < abs(f) < 1e120)
            | st.binary(max_size=8)
            | st.frozensets(st.text(max_size=4), min_size=1, max_size=3),
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=4), children, max_size=3)
            ),
            max_leaves=8,
        )
    )
    def test_values_round_trip(self, tables: tuple[ItemTable, ItemTable], value: object) -> None:
        metrics = tables[1]
        metrics.upsert("worker-h", {"v": value})
        record = metrics.get("worker-h")
        assert record is not None
        assert_same_values(record.attributes["v"], normalized(value))


def normalized(value: object) -> object:
    """What an ItemTable reads back for ``value``: integral numbers as int, sets as set, tuples as list."""
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int | float | Decimal):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return int(number) if number == number.to_integral_value() else float(number)
    if isinstance(value, list | tuple):
        return [normalized(member) for member in value]
    if isinstance(value, dict):
        return {name: normalized(member) for name, member in value.items()}
    if isinstance(value, set | frozenset):
        return {normalized(member) for member in value}
    raise AssertionError(f"unexpected {value!r}")


def assert_same_values(actual: object, expected: object) -> None:
    """Equal, and of the same types all the way down (so 1 ≠ True ≠ 1.0 and bytes stay bytes)."""
    assert type(actual) is type(expected) or (isinstance(expected, set) and isinstance(actual, set)), (
        actual,
        expected,
    )
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        assert actual.keys() == expected.keys()
        for name in expected:
            assert_same_values(actual[name], expected[name])
    elif isinstance(expected, list):
        assert isinstance(actual, list)
        assert len(actual) == len(expected)
        for left, right in zip(actual, expected, strict=True):
            assert_same_values(left, right)
    else:
        assert actual == expected


# ----------------------------------------------------------------------------------------------------- races


class TestRaces:
    def test_conditional_update_race_has_one_winner(
        self, table: ItemTable, other_client: ItemTable, keys: tuple[str, str, str]
    ) -> None:
        table.put_if_absent(keys[0], {"rvn": "r0"})
        seen_by_a, seen_by_b = table.get(keys[0]), other_client.get(keys[0])
        assert seen_by_a == seen_by_b
        first = table.update(keys[0], set_attributes={"rvn": "a"}, expect={"rvn": "r0"})
        second = other_client.update(keys[0], set_attributes={"rvn": "b"}, expect={"rvn": "r0"})
        assert first is not None
        assert second is None
        assert other_client.get(keys[0]) == first

    def test_put_if_absent_race_has_one_winner(
        self, item_backend: ItemBackend, tables: tuple[ItemTable, ItemTable], namespace: Namespace
    ) -> None:
        contenders = [item_backend.open_tables()[0 if namespace == "coordinator" else 1] for _ in range(6)]
        key = KEYS[namespace][0]

        def put(contender: ItemTable, index: int) -> bool:
            return contender.put_if_absent(key, {"owner": f"c{index}"})

        results = run_together([functools.partial(put, t, i) for i, t in enumerate(contenders)])
        assert sorted(results) == [False] * 5 + [True]
        record = contenders[0].get(key)
        assert record is not None
        assert record.attributes["owner"] == f"c{results.index(True)}"

    def test_concurrent_conditional_updates_have_one_winner(
        self, item_backend: ItemBackend, table: ItemTable, namespace: Namespace
    ) -> None:
        key = KEYS[namespace][0]
        table.put_if_absent(key, {"rvn": "dead"})
        contenders = [item_backend.open_tables()[0 if namespace == "coordinator" else 1] for _ in range(6)]

        def take(contender: ItemTable, index: int) -> bool:
            return contender.update(key, set_attributes={"rvn": f"c{index}"}, expect={"rvn": "dead"}) is not None

        results = run_together([functools.partial(take, t, i) for i, t in enumerate(contenders)])
        assert results.count(True) == 1
        record = table.get(key)
        assert record is not None
        assert record.attributes["rvn"] == f"c{results.index(True)}"

    def test_conditional_delete_race_has_one_winner(
        self, item_backend: ItemBackend, table: ItemTable, namespace: Namespace
    ) -> None:
        key = KEYS[namespace][0]
        table.put_if_absent(key, {"rvn": "r"})
        contenders = [item_backend.open_tables()[0 if namespace == "coordinator" else 1] for _ in range(4)]

        def delete(contender: ItemTable) -> bool:
            return contender.delete(key, expect={"rvn": "r"})

        results = run_together([functools.partial(delete, t) for t in contenders])
        assert sorted(results) == [False, False, False, True]


def run_together(calls: list[Callable[[], bool]]) -> list[bool]:
    """Run the calls in threads released at the same moment; their results in call order."""
    barrier = threading.Barrier(len(calls))
    results: list[bool | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert all(result is not None for result in results)
    return [bool(result) for result in results]


# ----------------------------------------------------------------------------------------------------- table


class TestTable:
    def test_missing_table(self, item_backend: ItemBackend) -> None:
        """Before anything is created, every operation raises ResourceNotFoundError."""
        coordinator, metrics = item_backend.open_tables()
        for table, key in ((coordinator, "Leader"), (metrics, "worker-a")):
            assert not table.exists()
            with pytest.raises(ResourceNotFoundError):
                table.get(key)
            with pytest.raises(ResourceNotFoundError):
                table.scan()
            with pytest.raises(ResourceNotFoundError):
                table.put_if_absent(key, {"a": 1})
            with pytest.raises(ResourceNotFoundError):
                table.upsert(key, {"a": 1})
            with pytest.raises(ResourceNotFoundError):
                table.transact([ItemWrite(key, {"a": 1}, create=True)])

    def test_create_if_not_exists(self, item_backend: ItemBackend, lease_store: LeaseStore) -> None:
        coordinator, metrics = item_backend.open_tables()
        for table in (coordinator, metrics):
            if item_backend.layout == "legacy":
                assert not table.exists()
                assert table.create_if_not_exists() is True
                assert table.create_if_not_exists() is False
            else:
                assert table.create_if_not_exists() is False  # the lease table holds the items
            assert table.exists()


# ------------------------------------------------------------------------------- DynamoDB: layouts and format


class Server(Protocol):
    @property
    def endpoint_url(self) -> str: ...


@pytest.fixture
def ddb_endpoint(moto_server: Server) -> str:
    return moto_server.endpoint_url


@pytest.fixture
def raw(ddb_endpoint: str) -> DynamoDBClient:
    return boto3.client("dynamodb", endpoint_url=ddb_endpoint, region_name="us-east-1")


@pytest.fixture
def ddb_lease_store(ddb_endpoint: str) -> DynamoDBLeaseStore:
    store = DynamoDBLeaseStore(
        DynamoDBLeaseStoreConfig(table_name=f"layout-app-{uuid.uuid4().hex[:10]}", table_poll_interval_s=0.05),
        endpoint_url=ddb_endpoint,
        region_name="us-east-1",
    )
    store.create_table_if_not_exists()
    return store


def create_legacy_coordinator_table(raw: DynamoDBClient, name: str) -> None:
    raw.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.mark.aws
class TestDynamoDBLayout:
    def test_a_new_application_uses_the_lease_table(self, ddb_lease_store: DynamoDBLeaseStore) -> None:
        app = ddb_lease_store.table_name
        coordinator, metrics, layout = open_dynamodb_item_tables(ddb_lease_store, app)
        assert layout == "single-table"
        assert coordinator.table_name == metrics.table_name == app
        assert (coordinator.layout, metrics.layout) == ("single-table", "single-table")
        assert coordinator.key_attribute == metrics.key_attribute == "leaseKey"

    def test_an_existing_coordinator_state_table_means_legacy(
        self, ddb_lease_store: DynamoDBLeaseStore, raw: DynamoDBClient
    ) -> None:
        app = ddb_lease_store.table_name
        create_legacy_coordinator_table(raw, f"{app}-CoordinatorState")
        coordinator, metrics, layout = open_dynamodb_item_tables(ddb_lease_store, app)
        assert layout == "legacy"
        assert (coordinator.table_name, coordinator.key_attribute) == (f"{app}-CoordinatorState", "key")
        assert (metrics.table_name, metrics.key_attribute) == (f"{app}-WorkerMetricStats", "wid")
        assert not metrics.exists()  # KCL ≤ 3.4 creates it when metrics start

    def test_a_completed_table_migration_means_single_table(
        self, ddb_lease_store: DynamoDBLeaseStore, raw: DynamoDBClient
    ) -> None:
        app = ddb_lease_store.table_name
        create_legacy_coordinator_table(raw, f"{app}-CoordinatorState")
        raw.put_item(
            TableName=app,
            Item={
                "leaseKey": {"S": "TableMigration3.5"},
                "entityType": {"S": "TABLE_MIGRATION"},
                "tm": {"S": "TABLE_MIGRATION_STATUS_PENDING"},
            },
        )
        assert open_dynamodb_item_tables(ddb_lease_store, app)[2] == "legacy"
        raw.put_item(
            TableName=app,
            Item={
                "leaseKey": {"S": "TableMigration3.5"},
                "entityType": {"S": "TABLE_MIGRATION"},
                "tm": {"S": "TABLE_MIGRATION_STATUS_COMPLETE"},
            },
        )
        assert open_dynamodb_item_tables(ddb_lease_store, app)[2] == "single-table"

    def test_forced_layout_and_table_names(self, ddb_lease_store: DynamoDBLeaseStore) -> None:
        coordinator, metrics, layout = open_dynamodb_item_tables(
            ddb_lease_store,
            "orders",
            coordinator_table_name="custom-coordinator",
            worker_metrics_table_name="custom-metrics",
            layout="legacy",
        )
        assert layout == "legacy"
        assert (coordinator.table_name, metrics.table_name) == ("custom-coordinator", "custom-metrics")
        assert open_dynamodb_item_tables(ddb_lease_store, "orders", layout="single-table")[2] == "single-table"

    @pytest.mark.parametrize(
        "settings",
        [
            {"coordinator_table_name": "x"},
            {"worker_metrics_table_name": "bad name!"},
            {"layout": "three-tables"},
        ],
    )
    def test_invalid_settings(self, ddb_lease_store: DynamoDBLeaseStore, settings: dict[str, Any]) -> None:
        with pytest.raises(ConfigurationError):
            open_dynamodb_item_tables(ddb_lease_store, "orders", **settings)
        with pytest.raises(ConfigurationError, match="application_name"):
            open_dynamodb_item_tables(ddb_lease_store, "")

    def test_legacy_tables_are_created_as_kcl_does(
        self, ddb_lease_store: DynamoDBLeaseStore, raw: DynamoDBClient
    ) -> None:
        coordinator, metrics, _ = open_dynamodb_item_tables(ddb_lease_store, "legacy-app", layout="legacy")
        for table, key in ((coordinator, "key"), (metrics, "wid")):
            assert table.create_if_not_exists() is True
            description = raw.describe_table(TableName=table.table_name)["Table"]
            assert description["TableStatus"] == "ACTIVE"
            assert description["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
            assert description["AttributeDefinitions"] == [{"AttributeName": key, "AttributeType": "S"}]
            assert description.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST"


@pytest.mark.aws
class TestDynamoDBItems:
    def test_single_table_items_carry_kcls_entity_types(
        self, ddb_lease_store: DynamoDBLeaseStore, raw: DynamoDBClient
    ) -> None:
        app = ddb_lease_store.table_name
        coordinator, metrics, _ = open_dynamodb_item_tables(ddb_lease_store, app)
        coordinator.put_if_absent("Migration3.0", {"cv": "CLIENT_VERSION_3X", "mb": "w1", "mts": 1700000000000})
        metrics.upsert("worker-1", {"lut": 1700000000, "sts": {"C": [12.5, -1]}, "opr": {"C": [100]}})
        assert raw.get_item(TableName=app, Key={"leaseKey": {"S": "Migration3.0"}})["Item"] == {
            "leaseKey": {"S": "Migration3.0"},
            "entityType": {"S": "CLIENT_VERSION_MIGRATION"},
            "cv": {"S": "CLIENT_VERSION_3X"},
            "mb": {"S": "w1"},
            "mts": {"N": "1700000000000"},
        }
        assert raw.get_item(TableName=app, Key={"leaseKey": {"S": "worker-1"}})["Item"] == {
            "leaseKey": {"S": "worker-1"},
            "entityType": {"S": "WORKER_METRIC_STATS"},
            "lut": {"N": "1700000000"},
            "sts": {"M": {"C": {"L": [{"N": "12.5"}, {"N": "-1"}]}}},
            "opr": {"M": {"C": {"L": [{"N": "100"}]}}},
        }

    def test_legacy_items_have_no_entity_type(self, ddb_lease_store: DynamoDBLeaseStore, raw: DynamoDBClient) -> None:
        coordinator, metrics, _ = open_dynamodb_item_tables(ddb_lease_store, "legacy-fmt", layout="legacy")
        coordinator.create_if_not_exists()
        metrics.create_if_not_exists()
        coordinator.put_if_absent("Migration3.0", {"cv": "CLIENT_VERSION_3X"})
        metrics.upsert("worker-1", {"lut": 5})
        assert raw.get_item(TableName=coordinator.table_name, Key={"key": {"S": "Migration3.0"}})["Item"] == {
            "key": {"S": "Migration3.0"},
            "cv": {"S": "CLIENT_VERSION_3X"},
        }
        assert raw.get_item(TableName=metrics.table_name, Key={"wid": {"S": "worker-1"}})["Item"] == {
            "wid": {"S": "worker-1"},
            "lut": {"N": "5"},
        }

    @pytest.mark.parametrize("layout", ["single-table", "legacy"])
    def test_transact_creates_the_items_put_if_absent_creates(
        self, ddb_lease_store: DynamoDBLeaseStore, raw: DynamoDBClient, layout: Layout
    ) -> None:
        app = ddb_lease_store.table_name
        coordinator, metrics, _ = open_dynamodb_item_tables(ddb_lease_store, app, layout=layout)
        coordinator.create_if_not_exists()
        metrics.create_if_not_exists()
        assert isinstance(coordinator, DynamoDBItemTable)
        assert isinstance(metrics, DynamoDBItemTable)
        attributes = {"cv": "CLIENT_VERSION_3X", "mts": 1}
        for table, (by_put, by_transact) in ((coordinator, ("Leader", "Migration3.0")), (metrics, ("w1", "w2"))):
            assert table.put_if_absent(by_put, attributes) is True
            assert table.transact([ItemWrite(by_transact, attributes, create=True)]) is True
            key = table.key_attribute
            put = raw.get_item(TableName=table.table_name, Key={key: {"S": by_put}})["Item"]
            transacted = raw.get_item(TableName=table.table_name, Key={key: {"S": by_transact}})["Item"]
            assert put.pop(key) == {"S": by_put}
            assert transacted.pop(key) == {"S": by_transact}
            expected_entity = {
                "Leader": "LEADER",
                "Migration3.0": "CLIENT_VERSION_MIGRATION",
                "w1": "WORKER_METRIC_STATS",
                "w2": "WORKER_METRIC_STATS",
            }
            if layout == "single-table":
                assert put.pop("entityType") == {"S": expected_entity[by_put]}
                assert transacted.pop("entityType") == {"S": expected_entity[by_transact]}
            assert put == transacted == {"cv": {"S": "CLIENT_VERSION_3X"}, "mts": {"N": "1"}}

    def test_transact_never_touches_an_item_of_another_kind(
        self, ddb_lease_store: DynamoDBLeaseStore, raw: DynamoDBClient
    ) -> None:
        app = ddb_lease_store.table_name
        stream_item: dict[str, Any] = {"leaseKey": {"S": "123:orders:1"}, "entityType": {"S": "STREAM"}}
        raw.put_item(TableName=app, Item=stream_item)
        _, metrics, _ = open_dynamodb_item_tables(ddb_lease_store, app)
        assert metrics.transact([ItemWrite("123:orders:1", {"lut": 1})]) is False
        assert metrics.transact([ItemWrite("123:orders:1", {"lut": 1}, create=True)]) is False
        assert raw.get_item(TableName=app, Key={"leaseKey": {"S": "123:orders:1"}})["Item"] == stream_item

    def test_items_kcl_wrote_are_read(self, ddb_lease_store: DynamoDBLeaseStore, raw: DynamoDBClient) -> None:
        """Items without entityType (KCL before 3.5, the migration tool) are coordinator items by key; KCL's
        worker-metrics items parse; other entity types (STREAM) belong to neither namespace."""
        app = ddb_lease_store.table_name
        raw.put_item(
            TableName=app,
            Item={"leaseKey": {"S": "Migration3.0"}, "cv": {"S": "CLIENT_VERSION_2X"}, "mts": {"N": "1"}},
        )
        raw.put_item(
            TableName=app,
            Item={
                "leaseKey": {"S": "java-worker"},
                "entityType": {"S": "WORKER_METRIC_STATS"},
                "lut": {"N": "1700000000"},
                "sts": {"M": {"C": {"L": [{"N": "50.123456"}]}}},
                "opr": {"M": {"C": {"L": [{"N": "100"}]}}},
            },
        )
        raw.put_item(
            TableName=app,
            Item={"leaseKey": {"S": "123:orders:1"}, "entityType": {"S": "STREAM"}, "streamId": {"S": "x"}},
        )
        coordinator, metrics, _ = open_dynamodb_item_tables(ddb_lease_store, app)
        assert coordinator.scan() == [ItemRecord("Migration3.0", {"cv": "CLIENT_VERSION_2X", "mts": 1}, None)]
        updated = coordinator.update(
            "Migration3.0", set_attributes={"cv": "CLIENT_VERSION_3X"}, expect={"cv": "CLIENT_VERSION_2X"}
        )
        assert updated == ItemRecord("Migration3.0", {"cv": "CLIENT_VERSION_3X", "mts": 1}, None)
        [record] = metrics.scan()
        stats = metrics_from_attributes(record.key, record.attributes)
        assert stats == WorkerMetricStats("java-worker", 1700000000, {"C": (50.123456,)}, {"C": (100.0,)})
        assert ddb_lease_store.list_leases() == []

    def test_single_table_items_share_the_lease_stores_capacity_meter(
        self, ddb_lease_store: DynamoDBLeaseStore
    ) -> None:
        coordinator, metrics, _ = open_dynamodb_item_tables(ddb_lease_store, ddb_lease_store.table_name)
        assert isinstance(coordinator, DynamoDBItemTable)
        assert coordinator.capacity_meter is metrics.capacity_meter is ddb_lease_store.capacity_meter
        before = ddb_lease_store.consumed_capacity
        metrics.upsert("worker-1", {"lut": 1})
        coordinator.get("Leader")
        after = ddb_lease_store.consumed_capacity
        assert after[0] > before[0]
        assert after[1] > before[1]
        assert coordinator.consumed_capacity == after

    def test_legacy_tables_count_their_own_capacity(self, ddb_lease_store: DynamoDBLeaseStore) -> None:
        coordinator, metrics, _ = open_dynamodb_item_tables(ddb_lease_store, "legacy-cap", layout="legacy")
        assert isinstance(coordinator, DynamoDBItemTable)
        assert isinstance(metrics, DynamoDBItemTable)
        coordinator.create_if_not_exists()
        before = ddb_lease_store.consumed_capacity
        coordinator.put_if_absent("Leader", {"ownerName": "w"})
        assert coordinator.consumed_capacity[1] > 0
        assert metrics.consumed_capacity == (0.0, 0.0)
        assert ddb_lease_store.consumed_capacity == before


class TestDynamoDBErrors:
    """Botocore errors are translated exactly as the lease store translates them (no server needed)."""

    @pytest.mark.parametrize(
        ("code", "error"),
        [
            ("ProvisionedThroughputExceededException", ThrottlingError),
            ("ThrottlingException", ThrottlingError),
            ("RequestLimitExceeded", ThrottlingError),
            ("ResourceNotFoundException", ResourceNotFoundError),
            ("InternalServerError", DependencyError),
            ("ConditionalCheckFailedException", DependencyError),  # on an unconditional read
        ],
    )
    def test_client_errors(self, code: str, error: type[Exception]) -> None:
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
        table = DynamoDBItemTable(client, "orders-CoordinatorState", layout="legacy", namespace="coordinator")
        with Stubber(client) as stubber:
            stubber.add_client_error("get_item", code, "boom")
            with pytest.raises(error, match="coordinator state table 'orders-CoordinatorState'"):
                table.get("Leader")

    def test_a_failed_condition_is_a_lost_race(self) -> None:
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
        table = DynamoDBItemTable(client, "orders", layout="single-table", namespace="coordinator")
        with Stubber(client) as stubber:
            for operation in ("update_item", "put_item", "delete_item"):
                stubber.add_client_error(operation, "ConditionalCheckFailedException")
            assert table.update("Leader", set_attributes={"a": 1}) is None
            assert table.put_if_absent("Leader", {"a": 1}) is False
            assert table.delete("Leader") is False

    def test_a_transaction_cancelled_by_a_condition_is_a_lost_race(self) -> None:
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
        table = DynamoDBItemTable(client, "orders", layout="single-table", namespace="coordinator")
        writes = [ItemWrite("Leader", {"a": 1}, create=True), ItemWrite("Migration3.0", {"b": 1})]
        with Stubber(client) as stubber:
            stubber.add_client_error(
                "transact_write_items",
                "TransactionCanceledException",
                "Transaction cancelled [None, ConditionalCheckFailed]",
                modeled_fields={"CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}]},
            )
            assert table.transact(writes) is False

    @pytest.mark.parametrize(
        ("code", "reasons", "error"),
        [
            ("TransactionCanceledException", [{"Code": "None"}, {"Code": "TransactionConflict"}], DependencyError),
            ("TransactionCanceledException", None, DependencyError),
            ("ThrottlingException", None, ThrottlingError),
            ("ProvisionedThroughputExceededException", None, ThrottlingError),
            ("ResourceNotFoundException", None, ResourceNotFoundError),
            ("ValidationException", None, DependencyError),
        ],
    )
    def test_other_transaction_errors_are_translated(
        self, code: str, reasons: list[dict[str, str]] | None, error: type[Exception]
    ) -> None:
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
        table = DynamoDBItemTable(client, "orders-CoordinatorState", layout="legacy", namespace="coordinator")
        with Stubber(client) as stubber:
            modeled = {"CancellationReasons": reasons} if reasons is not None else None
            stubber.add_client_error("transact_write_items", code, "boom", modeled_fields=modeled)
            with pytest.raises(error, match="coordinator state table 'orders-CoordinatorState'") as raised:
                table.transact([ItemWrite("Leader", {"a": 1}, create=True)])
        assert "TransactWriteItems" in str(raised.value)
