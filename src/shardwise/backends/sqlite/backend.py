"""The embedded backend behind the seam: one SQLite database file for leases, coordinator items and streams."""

from __future__ import annotations

import os

from shardwise.backends.port import Capabilities, TableAdmin
from shardwise.backends.sqlite.connection import SQLiteDatabase
from shardwise.errors import ConfigurationError
from shardwise.leases.store import LeaseStore
from shardwise.retrieval.source import StreamSource
from shardwise.state.port import Changelog
from shardwise.tables.items import CoordinatorTables, ItemTable, Layout, Namespace

__all__ = ["CAPABILITIES", "SQLiteBackend"]

#: One file on one machine: no Java KCL 2.x worker can share it, it keeps coordinator items in the lease table
#: only (the single-table layout), and its owner index is part of the schema (nothing for a rollback to delete).
CAPABILITIES = Capabilities(
    name="local", layouts=("single-table",), kcl_2x_peers=False, owner_index=True, kcl_3x_resources=False
)


class SQLiteBackend:
    """Opens the embedded lease stores, local streams and item tables of one database file."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        database: SQLiteDatabase | None = None,
        busy_timeout_ms: int | None = None,
    ) -> None:
        """``busy_timeout_ms``: how long a write waits for another process's lock (default: SQLiteDatabase's)."""
        if database is None:
            if path is None:
                raise ConfigurationError("the embedded backend needs a database path (--db)")
            database = (
                SQLiteDatabase(path)
                if busy_timeout_ms is None
                else SQLiteDatabase(path, busy_timeout_s=busy_timeout_ms / 1000)
            )
            # The file as it was named (--db), for messages: SQLiteDatabase keeps a normalized Path.
            self._file = os.fspath(path)
        else:
            self._file = str(database.path)
        self._db = database

    def __repr__(self) -> str:
        return f"SQLiteBackend({str(self._db.path)!r})"

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    @property
    def database(self) -> SQLiteDatabase:
        return self._db

    def open_lease_store(self, table_name: str) -> LeaseStore:
        from shardwise.backends.sqlite.leases import SQLiteLeaseStore  # noqa: PLC0415 - leases imports this module

        return SQLiteLeaseStore(self._db.path, table_name, database=self._db)

    def open_stream(self, stream_name: str) -> StreamSource:
        from shardwise.backends.sqlite.stream import LocalStreamStore  # noqa: PLC0415

        return LocalStreamStore(self._db.path, database=self._db).stream(stream_name)

    def open_coordinator_tables(
        self,
        store: LeaseStore,
        application_name: str,
        *,
        layout: Layout | None = None,
        coordinator_table_name: str | None = None,
        worker_metrics_table_name: str | None = None,
    ) -> CoordinatorTables:
        from shardwise.backends.sqlite.items import open_sqlite_item_tables  # noqa: PLC0415
        from shardwise.backends.sqlite.leases import SQLiteLeaseStore  # noqa: PLC0415

        del coordinator_table_name, worker_metrics_table_name  # DynamoDB table names: no meaning in one file
        if layout == "legacy":
            raise ConfigurationError("the embedded (SQLite) backend has only the single-table layout")
        if not isinstance(store, SQLiteLeaseStore):
            raise ConfigurationError(f"no embedded coordinator item tables next to a {type(store).__name__}")
        coordinator, metrics, found = open_sqlite_item_tables(store, application_name)
        return CoordinatorTables(coordinator, metrics, found)

    def open_legacy_item_table(self, table_name: str, namespace: Namespace) -> ItemTable:
        raise ConfigurationError(
            f"the embedded (SQLite) backend has only the single-table layout: no legacy {namespace} table "
            f"{table_name!r}"
        )

    def table_admin(self) -> TableAdmin:
        from shardwise.backends.sqlite.admin import SQLiteTableAdmin  # noqa: PLC0415 - admin imports leases

        return SQLiteTableAdmin(self._db, self._file)

    def open_changelog(self, application_name: str, *, table_name: str | None = None) -> Changelog:
        from shardwise.backends.sqlite.changelog import SQLiteChangelog  # noqa: PLC0415

        return SQLiteChangelog(self._db, table_name or f"{application_name}-state")
