"""Backends for the contract suites: each suite runs unchanged against every implementation of its port."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shardwise.backends.config import DataClient
from shardwise.leases.store import LeaseStore
from shardwise.retrieval.source import StreamSource
from shardwise.tables.items import ItemTable, Layout

_counter = itertools.count()


@dataclass
class LeaseBackend:
    """A lease table in one backend, with a way to open more clients on it and to plant raw items."""

    name: str
    open_store: Callable[[], LeaseStore]
    put_raw_non_lease: Callable[[str, str], None]
    put_raw_malformed: Callable[[str], None]


def sqlite_backend(tmp_path: Path) -> LeaseBackend:
    from shardwise.backends.sqlite.leases import SQLiteLeaseStore

    path = tmp_path / "leases.db"
    table = f"app{next(_counter)}"

    def open_store() -> LeaseStore:
        return SQLiteLeaseStore(path, table)

    def raw(sql: str, params: tuple[Any, ...]) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(sql, params)

    def put_non_lease(key: str, entity_type: str) -> None:
        raw(
            "INSERT INTO shardwise_leases (table_name, lease_key, entity_type, lease_counter, checkpoint) "
            "VALUES (?, ?, ?, 0, 'x')",
            (table, key, entity_type),
        )

    def put_malformed(key: str) -> None:
        raw(
            "INSERT INTO shardwise_leases (table_name, lease_key, lease_counter, checkpoint) "
            "VALUES (?, ?, 1, 'not-a-sequence-number')",
            (table, key),
        )

    return LeaseBackend("sqlite", open_store, put_non_lease, put_malformed)


def dynamodb_backend(endpoint_url: str, *, data_client: DataClient = "boto3") -> LeaseBackend:
    import boto3

    from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig

    table = f"contract-app-{next(_counter)}"
    raw_client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name="us-east-1")

    def open_store() -> LeaseStore:
        return DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=table, table_poll_interval_s=0.05),
            endpoint_url=endpoint_url,
            region_name="us-east-1",
            data_client=data_client,
        )

    def put_non_lease(key: str, entity_type: str) -> None:
        raw_client.put_item(
            TableName=table,
            Item={"leaseKey": {"S": key}, "entityType": {"S": entity_type}, "lut": {"N": "1"}},
        )

    def put_malformed(key: str) -> None:
        # A lease-looking item without leaseCounter: KCL 2.x would fail the whole scan on it.
        raw_client.put_item(TableName=table, Item={"leaseKey": {"S": key}, "checkpoint": {"S": "TRIM_HORIZON"}})

    return LeaseBackend("dynamodb", open_store, put_non_lease, put_malformed)


# -- coordinator item tables -------------------------------------------------------------------------------


@dataclass
class ItemBackend:
    """The two coordinator item tables of one application in one backend and layout.

    ``open_tables`` returns (coordinator, worker-metrics) tables through a new client each call, and
    ``open_lease_store`` the application's lease store (the items of the single-table layout share its table).
    """

    name: str
    layout: str
    open_tables: Callable[[], tuple[ItemTable, ItemTable]]
    open_lease_store: Callable[[], LeaseStore]


def sqlite_item_backend(tmp_path: Path) -> ItemBackend:
    from shardwise.backends.sqlite.items import open_sqlite_item_tables
    from shardwise.backends.sqlite.leases import SQLiteLeaseStore

    path = tmp_path / "items.db"
    table = f"app{next(_counter)}"

    def open_tables() -> tuple[ItemTable, ItemTable]:
        coordinator, metrics, _ = open_sqlite_item_tables(SQLiteLeaseStore(path, table), table)
        return coordinator, metrics

    return ItemBackend("sqlite", "single-table", open_tables, lambda: SQLiteLeaseStore(path, table))


def dynamodb_item_backend(endpoint_url: str, layout: Layout) -> ItemBackend:
    from shardwise.backends.aws.items import open_dynamodb_item_tables
    from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig

    table = f"items-app-{next(_counter)}"

    def open_lease_store() -> DynamoDBLeaseStore:
        return DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=table, table_poll_interval_s=0.05),
            endpoint_url=endpoint_url,
            region_name="us-east-1",
        )

    def open_tables() -> tuple[ItemTable, ItemTable]:
        coordinator, metrics, _ = open_dynamodb_item_tables(open_lease_store(), table, layout=layout)
        return coordinator, metrics

    return ItemBackend(f"dynamodb-{layout}", layout, open_tables, open_lease_store)


# -- stream sources ----------------------------------------------------------------------------------------


@dataclass
class StreamBackend:
    """A way to create streams on one backend, write to them and reshard them, plus the source under test."""

    name: str
    create: Callable[[str, int], StreamSource]
    open: Callable[[str], StreamSource]  # a source for a stream that may not exist
    put: Callable[..., tuple[str, str]]  # (stream, data, partition_key, explicit_hash_key=None) -> (shard, seq)
    split: Callable[[str, str, int], None]
    merge: Callable[[str, str, str], None]


def local_stream_backend(tmp_path: Path) -> StreamBackend:
    from shardwise.backends.sqlite.stream import LocalStreamStore

    store = LocalStreamStore(tmp_path / "streams.db")

    def create(name: str, shards: int) -> StreamSource:
        store.create_stream(name, shards)
        return store.stream(name)

    def put(stream: str, data: bytes, partition_key: str, explicit_hash_key: str | None = None) -> tuple[str, str]:
        result = store.put_record(stream, data, partition_key, explicit_hash_key=explicit_hash_key)
        return result.shard_id, result.sequence_number

    def split(stream: str, shard_id: str, hash_key: int) -> None:
        store.split_shard(stream, shard_id, hash_key)

    def merge(stream: str, shard_id: str, adjacent: str) -> None:
        store.merge_shards(stream, shard_id, adjacent)

    return StreamBackend("local", create, store.stream, put, split, merge)


def kinesis_backend(endpoint_url: str, data_client: Literal["fast", "boto3"] = "fast") -> StreamBackend:
    """Kinesis on a stand-in, read through the fast data-plane client or boto3's (``data_client``)."""
    import boto3

    from shardwise.backends.aws.kinesis import KinesisStream

    client = boto3.client("kinesis", endpoint_url=endpoint_url, region_name="us-east-1")

    def wait_active(name: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
            if status == "ACTIVE":
                return
            time.sleep(0.05)
        raise AssertionError(f"stream {name} not ACTIVE after 30 s")

    def create(name: str, shards: int) -> StreamSource:
        client.create_stream(StreamName=name, ShardCount=shards)
        wait_active(name)
        return open_source(name)

    def put(stream: str, data: bytes, partition_key: str, explicit_hash_key: str | None = None) -> tuple[str, str]:
        if explicit_hash_key is None:
            response = client.put_record(StreamName=stream, Data=data, PartitionKey=partition_key)
        else:
            response = client.put_record(
                StreamName=stream, Data=data, PartitionKey=partition_key, ExplicitHashKey=explicit_hash_key
            )
        return response["ShardId"], response["SequenceNumber"]

    def split(stream: str, shard_id: str, hash_key: int) -> None:
        client.split_shard(StreamName=stream, ShardToSplit=shard_id, NewStartingHashKey=str(hash_key))
        wait_active(stream)

    def merge(stream: str, shard_id: str, adjacent: str) -> None:
        client.merge_shards(StreamName=stream, ShardToMerge=shard_id, AdjacentShardToMerge=adjacent)
        wait_active(stream)

    def open_source(name: str) -> StreamSource:
        return KinesisStream(name, endpoint_url=endpoint_url, region_name="us-east-1", data_client=data_client)

    return StreamBackend(f"kinesis-{data_client}", create, open_source, put, split, merge)
