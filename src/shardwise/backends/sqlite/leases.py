"""``SQLiteLeaseStore``: the embedded lease store.

Same semantics as the DynamoDB store — every conditional operation of the ``LeaseStore`` port, with the same
conditions — implemented as single ``UPDATE … WHERE <condition>`` statements inside ``BEGIN IMMEDIATE``
transactions, so that several worker processes on one machine can share the database file safely.

Many applications can share one database file: each lease table is a ``table_name`` partition of the
``shardwise_leases`` table.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

from shardwise.backends.sqlite.backend import SQLiteBackend
from shardwise.backends.sqlite.connection import SQLiteDatabase
from shardwise.backends.sqlite.lease_rows import (
    ALL_COLUMNS,
    COLUMNS,
    check_writable,
    encode_ids,
    lease_from_row,
    raw_fields,
)
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import ConfigurationError, MalformedItemError, TableNotFoundError
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.model import RESERVED_KEYS, Lease
from shardwise.leases.store import LeaseScan, MalformedLease, RawLeaseItem

__all__ = ["SQLiteLeaseStore"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shardwise_lease_tables (
    table_name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS shardwise_leases (
    table_name TEXT NOT NULL,
    lease_key TEXT NOT NULL,
    entity_type TEXT NOT NULL DEFAULT 'LEASE',
    lease_owner TEXT,
    lease_counter INTEGER NOT NULL,
    checkpoint TEXT NOT NULL,
    checkpoint_sub INTEGER NOT NULL DEFAULT 0,
    pending_checkpoint TEXT,
    pending_checkpoint_sub INTEGER,
    pending_checkpoint_state BLOB,
    owner_switches INTEGER NOT NULL DEFAULT 0,
    parent_shard_ids TEXT,
    child_shard_ids TEXT,
    starting_hash_key TEXT,
    ending_hash_key TEXT,
    throughput_kbps REAL,
    checkpoint_owner TEXT,
    PRIMARY KEY (table_name, lease_key)
);
CREATE INDEX IF NOT EXISTS shardwise_leases_by_owner ON shardwise_leases (table_name, lease_owner, lease_key);
"""


class SQLiteLeaseStore:
    """The leases of one application, in a SQLite database file shared by the workers of one machine."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        table_name: str,
        *,
        busy_timeout_s: float = 30.0,
        database: SQLiteDatabase | None = None,
    ) -> None:
        if not table_name:
            raise ConfigurationError("table_name must not be empty (KCL uses the application name)")
        self._table = table_name
        self._db = database if database is not None else SQLiteDatabase(path, busy_timeout_s=busy_timeout_s)
        self._warned: set[tuple[str, str]] = set()
        with self._db.reading() as conn:
            conn.executescript(_SCHEMA)

    @property
    def table_name(self) -> str:
        return self._table

    @property
    def path(self) -> str:
        return str(self._db.path)

    @property
    def database(self) -> SQLiteDatabase:
        """The database this store uses (shared with the coordinator item tables of the application)."""
        return self._db

    @property
    def backend(self) -> SQLiteBackend:
        """The embedded backend of this store's database file (the seam's :class:`BackendBound`)."""
        return SQLiteBackend(database=self._db)

    def close(self) -> None:
        self._db.close()

    # -- table -----------------------------------------------------------------------------------------

    def create_table_if_not_exists(self) -> bool:
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO shardwise_lease_tables (table_name, created_at) "
                "VALUES (?, strftime('%s','now'))",
                (self._table,),
            )
            return cur.rowcount == 1

    def table_exists(self) -> bool:
        with self._db.reading() as conn:
            row = conn.execute("SELECT 1 FROM shardwise_lease_tables WHERE table_name = ?", (self._table,)).fetchone()
        return row is not None

    def _require_table(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT 1 FROM shardwise_lease_tables WHERE table_name = ?", (self._table,)).fetchone()
        if row is None:
            raise TableNotFoundError(
                f"lease table {self._table!r} does not exist in {self._db.path}; create it first "
                "(create_table_if_not_exists, or start a worker for the application)"
            )

    # -- reads -----------------------------------------------------------------------------------------

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        with self._db.reading() as conn:
            self._require_table(conn)
            conn.row_factory = sqlite3.Row
            try:
                return list(
                    conn.execute(
                        f"SELECT {COLUMNS} FROM shardwise_leases WHERE table_name = ? {where} ORDER BY lease_key",
                        (self._table, *params),
                    )
                )
            finally:
                conn.row_factory = None

    def _parse(self, row: sqlite3.Row) -> Lease | None:
        key = str(row["lease_key"])
        if row["entity_type"] != "LEASE" or key in RESERVED_KEYS:  # a coordinator item: expected, not reported
            logger.debug(
                "lease table %s: item %r is a coordinator item (entityType %s)", self._table, key, row["entity_type"]
            )
            return None
        try:
            return lease_from_row(row)
        except MalformedItemError as exc:
            self._warn_once(key, f"malformed lease, skipped: {exc.problem}")
            return None

    def _warn_once(self, key: str, reason: str) -> None:
        if (key, reason) in self._warned:
            logger.debug("lease table %s: item %r skipped: %s", self._table, key, reason)
            return
        self._warned.add((key, reason))
        logger.warning("lease table %s: item %r skipped: %s", self._table, key, reason)

    def list_leases(self) -> list[Lease]:
        return [lease for row in self._rows("", ()) if (lease := self._parse(row)) is not None]

    @staticmethod
    def _is_lease_row(row: sqlite3.Row) -> bool:
        return row["entity_type"] == "LEASE" and str(row["lease_key"]) not in RESERVED_KEYS

    def scan_leases(self) -> LeaseScan:
        scan = LeaseScan()
        for row in self._rows("", ()):
            if not self._is_lease_row(row):
                continue
            try:
                scan.leases.append(lease_from_row(row))
            except MalformedItemError as exc:
                scan.malformed.append(MalformedLease(exc.key, exc.problem))
        return scan

    def read_lease_item(self, lease_key: str) -> Lease | MalformedLease | None:
        rows = [row for row in self._rows("AND lease_key = ?", (lease_key,)) if self._is_lease_row(row)]
        if not rows:
            return None
        try:
            return lease_from_row(rows[0])
        except MalformedItemError as exc:
            return MalformedLease(exc.key, exc.problem)

    def read_raw_lease(self, lease_key: str) -> RawLeaseItem | None:
        rows = [row for row in self._rows("AND lease_key = ?", (lease_key,)) if self._is_lease_row(row)]
        if not rows:
            return None
        row = rows[0]
        try:
            lease_from_row(row)
            problem = None
        except MalformedItemError as exc:
            problem = exc.problem
        return RawLeaseItem(lease_key, raw_fields(row), problem, tuple(row[c] for c in ALL_COLUMNS))

    def replace_raw_lease(self, raw: RawLeaseItem, lease: Lease) -> bool:
        if lease.lease_key != raw.key:
            raise ValueError(f"cannot replace item {raw.key!r} by lease {lease.lease_key!r}")
        check_writable(self._table, lease)
        version = raw.version
        if not isinstance(version, tuple) or len(version) != len(ALL_COLUMNS):
            raise ValueError("raw lease item was not read from this store")
        hash_range, pending = lease.hash_key_range, lease.pending_checkpoint
        values = {
            "lease_owner": lease.lease_owner,
            "lease_counter": lease.lease_counter,
            "checkpoint": lease.checkpoint.sequence_number,
            "checkpoint_sub": lease.checkpoint.sub_sequence_number,
            "pending_checkpoint": None if pending is None else pending.sequence_number,
            "pending_checkpoint_sub": None if pending is None else pending.sub_sequence_number,
            "pending_checkpoint_state": lease.pending_checkpoint_state,
            "owner_switches": lease.owner_switches_since_checkpoint,
            "parent_shard_ids": encode_ids(lease.parent_shard_ids),
            "child_shard_ids": encode_ids(lease.child_shard_ids),
            "starting_hash_key": None if hash_range is None else str(hash_range.start),
            "ending_hash_key": None if hash_range is None else str(hash_range.end),
            "throughput_kbps": lease.throughput_kbps,
            "checkpoint_owner": lease.checkpoint_owner,
        }
        assignments = ", ".join(f"{column} = ?" for column in values)
        unchanged = " AND ".join(f"{column} IS ?" for column in ALL_COLUMNS)
        with self._db.transaction() as conn:
            self._require_table(conn)
            cur = conn.execute(
                f"UPDATE shardwise_leases SET {assignments} WHERE table_name = ? AND {unchanged}",
                (*values.values(), self._table, *version),
            )
            return cur.rowcount == 1

    # -- owner index (OwnerIndex) ----------------------------------------------------------------------

    def owner_index_status(self) -> str | None:
        """Always ``"ACTIVE"``: the embedded owner index (``shardwise_leases_by_owner``) is part of the schema."""
        return "ACTIVE"

    def create_owner_index(self) -> bool:
        """A no-op (False): the embedded owner index always exists."""
        return False

    def delete_owner_index(self) -> bool:
        """A no-op (False): the embedded owner index is part of the schema and is never deleted."""
        return False

    def list_lease_keys_for_owner(self, owner: str) -> list[str]:
        """Keys of the leases owned by ``owner`` (the embedded counterpart of the owner GSI query)."""
        return [str(row["lease_key"]) for row in self._rows("AND lease_owner = ?", (owner,))]

    def get_lease(self, lease_key: str) -> Lease | None:
        rows = self._rows("AND lease_key = ?", (lease_key,))
        return self._parse(rows[0]) if rows else None

    def get_checkpoint(self, lease_key: str) -> ExtendedSequenceNumber | None:
        lease = self.get_lease(lease_key)
        return None if lease is None else lease.checkpoint

    def is_empty(self) -> bool:
        return not self.list_leases()

    # -- conditional writes ----------------------------------------------------------------------------

    def _conditional_update(
        self,
        lease_key: str,
        assignments: str,
        set_params: tuple[Any, ...],
        condition: str,
        condition_params: tuple[Any, ...] = (),
    ) -> Lease | None:
        """``UPDATE … SET assignments WHERE key AND condition`` in one transaction; the new lease or None."""
        with self._db.transaction() as conn:
            self._require_table(conn)
            cur = conn.execute(
                f"UPDATE shardwise_leases SET {assignments} "
                f"WHERE table_name = ? AND lease_key = ? AND entity_type = 'LEASE' AND ({condition})",
                (*set_params, self._table, lease_key, *condition_params),
            )
            if cur.rowcount != 1:
                return None
            conn.row_factory = sqlite3.Row
            try:
                row = conn.execute(
                    f"SELECT {COLUMNS} FROM shardwise_leases WHERE table_name = ? AND lease_key = ?",
                    (self._table, lease_key),
                ).fetchone()
            finally:
                conn.row_factory = None
        return lease_from_row(row)

    def create_lease_if_not_exists(self, lease: Lease) -> Lease | None:
        check_writable(self._table, lease)
        hash_range = lease.hash_key_range
        pending = lease.pending_checkpoint
        with self._db.transaction() as conn:
            self._require_table(conn)
            cur = conn.execute(
                f"INSERT OR IGNORE INTO shardwise_leases (table_name, {COLUMNS}) "
                "VALUES (?, ?, 'LEASE', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self._table,
                    lease.lease_key,
                    lease.lease_owner,
                    lease.lease_counter,
                    lease.checkpoint.sequence_number,
                    lease.checkpoint.sub_sequence_number,
                    None if pending is None else pending.sequence_number,
                    None if pending is None else pending.sub_sequence_number,
                    lease.pending_checkpoint_state,
                    lease.owner_switches_since_checkpoint,
                    encode_ids(lease.parent_shard_ids),
                    encode_ids(lease.child_shard_ids),
                    None if hash_range is None else str(hash_range.start),
                    None if hash_range is None else str(hash_range.end),
                    lease.throughput_kbps,
                    lease.checkpoint_owner,
                ),
            )
        return lease if cur.rowcount == 1 else None

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        check_writable(self._table, lease)
        condition = "lease_counter = ?"
        if lease.checkpoint_owner is None:
            condition += " AND checkpoint_owner IS NULL"
        return self._conditional_update(
            lease.lease_key,
            "lease_counter = lease_counter + 1, throughput_kbps = COALESCE(?, throughput_kbps)",
            (throughput_kbps,),
            condition,
            (lease.lease_counter,),
        )

    def take_lease(self, lease: Lease, owner: str) -> Lease | None:
        check_writable(self._table, lease)
        return self._conditional_update(
            lease.lease_key,
            "owner_switches = owner_switches + ?, "
            "lease_counter = lease_counter + 1, lease_owner = ?, checkpoint_owner = NULL",
            (int(lease.counts_as_owner_switch(owner)), owner),
            "lease_counter = ?",
            (lease.lease_counter,),
        )

    @staticmethod
    def _owners_condition(lease: Lease) -> tuple[str, tuple[Any, ...]]:
        # "IS ?" matches NULL to None, which is the "attribute does not exist" case of DynamoDB.
        return "lease_owner IS ? AND checkpoint_owner IS ?", (lease.lease_owner, lease.checkpoint_owner)

    def evict_lease(self, lease: Lease) -> Lease | None:
        check_writable(self._table, lease)
        condition, cond_params = self._owners_condition(lease)
        return self._conditional_update(
            lease.lease_key,
            "lease_owner = CASE WHEN checkpoint_owner IS NULL THEN NULL ELSE lease_owner END, "
            "checkpoint_owner = NULL, lease_counter = lease_counter + 1",
            (),
            condition,
            cond_params,
        )

    def assign_lease(self, lease: Lease, new_owner: str) -> Lease | None:
        check_writable(self._table, lease)
        condition, cond_params = self._owners_condition(lease)
        return self._conditional_update(
            lease.lease_key,
            "owner_switches = owner_switches + ?, "
            "lease_owner = ?, checkpoint_owner = NULL, lease_counter = lease_counter + 1",
            (int(lease.counts_as_owner_switch(new_owner)), new_owner),
            condition,
            cond_params,
        )

    def initiate_graceful_handoff(self, lease: Lease, new_owner: str) -> Lease | None:
        check_writable(self._table, lease)
        if lease.lease_owner is None:
            return None
        return self._conditional_update(
            lease.lease_key,
            "checkpoint_owner = lease_owner, lease_owner = ?",
            (new_owner,),
            "lease_owner = ? AND checkpoint_owner IS NULL",
            (lease.lease_owner,),
        )

    def update_lease(self, lease: Lease) -> Lease | None:
        check_writable(self._table, lease)
        pending = lease.pending_checkpoint
        assignments = (
            "lease_counter = lease_counter + 1, checkpoint = ?, checkpoint_sub = ?, pending_checkpoint = ?, "
            "pending_checkpoint_sub = ?, pending_checkpoint_state = ?, owner_switches = ?"
        )
        params: list[Any] = [
            lease.checkpoint.sequence_number,
            lease.checkpoint.sub_sequence_number,
            None if pending is None else pending.sequence_number,
            None if pending is None else pending.sub_sequence_number,
            lease.pending_checkpoint_state if pending is not None else None,
            lease.owner_switches_since_checkpoint,
        ]
        if lease.child_shard_ids:
            assignments += ", child_shard_ids = ?"
            params.append(encode_ids(lease.child_shard_ids))
        if lease.hash_key_range is not None:
            assignments += ", starting_hash_key = ?, ending_hash_key = ?"
            params += [str(lease.hash_key_range.start), str(lease.hash_key_range.end)]
        return self._conditional_update(
            lease.lease_key, assignments, tuple(params), "lease_counter = ?", (lease.lease_counter,)
        )

    def update_lease_meta(
        self,
        lease_key: str,
        *,
        child_shard_ids: Iterable[str] | None = None,
        hash_key_range: HashKeyRange | None = None,
    ) -> Lease | None:
        assignments: list[str] = []
        params: list[Any] = []
        if child_shard_ids is not None:
            assignments.append("child_shard_ids = ?")
            params.append(encode_ids(frozenset(child_shard_ids)))
        if hash_key_range is not None:
            assignments.append("starting_hash_key = ?, ending_hash_key = ?")
            params += [str(hash_key_range.start), str(hash_key_range.end)]
        if not assignments:
            raise ValueError("update_lease_meta needs child_shard_ids and/or hash_key_range")
        return self._conditional_update(lease_key, ", ".join(assignments), tuple(params), "1 = 1")

    def delete_lease(self, lease_key: str) -> None:
        with self._db.transaction() as conn:
            self._require_table(conn)
            conn.execute(
                "DELETE FROM shardwise_leases WHERE table_name = ? AND lease_key = ?",
                (self._table, lease_key),
            )
