"""Open the coordinator and worker-metrics item tables of an application, whatever its backend and layout."""

from __future__ import annotations

from dataclasses import dataclass

from shardwise.backends.sqlite.items import open_sqlite_item_tables
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.errors import ConfigurationError
from shardwise.leases.store import LeaseStore
from shardwise.tables.items import ItemTable, Layout

__all__ = ["CoordinatorTables", "open_coordinator_tables"]


@dataclass(frozen=True, slots=True)
class CoordinatorTables:
    coordinator: ItemTable
    worker_metrics: ItemTable
    layout: Layout


def open_coordinator_tables(
    store: LeaseStore,
    application_name: str,
    *,
    layout: Layout | None = None,
    coordinator_table_name: str | None = None,
    worker_metrics_table_name: str | None = None,
) -> CoordinatorTables:
    """The item tables next to ``store``. DynamoDB: the legacy layout when ``<app>-CoordinatorState`` exists
    (or ``layout="legacy"``), else single-table; SQLite: always single-table, in the same database file."""
    if isinstance(store, SQLiteLeaseStore):
        if layout == "legacy":
            raise ConfigurationError("the embedded (SQLite) backend has only the single-table layout")
        coordinator, metrics, found = open_sqlite_item_tables(store, application_name)
        return CoordinatorTables(coordinator, metrics, found)
    try:  # boto3 is an optional extra: import the AWS backend only when it is used
        from shardwise.backends.aws.items import open_dynamodb_item_tables  # noqa: PLC0415
        from shardwise.backends.aws.leases import DynamoDBLeaseStore  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - only without boto3
        raise ConfigurationError(f"the aws backend needs boto3: pip install 'shardwise[aws]' ({exc})") from exc
    if not isinstance(store, DynamoDBLeaseStore):
        raise ConfigurationError(f"no coordinator item tables for a {type(store).__name__}")
    coordinator_d, metrics_d, found = open_dynamodb_item_tables(
        store,
        application_name,
        coordinator_table_name=coordinator_table_name,
        worker_metrics_table_name=worker_metrics_table_name,
        layout=layout,
    )
    return CoordinatorTables(coordinator_d, metrics_d, found)
