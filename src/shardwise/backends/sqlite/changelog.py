"""``SQLiteChangelog``: the embedded backend's state changelog, two tables in the backend's database file.

``shardwise_state_heads`` holds one row per (changelog, shard): the head commit, its position, lineage and format
level, the snapshot commit (tombstones at or below it are purged) and the changes appended since. The state is
kept materialized in ``shardwise_state_kv``: one row per key with the commit that last wrote it; a deleted key is
a tombstone (``value IS NULL``) until the next compaction. An append is one ``BEGIN IMMEDIATE`` transaction,
conditional on the head row it read, so it is atomic whatever its size and exactly one of two racing appenders
wins. A delta restore reads the rows written after the store's commit (tombstones included); a store older than
the snapshot commit, or of another lineage, restores fully (live rows only).

Reads are strict: a row of the wrong shape raises :class:`~shardwise.errors.MalformedItemError` naming the shard
and the key; sqlite3 errors are translated by :mod:`shardwise.backends.sqlite.connection`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from shardwise.backends.changelog_rules import (
    check_successor,
    compaction_due,
    describe_head,
    restore_is_full,
    whole_number,
)
from shardwise.backends.sqlite.connection import SQLiteDatabase
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.errors import ChangelogConflictError, ConfigurationError, MalformedItemError
from shardwise.state.port import (
    Change,
    ChangelogHead,
    ChangelogStats,
    CommitMeta,
    RestorePlan,
)

__all__ = ["SQLiteChangelog"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS shardwise_state_heads (
        changelog TEXT NOT NULL,
        shard_id TEXT NOT NULL,
        commit_no INTEGER NOT NULL,
        sequence_number TEXT NOT NULL,
        sub_sequence_number INTEGER NOT NULL,
        lineage TEXT NOT NULL,
        format_level INTEGER NOT NULL,
        snapshot_commit INTEGER NOT NULL,
        snapshot_keys INTEGER NOT NULL,
        log_changes INTEGER NOT NULL,
        PRIMARY KEY (changelog, shard_id)
    )""",
    """CREATE TABLE IF NOT EXISTS shardwise_state_kv (
        changelog TEXT NOT NULL,
        shard_id TEXT NOT NULL,
        key BLOB NOT NULL,
        value BLOB,
        commit_no INTEGER NOT NULL,
        PRIMARY KEY (changelog, shard_id, key)
    )""",
    # A delta restore reads the rows written after a commit: without this, it would scan the shard's state.
    "CREATE INDEX IF NOT EXISTS shardwise_state_kv_by_commit ON shardwise_state_kv (changelog, shard_id, commit_no)",
)

_HEAD_COLUMNS = (
    "commit_no, sequence_number, sub_sequence_number, lineage, format_level, snapshot_commit, snapshot_keys, "
    "log_changes"
)


@dataclass(frozen=True, slots=True)
class _Head:
    head: ChangelogHead
    snapshot_commit: int
    snapshot_keys: int
    log_changes: int


def _parse_head(shard_id: str, row: tuple[object, ...]) -> _Head:
    commit, seq, sub, lineage, level, snap, snap_keys, log_changes = row
    key = f"{shard_id}/head"
    sub_number = whole_number(key, "sub_sequence_number", sub)
    if not isinstance(seq, str):
        raise MalformedItemError(key, f"sequence_number must be text, got {seq!r}")
    try:
        position = ExtendedSequenceNumber(seq, sub_number)
    except ValueError as exc:
        raise MalformedItemError(key, f"position {seq!r}/{sub!r} is not a sequence number: {exc}") from None
    if not isinstance(lineage, str) or not lineage:
        raise MalformedItemError(key, f"lineage must be non-empty text, got {lineage!r}")
    head = ChangelogHead(
        whole_number(key, "commit", commit, 1), position, lineage, whole_number(key, "format_level", level)
    )
    return _Head(
        head,
        whole_number(key, "snapshot_commit", snap),
        whole_number(key, "snapshot_keys", snap_keys),
        whole_number(key, "log_changes", log_changes),
    )


def _parse_change(shard_id: str, key: object, value: object, commit: object) -> tuple[bytes, bytes | None, int]:
    if not isinstance(key, bytes):
        raise MalformedItemError(f"{shard_id}/{key!r}", f"a state key must be bytes, got {type(key).__name__}")
    if value is not None and not isinstance(value, bytes):
        raise MalformedItemError(f"{shard_id}/{key!r}", f"a state value must be bytes, got {type(value).__name__}")
    return key, value, whole_number(f"{shard_id}/{key!r}", "commit", commit, 1)


class SQLiteChangelog:
    """The changelog of one application in the embedded database (tables created on first use)."""

    def __init__(self, database: SQLiteDatabase, name: str) -> None:
        if not name:
            raise ConfigurationError(f"the changelog needs a non-empty name, got {name!r}")
        self._db = database
        self._name = name
        self._ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteChangelog({self._name!r}, {str(self._db.path)!r})"

    @property
    def name(self) -> str:
        return self._name

    def ensure_exists(self) -> None:
        with self._lock:
            if self._ready:
                return
            with self._db.transaction() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
            self._ready = True

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot of the head and the rows (WAL: writers go on)."""
        with self._db.reading() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _read_head(self, conn: sqlite3.Connection, shard_id: str) -> _Head | None:
        row = conn.execute(
            f"SELECT {_HEAD_COLUMNS} FROM shardwise_state_heads WHERE changelog = ? AND shard_id = ?",
            (self._name, shard_id),
        ).fetchone()
        return None if row is None else _parse_head(shard_id, tuple(row))

    def head(self, shard_id: str) -> ChangelogHead | None:
        self.ensure_exists()
        with self._db.reading() as conn:
            found = self._read_head(conn, shard_id)
        return None if found is None else found.head

    def append(self, shard_id: str, changes: Sequence[Change], meta: CommitMeta, *, format_level: int) -> None:
        self.ensure_exists()
        with self._db.transaction() as conn:
            current = self._read_head(conn, shard_id)
            check_successor(self._name, shard_id, current.head if current else None, meta)
            conn.executemany(
                "INSERT INTO shardwise_state_kv (changelog, shard_id, key, value, commit_no) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (changelog, shard_id, key) DO UPDATE SET value = excluded.value, "
                "commit_no = excluded.commit_no",
                [(self._name, shard_id, bytes(k), None if v is None else bytes(v), meta.commit) for k, v in changes],
            )
            position = meta.position
            if current is None:
                conn.execute(
                    f"INSERT INTO shardwise_state_heads (changelog, shard_id, {_HEAD_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?)",
                    (
                        self._name,
                        shard_id,
                        meta.commit,
                        position.sequence_number,
                        position.sub_sequence_number,
                        meta.lineage,
                        format_level,
                        len(changes),
                    ),
                )
            else:
                conn.execute(
                    "UPDATE shardwise_state_heads SET commit_no = ?, sequence_number = ?, sub_sequence_number = ?, "
                    "format_level = ?, log_changes = log_changes + ? WHERE changelog = ? AND shard_id = ?",
                    (
                        meta.commit,
                        position.sequence_number,
                        position.sub_sequence_number,
                        format_level,
                        len(changes),
                        self._name,
                        shard_id,
                    ),
                )

    def plan_restore(self, shard_id: str, *, lineage: str | None, after_commit: int | None) -> RestorePlan | None:
        self.ensure_exists()
        with self._snapshot() as conn:
            current = self._read_head(conn, shard_id)
            if current is None:
                return None
            full = restore_is_full(current.head, lineage, after_commit, current.snapshot_commit)
            if full:
                rows = conn.execute(
                    "SELECT key, value, commit_no FROM shardwise_state_kv WHERE changelog = ? AND shard_id = ? "
                    "AND value IS NOT NULL ORDER BY key",
                    (self._name, shard_id),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT key, value, commit_no FROM shardwise_state_kv WHERE changelog = ? AND shard_id = ? "
                    "AND commit_no > ? ORDER BY key",
                    (self._name, shard_id, after_commit),
                ).fetchall()
        changes = [_parse_change(shard_id, *row)[:2] for row in rows]
        return RestorePlan(current.head, full, iter(changes))

    def needs_compaction(self, shard_id: str) -> bool:
        self.ensure_exists()
        with self._db.reading() as conn:
            found = self._read_head(conn, shard_id)
        return found is not None and compaction_due(found.log_changes, found.snapshot_keys)

    def compact(self, shard_id: str, state: Iterator[Change], meta: CommitMeta) -> None:
        """Purge the tombstones and record the head commit as the snapshot (``state`` is not needed: the
        table holds the materialized state already)."""
        del state
        self.ensure_exists()
        with self._db.transaction() as conn:
            current = self._read_head(conn, shard_id)
            if current is None or (current.head.commit, current.head.lineage) != (meta.commit, meta.lineage):
                raise ChangelogConflictError(
                    f"changelog {self._name!r} shard {shard_id}: compaction at commit {meta.commit} "
                    f"({meta.lineage}) found the head at {describe_head(current.head if current else None)}: another "
                    "worker owns the shard now"
                )
            conn.execute(
                "DELETE FROM shardwise_state_kv WHERE changelog = ? AND shard_id = ? AND value IS NULL",
                (self._name, shard_id),
            )
            (keys,) = conn.execute(
                "SELECT COUNT(*) FROM shardwise_state_kv WHERE changelog = ? AND shard_id = ?",
                (self._name, shard_id),
            ).fetchone()
            conn.execute(
                "UPDATE shardwise_state_heads SET snapshot_commit = commit_no, snapshot_keys = ?, log_changes = 0 "
                "WHERE changelog = ? AND shard_id = ?",
                (keys, self._name, shard_id),
            )

    def delete(self, shard_id: str) -> None:
        self.ensure_exists()
        with self._db.transaction() as conn:
            for table in ("shardwise_state_heads", "shardwise_state_kv"):
                conn.execute(f"DELETE FROM {table} WHERE changelog = ? AND shard_id = ?", (self._name, shard_id))

    def shard_ids(self) -> list[str]:
        self.ensure_exists()
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT shard_id FROM shardwise_state_heads WHERE changelog = ? ORDER BY shard_id", (self._name,)
            ).fetchall()
        return [str(row[0]) for row in rows]

    def stats(self, shard_id: str) -> ChangelogStats | None:
        self.ensure_exists()
        with self._snapshot() as conn:
            if self._read_head(conn, shard_id) is None:
                return None
            live, rows, size = conn.execute(
                "SELECT COUNT(value), COUNT(*), COALESCE(SUM(LENGTH(key) + COALESCE(LENGTH(value), 0)), 0) "
                "FROM shardwise_state_kv WHERE changelog = ? AND shard_id = ?",
                (self._name, shard_id),
            ).fetchone()
        return ChangelogStats(key_count=int(live), items=int(rows) + 1, size_bytes=int(size))
