"""Backends for the contract suites: each suite runs unchanged against every implementation of its port."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shardwise.leases.store import LeaseStore

_counter = itertools.count()


@dataclass
class LeaseBackend:
    """A lease table in one backend, with a way to open more clients on it and to plant raw items."""

    name: str
    open_store: Callable[[], LeaseStore]
    put_raw_non_lease: Callable[[str, str], None]
    put_raw_malformed: Callable[[str], None]


def _sqlite_backend(tmp_path: Path) -> LeaseBackend:
    from shardwise.leases.sqlite import SQLiteLeaseStore

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


def _dynamodb_backend(endpoint_url: str) -> LeaseBackend:
    import boto3
    from shardwise.leases.dynamodb import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig

    table = f"contract-app-{next(_counter)}"
    raw_client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name="us-east-1")

    def open_store() -> LeaseStore:
        return DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=table, table_poll_interval_s=0.05),
            endpoint_url=endpoint_url,
            region_name="us-east-1",
        )

    def put_non_lease(key: str, entity_type: str) -> None:
        raw_client.put_item(
            TableName=table,
            Item={"leaseKey": {"S": key}, "entityType": {"S": entity_type}, "lut": {"N": "1"}},
        )

    def put_malformed(key: str) -> None:
        # A lease-looking item without leaseCounter: KCL 2.x would fail the whole scan on it.
        raw_client.put_item(
            TableName=table, Item={"leaseKey": {"S": key}, "checkpoint": {"S": "TRIM_HORIZON"}}
        )

    return LeaseBackend("dynamodb", open_store, put_non_lease, put_malformed)


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def lease_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LeaseBackend]:
    if request.param == "sqlite":
        yield _sqlite_backend(tmp_path)
    else:
        moto = request.getfixturevalue("moto_server")
        yield _dynamodb_backend(moto.endpoint_url)


@pytest.fixture
def store(lease_backend: LeaseBackend) -> LeaseStore:
    store = lease_backend.open_store()
    store.create_table_if_not_exists()
    return store
