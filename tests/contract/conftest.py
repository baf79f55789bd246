"""Fixtures of the contract suites: every suite runs unchanged against every backend of its port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shardwise.leases.store import LeaseStore
from support.backends import (
    ItemBackend,
    LeaseBackend,
    StreamBackend,
    dynamodb_backend,
    dynamodb_item_backend,
    kinesis_backend,
    local_stream_backend,
    sqlite_backend,
    sqlite_item_backend,
)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("dynamodb-fast", marks=pytest.mark.aws),
        pytest.param("dynamodb-boto3", marks=pytest.mark.aws),
    ]
)
def lease_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LeaseBackend]:
    """Every lease store: SQLite, and DynamoDB with its conditional updates written by the direct client
    (``dynamodb-fast``, what a worker uses by default) and by boto3 (``dynamodb-boto3``)."""
    if request.param == "sqlite":
        yield sqlite_backend(tmp_path)
    else:
        moto = request.getfixturevalue("moto_server")
        yield dynamodb_backend(moto.endpoint_url, data_client="fast" if request.param == "dynamodb-fast" else "boto3")


@pytest.fixture
def store(lease_backend: LeaseBackend) -> LeaseStore:
    store = lease_backend.open_store()
    store.create_table_if_not_exists()
    return store


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("dynamodb-single-table", marks=pytest.mark.aws),
        pytest.param("dynamodb-legacy", marks=pytest.mark.aws),
    ]
)
def item_backend(request: pytest.FixtureRequest, tmp_path: Path) -> ItemBackend:
    """Coordinator item tables: SQLite, and DynamoDB in both layouts. Nothing is created yet."""
    if request.param == "sqlite":
        return sqlite_item_backend(tmp_path)
    moto = request.getfixturevalue("moto_server")
    return dynamodb_item_backend(moto.endpoint_url, "legacy" if request.param == "dynamodb-legacy" else "single-table")


@pytest.fixture(
    params=[
        "local",
        pytest.param("kinesis-fast", marks=pytest.mark.aws),
        pytest.param("kinesis-boto3", marks=pytest.mark.aws),
    ]
)
def stream_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StreamBackend:
    """The stream-source contract runs on the local stream and on Kinesis through both data-plane clients."""
    if request.param == "local":
        return local_stream_backend(tmp_path)
    server = request.getfixturevalue("kinesis_local")
    return kinesis_backend(server.endpoint_url, "fast" if request.param == "kinesis-fast" else "boto3")
