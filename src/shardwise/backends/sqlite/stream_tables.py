"""The local streams' storage: their SQLite tables, the rows read from them, and the access every operation on
a stream shares (snapshots, stream and shard look-ups, the clock).

Tables are prefixed ``shardwise_stream`` so that the file can be shared with the SQLite lease store:
``shardwise_stream_meta`` (the schema version), ``shardwise_streams`` (one row per stream: retention, next
sequence counter, next shard index), ``shardwise_stream_shards`` (hash range as decimal text, starting and
ending counters, parents, open/close times) and ``shardwise_stream_records`` (``stream_id, shard_index,
counter, arrival_ms, partition_key, explicit_hash_key, data``, indexed by ``(stream_id, shard_index,
counter)`` for reads and ``(stream_id, arrival_ms)`` for trimming).

Sequence numbers are 56-digit decimal strings ``SEQ_BASE + counter`` (:func:`sequence_number`), like the ones
Kinesis issues; shard ids are ``shardId-`` and 12 digits of the shard's index (:func:`shard_id_for_index`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shardwise.backends.sqlite.connection import SQLiteDatabase, translate_errors
from shardwise.errors import ConfigurationError, ShardNotFoundError, StreamNotFoundError
from shardwise.hashkeys import HashKeyRange
from shardwise.retrieval.model import Shard

__all__ = [
    "SCHEMA_VERSION",
    "SEQ_BASE",
    "ShardRow",
    "StreamRow",
    "StreamTables",
    "epoch_ms",
    "new_shard",
    "sequence_number",
    "shard_id_for_index",
    "utc",
]

logger = logging.getLogger(__name__)

#: Sequence numbers are ``SEQ_BASE + counter``: 56 decimal digits, like the ones Kinesis issues.
SEQ_BASE = 49 * 10**54
#: Version of the tables below; a file written with another version is refused.
SCHEMA_VERSION = 1

_SHARD_ID = re.compile(r"shardId-(\d{12})")

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS shardwise_stream_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS shardwise_streams (
        stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        retention_hours INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        next_counter INTEGER NOT NULL,
        next_shard_index INTEGER NOT NULL,
        last_arrival_ms INTEGER NOT NULL,
        last_trim_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS shardwise_stream_shards (
        stream_id INTEGER NOT NULL,
        shard_index INTEGER NOT NULL,
        starting_hash_key TEXT NOT NULL,
        ending_hash_key TEXT NOT NULL,
        starting_counter INTEGER NOT NULL,
        ending_counter INTEGER,
        parent_index INTEGER,
        adjacent_parent_index INTEGER,
        created_ms INTEGER NOT NULL,
        closed_ms INTEGER,
        PRIMARY KEY (stream_id, shard_index)
    )""",
    """CREATE TABLE IF NOT EXISTS shardwise_stream_records (
        stream_id INTEGER NOT NULL,
        shard_index INTEGER NOT NULL,
        counter INTEGER NOT NULL,
        arrival_ms INTEGER NOT NULL,
        partition_key TEXT NOT NULL,
        explicit_hash_key TEXT,
        data BLOB NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS shardwise_stream_records_by_position "
    "ON shardwise_stream_records (stream_id, shard_index, counter)",
    "CREATE INDEX IF NOT EXISTS shardwise_stream_records_by_arrival "
    "ON shardwise_stream_records (stream_id, arrival_ms)",
)

_SHARD_COLUMNS = (
    "shard_index, starting_hash_key, ending_hash_key, starting_counter, ending_counter, parent_index, "
    "adjacent_parent_index, created_ms, closed_ms"
)


def shard_id_for_index(index: int) -> str:
    """The Kinesis-style id of the shard with this index: ``shardId-`` and 12 digits."""
    return f"shardId-{index:012d}"


def sequence_number(counter: int) -> str:
    """The sequence number of the record (or reshard) with this counter."""
    return str(SEQ_BASE + counter)


def utc(ms: int) -> datetime:
    """The UTC time of ``ms`` milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def epoch_ms(timestamp: datetime) -> int:
    """Milliseconds since the epoch of ``timestamp``."""
    return int(timestamp.timestamp() * 1000)


def _not_found_stream(name: str, path: object) -> StreamNotFoundError:
    return StreamNotFoundError(
        f"stream {name!r} does not exist in {path}; create it with LocalStreamStore.create_stream "
        f"or `shardwise stream create {name} --shards N --db {path}`"
    )


def _not_found_shard(stream: str, shard_id: str) -> ShardNotFoundError:
    return ShardNotFoundError(
        f"shard {shard_id!r} does not exist in stream {stream!r} (or it was closed longer ago than the "
        "retention period); list the shards with list_shards or `shardwise stream describe`"
    )


@dataclass(frozen=True, slots=True)
class StreamRow:
    """One row of ``shardwise_streams``."""

    stream_id: int
    name: str
    retention_hours: int
    created_ms: int
    next_counter: int
    next_shard_index: int
    last_arrival_ms: int
    last_trim_ms: int

    @property
    def retention_ms(self) -> int:
        return self.retention_hours * 3_600_000


@dataclass(frozen=True, slots=True)
class ShardRow:
    """One row of ``shardwise_stream_shards``; open while it has no ending counter."""

    index: int
    start: int
    end: int
    starting_counter: int
    ending_counter: int | None
    parent_index: int | None
    adjacent_parent_index: int | None
    created_ms: int
    closed_ms: int | None

    @property
    def shard_id(self) -> str:
        return shard_id_for_index(self.index)

    @property
    def is_open(self) -> bool:
        return self.ending_counter is None

    @property
    def parent_ids(self) -> tuple[str, ...]:
        return tuple(shard_id_for_index(p) for p in (self.parent_index, self.adjacent_parent_index) if p is not None)

    @property
    def hash_key_range(self) -> HashKeyRange:
        return HashKeyRange(self.start, self.end)

    def to_shard(self) -> Shard:
        return Shard(
            shard_id=self.shard_id,
            hash_key_range=self.hash_key_range,
            starting_sequence_number=sequence_number(self.starting_counter),
            ending_sequence_number=None if self.ending_counter is None else sequence_number(self.ending_counter),
            parent_shard_id=None if self.parent_index is None else shard_id_for_index(self.parent_index),
            adjacent_parent_shard_id=None
            if self.adjacent_parent_index is None
            else shard_id_for_index(self.adjacent_parent_index),
        )

    def retained(self, horizon_ms: int) -> bool:
        return self.closed_ms is None or self.closed_ms >= horizon_ms


def _shard_row(row: Sequence[Any]) -> ShardRow:
    return ShardRow(
        index=int(row[0]),
        start=int(row[1]),
        end=int(row[2]),
        starting_counter=int(row[3]),
        ending_counter=None if row[4] is None else int(row[4]),
        parent_index=None if row[5] is None else int(row[5]),
        adjacent_parent_index=None if row[6] is None else int(row[6]),
        created_ms=int(row[7]),
        closed_ms=None if row[8] is None else int(row[8]),
    )


def new_shard(
    index: int,
    hash_range: HashKeyRange,
    starting_counter: int,
    created_ms: int,
    *,
    parent: int | None = None,
    adjacent: int | None = None,
) -> ShardRow:
    """The row of a shard opened now."""
    return ShardRow(index, hash_range.start, hash_range.end, starting_counter, None, parent, adjacent, created_ms, None)


class StreamTables:
    """The stream tables of one database file, read and written through ``db`` with ``clock`` (wall-clock
    seconds) as the time of arrivals, retention and iterators."""

    def __init__(self, db: SQLiteDatabase, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    @property
    def path(self) -> str:
        return str(self.db.path)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same snapshot of the file."""
        conn = self.db.connection()
        with translate_errors(self.db.path):
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``)."""
        return self.db.transaction()

    # -- schema ------------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the tables if the file has none; refuse a file of another schema version or application."""
        conn = self.db.connection()
        with translate_errors(self.db.path):
            if self._schema_ok(conn):
                return
        with self.db.transaction() as conn:
            if self._schema_ok(conn):
                return
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO shardwise_stream_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        logger.info("created local stream tables (schema version %d) in %s", SCHEMA_VERSION, self.path)

    def _schema_ok(self, conn: sqlite3.Connection) -> bool:
        """True if the tables exist at this version; False if they must be created; raises otherwise."""
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "shardwise_stream_meta" in tables:
            row = conn.execute("SELECT value FROM shardwise_stream_meta WHERE key = 'schema_version'").fetchone()
            if row is None or str(row[0]) != str(SCHEMA_VERSION):
                found = "no version" if row is None else f"version {row[0]}"
                raise ConfigurationError(
                    f"{self.path} holds local streams of an incompatible shardwise version (stream schema "
                    f"{found}, this version uses {SCHEMA_VERSION}); use the shardwise version that wrote it "
                    "or point --db at a new file"
                )
            return True
        user_tables = sorted(t for t in tables if not t.startswith("sqlite_"))
        if user_tables and not any(t.startswith("shardwise_") for t in user_tables):
            shown = ", ".join(user_tables[:5]) + (", ..." if len(user_tables) > 5 else "")
            raise ConfigurationError(
                f"{self.path} is not a shardwise database (it holds other tables: {shown}); "
                "point --db at a shardwise database or a new file"
            )
        return False

    # -- rows --------------------------------------------------------------------------------------------

    def stream_row(self, conn: sqlite3.Connection, name: str) -> StreamRow:
        """The stream's row; :class:`StreamNotFoundError` if there is no such stream."""
        row = conn.execute(
            "SELECT stream_id, name, retention_hours, created_ms, next_counter, next_shard_index, "
            "last_arrival_ms, last_trim_ms FROM shardwise_streams WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise _not_found_stream(name, self.path)
        return StreamRow(
            stream_id=int(row[0]),
            name=str(row[1]),
            retention_hours=int(row[2]),
            created_ms=int(row[3]),
            next_counter=int(row[4]),
            next_shard_index=int(row[5]),
            last_arrival_ms=int(row[6]),
            last_trim_ms=int(row[7]),
        )

    @staticmethod
    def shard_rows(conn: sqlite3.Connection, stream_id: int, where: str = "", *params: Any) -> list[ShardRow]:
        """The stream's shards in index order, optionally narrowed by an ``AND …`` clause and its parameters."""
        rows = conn.execute(
            f"SELECT {_SHARD_COLUMNS} FROM shardwise_stream_shards WHERE stream_id = ? {where} ORDER BY shard_index",
            (stream_id, *params),
        ).fetchall()
        return [_shard_row(r) for r in rows]

    def retained_shard(self, conn: sqlite3.Connection, st: StreamRow, shard_id: str, now_ms: int) -> ShardRow:
        """The shard ``shard_id`` if it is retained (open, or closed within the retention period), else
        :class:`ResourceNotFoundError`."""
        match = _SHARD_ID.fullmatch(shard_id)
        shards = self.shard_rows(conn, st.stream_id, "AND shard_index = ?", int(match.group(1))) if match else []
        if not shards or not shards[0].retained(now_ms - st.retention_ms):
            raise _not_found_shard(st.name, str(shard_id))
        return shards[0]

    @staticmethod
    def insert_shard(conn: sqlite3.Connection, stream_id: int, shard: ShardRow) -> None:
        conn.execute(
            "INSERT INTO shardwise_stream_shards (stream_id, shard_index, starting_hash_key, "
            "ending_hash_key, starting_counter, parent_index, adjacent_parent_index, created_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream_id,
                shard.index,
                str(shard.start),
                str(shard.end),
                shard.starting_counter,
                shard.parent_index,
                shard.adjacent_parent_index,
                shard.created_ms,
            ),
        )
