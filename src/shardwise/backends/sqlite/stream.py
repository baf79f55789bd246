"""A durable, multi-process stream stored in SQLite that behaves like Amazon Kinesis.

:class:`LocalStreamStore` owns a SQLite database file (WAL mode, so several processes and threads can use it
at once) and offers the producer/admin side of Kinesis: create/delete/describe streams, ``PutRecord(s)``,
``SplitShard``, ``MergeShards`` and retention trimming. :class:`LocalStream` is one stream of that store seen
through the :class:`~shardwise.retrieval.source.StreamSource` port (``ListShards``, ``GetShardIterator``,
``GetRecords``), so a consumer cannot tell it from Kinesis.

Behaviour that mirrors Kinesis
------------------------------
* Shards are ``shardId-000000000000``, ``shardId-000000000001``, … A new stream divides the hash-key space
  ``[0, 2**128 - 1]`` evenly (each shard ``2**128 // n`` keys, the last one absorbing the remainder).
* A record goes to the **open** shard whose hash-key range holds MD5(partition key) (or its explicit hash
  key).
* Sequence numbers are 56-digit decimal strings ``SEQ_BASE + counter``, where ``counter`` grows by one for
  every record of the stream (and once for every reshard, see below). Compare them as integers.
* Splitting or merging closes the parent(s): their ``ending_sequence_number`` is a fresh number reserved at
  that moment, so every record of a parent is ``<=`` its ending number and every child starts after it
  (``parent.ending < child.starting``). The children get the next free shard indexes.
* ``GetRecords`` on a closed shard returns ``next_iterator=None`` and the children (``child_shards``) on the
  response that reaches the shard's end, as Kinesis does.
* Records older than the stream's retention are invisible at once and deleted by :meth:`LocalStreamStore.trim`
  (also run at most once a minute per stream after a put). A closed shard whose close is older than the
  retention disappears (``ListShards`` no longer lists it; its id is not found any more).
* Shard iterators expire ``iterator_ttl_s`` (300 s, as Kinesis) after they were issued.

Storage (tables are prefixed ``shardwise_stream`` so that the file can be shared with the SQLite lease
store): ``shardwise_stream_meta`` (the schema version), ``shardwise_streams`` (one row per stream: retention,
next sequence counter, next shard index), ``shardwise_stream_shards`` (hash range as decimal text, starting
and ending counters, parents, open/close times) and ``shardwise_stream_records`` (``stream_id, shard_index,
counter, arrival_ms, partition_key, explicit_hash_key, data``, indexed by ``(stream_id, shard_index,
counter)`` for reads and ``(stream_id, arrival_ms)`` for trimming). Arrival times are kept non-decreasing per
stream so that sequence order and arrival order agree.

Errors: unknown stream or shard → :class:`~shardwise.errors.ResourceNotFoundError`; stream exists / shard not
open → :class:`~shardwise.errors.InvalidStateError`; invalid requests (bad partition key, data too large, bad
hash key, bad sequence number, bad or foreign iterator) → :class:`~shardwise.errors.InvalidArgumentError`;
expired iterator → :class:`~shardwise.errors.ExpiredIteratorError`; a file that is not (or not a compatible)
shardwise database, or bad store settings → :class:`~shardwise.errors.ConfigurationError`; SQLite failures,
including ``database is locked`` after the busy timeout → :class:`~shardwise.errors.DependencyError`.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shardwise.backends.sqlite.connection import SQLiteDatabase, translate_errors
from shardwise.checkpoint.sequence import parse_sequence_number
from shardwise.errors import (
    ConfigurationError,
    ExpiredIteratorError,
    InvalidArgumentError,
    InvalidStateError,
    ResourceNotFoundError,
)
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange, hash_key_for, parse_hash_key
from shardwise.retrieval.model import (
    ChildShard,
    GetRecordsResult,
    IteratorType,
    Record,
    Shard,
    ShardFilter,
    ShardFilterType,
    StartingPosition,
)

__all__ = [
    "DEFAULT_ITERATOR_TTL_S",
    "MAX_GET_RECORDS_LIMIT",
    "MAX_PARTITION_KEY_LENGTH",
    "MAX_RECORD_DATA_BYTES",
    "SCHEMA_VERSION",
    "SEQ_BASE",
    "LocalStream",
    "LocalStreamStore",
    "PutEntry",
    "PutResult",
    "StreamDescription",
    "check_stream_name",
    "even_hash_key_ranges",
    "shard_id_for_index",
]

logger = logging.getLogger(__name__)

#: Sequence numbers are ``SEQ_BASE + counter``: 56 decimal digits, like the ones Kinesis issues.
SEQ_BASE = 49 * 10**54
#: Version of the tables below; a file written with another version is refused.
SCHEMA_VERSION = 1
#: Kinesis' limits on one record.
MAX_PARTITION_KEY_LENGTH = 256
MAX_RECORD_DATA_BYTES = 1024 * 1024
#: Kinesis' ``Limit`` range for GetRecords.
MAX_GET_RECORDS_LIMIT = 10_000
#: Kinesis shard iterators are valid for 5 minutes.
DEFAULT_ITERATOR_TTL_S = 300.0
#: Opportunistic trimming runs at most this often per stream (during puts).
TRIM_INTERVAL_MS = 60_000
MAX_SHARD_COUNT = 10_000
MAX_RETENTION_HOURS = 8_760

_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_SHARD_ID = re.compile(r"shardId-(\d{12})")
_ITERATOR_VERSION = 1

#: One ``put_records`` entry: ``(data, partition_key)`` or ``(data, partition_key, explicit_hash_key)``.
PutEntry = tuple[bytes, str] | tuple[bytes, str, str | None]

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
_READ_RECORDS = (
    "SELECT counter, arrival_ms, partition_key, explicit_hash_key, data "
    "FROM shardwise_stream_records INDEXED BY shardwise_stream_records_by_position "
    "WHERE stream_id = ? AND shard_index = ? AND counter >= ? AND arrival_ms >= ? "
    "ORDER BY counter LIMIT ?"
)
_NEWEST_RECORD = (
    "SELECT counter, arrival_ms FROM shardwise_stream_records "
    "INDEXED BY shardwise_stream_records_by_position "
    "WHERE stream_id = ? AND shard_index = ? ORDER BY counter DESC LIMIT 1"
)


# -- helpers -------------------------------------------------------------------------------------------


def shard_id_for_index(index: int) -> str:
    """The Kinesis-style id of the shard with this index: ``shardId-`` and 12 digits."""
    return f"shardId-{index:012d}"


def even_hash_key_ranges(shard_count: int) -> list[HashKeyRange]:
    """The hash-key ranges Kinesis gives the shards of a new stream: ``2**128 // n`` keys each, in order,
    the last shard absorbing the remainder, together tiling ``[0, 2**128 - 1]``."""
    if shard_count < 1:
        raise ValueError(f"shard count must be >= 1, got {shard_count}")
    size = (MAX_HASH_KEY + 1) // shard_count
    ranges = [HashKeyRange(i * size, (i + 1) * size - 1) for i in range(shard_count - 1)]
    ranges.append(HashKeyRange((shard_count - 1) * size, MAX_HASH_KEY))
    return ranges


def check_stream_name(name: str) -> None:
    """Raise :class:`InvalidArgumentError` unless ``name`` is a valid Kinesis stream name."""
    if not _STREAM_NAME.fullmatch(name):
        raise InvalidArgumentError(f"invalid stream name {name!r}: use 1 to 128 letters, digits, '_', '.' or '-'")


def _sequence_number(counter: int) -> str:
    return str(SEQ_BASE + counter)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _ms(timestamp: datetime) -> int:
    return int(timestamp.timestamp() * 1000)


def _not_found_stream(name: str, path: object) -> ResourceNotFoundError:
    return ResourceNotFoundError(
        f"stream {name!r} does not exist in {path}; create it with LocalStreamStore.create_stream "
        f"or `shardwise stream create {name} --shards N --db {path}`"
    )


def _not_found_shard(stream: str, shard_id: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(
        f"shard {shard_id!r} does not exist in stream {stream!r} (or it was closed longer ago than the "
        "retention period); list the shards with list_shards or `shardwise stream describe`"
    )


@dataclass(frozen=True, slots=True)
class PutResult:
    """Where a put record went: the shard and the sequence number it was given."""

    shard_id: str
    sequence_number: str


@dataclass(frozen=True, slots=True)
class StreamDescription:
    """A summary of one stream: its retained shards (in shard-id order) and their record counts."""

    name: str
    retention_hours: int
    created: datetime
    shards: tuple[Shard, ...]
    open_shard_count: int
    #: Retained records per shard id (every listed shard has an entry, possibly 0).
    record_counts: Mapping[str, int]

    @property
    def record_count(self) -> int:
        return sum(self.record_counts.values())


@dataclass(frozen=True, slots=True)
class _StreamRow:
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
class _ShardRow:
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
            starting_sequence_number=_sequence_number(self.starting_counter),
            ending_sequence_number=None if self.ending_counter is None else _sequence_number(self.ending_counter),
            parent_shard_id=None if self.parent_index is None else shard_id_for_index(self.parent_index),
            adjacent_parent_shard_id=None
            if self.adjacent_parent_index is None
            else shard_id_for_index(self.adjacent_parent_index),
        )

    def retained(self, horizon_ms: int) -> bool:
        return self.closed_ms is None or self.closed_ms >= horizon_ms


def _shard_row(row: Sequence[Any]) -> _ShardRow:
    return _ShardRow(
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


def _new_shard(
    index: int,
    hash_range: HashKeyRange,
    starting_counter: int,
    created_ms: int,
    *,
    parent: int | None = None,
    adjacent: int | None = None,
) -> _ShardRow:
    return _ShardRow(
        index, hash_range.start, hash_range.end, starting_counter, None, parent, adjacent, created_ms, None
    )


def _validate_entry(position: int, entry: Sequence[object]) -> tuple[bytes, str, str | None, int]:
    """Validate one put entry like Kinesis; return (data, partition key, explicit hash key, hash key)."""
    where = f"record #{position}"
    if len(entry) not in (2, 3):
        raise InvalidArgumentError(
            f"{where}: expected (data, partition_key[, explicit_hash_key]), got {len(entry)} items"
        )
    data, partition_key = entry[0], entry[1]
    explicit = entry[2] if len(entry) == 3 else None
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise InvalidArgumentError(
            f"{where}: data must be bytes, got {type(data).__name__}; encode text first (e.g. str.encode())"
        )
    if len(data) > MAX_RECORD_DATA_BYTES:
        raise InvalidArgumentError(
            f"{where}: data is {len(data)} bytes; a Kinesis record holds at most 1 MiB ({MAX_RECORD_DATA_BYTES} bytes)"
        )
    if not isinstance(partition_key, str):
        raise InvalidArgumentError(f"{where}: partition key must be a string, got {type(partition_key).__name__}")
    if not 1 <= len(partition_key) <= MAX_PARTITION_KEY_LENGTH:
        raise InvalidArgumentError(
            f"{where}: partition key must be 1 to {MAX_PARTITION_KEY_LENGTH} characters, got {len(partition_key)}"
        )
    if explicit is None:
        return data, partition_key, None, hash_key_for(partition_key)
    if not isinstance(explicit, str):
        raise InvalidArgumentError(
            f"{where}: explicit hash key must be a decimal string, got {type(explicit).__name__}"
        )
    try:
        hash_key = parse_hash_key(explicit)
    except ValueError as exc:
        raise InvalidArgumentError(f"{where}: explicit hash key {exc}") from exc
    return data, partition_key, explicit, hash_key


# -- iterators ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Iterator:
    stream: str
    stream_id: int
    shard_index: int
    position: int  # the counter of the next record to return (records with counter >= position)
    issued_ms: int

    def encode(self) -> str:
        body = json.dumps(
            {
                "v": _ITERATOR_VERSION,
                "s": self.stream,
                "i": self.stream_id,
                "k": self.shard_index,
                "p": self.position,
                "t": self.issued_ms,
            },
            separators=(",", ":"),
        )
        return base64.urlsafe_b64encode(body.encode("utf-8")).decode("ascii")

    @classmethod
    def decode(cls, text: object) -> _Iterator:
        invalid = InvalidArgumentError(
            f"invalid shard iterator {str(text)[:80]!r}: not an iterator issued by a local stream; "
            "get a new one with get_shard_iterator"
        )
        if not isinstance(text, str) or not text:
            raise invalid
        try:
            body = json.loads(base64.urlsafe_b64decode(text.encode("ascii")).decode("utf-8"))
        except (ValueError, binascii.Error, UnicodeError) as exc:
            raise invalid from exc
        if not isinstance(body, dict) or body.get("v") != _ITERATOR_VERSION:
            raise invalid
        stream = body.get("s")
        numbers: list[int] = []
        for key in ("i", "k", "p", "t"):
            value = body.get(key)
            if type(value) is not int or value < 0:
                raise invalid
            numbers.append(value)
        if not isinstance(stream, str):
            raise invalid
        return cls(stream, numbers[0], numbers[1], numbers[2], numbers[3])


# -- the store -----------------------------------------------------------------------------------------


class LocalStreamStore:
    """A SQLite database file holding Kinesis-like streams; safe to share between processes and threads.

    ``clock`` returns wall-clock seconds (``time.time``); inject one to control arrival times, retention and
    iterator expiry in tests. ``database`` lets several embedded backends share one :class:`SQLiteDatabase`
    (its per-thread connections; ``path`` and ``busy_timeout_s`` are then the database's own); otherwise the
    store opens its own.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        iterator_ttl_s: float = DEFAULT_ITERATOR_TTL_S,
        database: SQLiteDatabase | None = None,
    ) -> None:
        if iterator_ttl_s <= 0:
            raise ConfigurationError(f"iterator_ttl_s must be > 0 seconds, got {iterator_ttl_s}")
        self._owns_db = database is None
        self._db = database if database is not None else SQLiteDatabase(path, busy_timeout_s=busy_timeout_s)
        self._busy_timeout_s = self._db.busy_timeout_s
        self._clock = clock
        self.iterator_ttl_s = iterator_ttl_s
        try:
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (for multiprocessing), as long as the clock is: the copy opens its own connections.
        return (_rebuild_store, (str(self._db.path), self._busy_timeout_s, self._clock, self.iterator_ttl_s))

    @property
    def path(self) -> str:
        return str(self._db.path)

    def close(self) -> None:
        """Close every connection the store opened (they are re-opened on the next call). A ``database``
        passed in is left open: its owner closes it."""
        if self._owns_db:
            self._db.close()

    def __enter__(self) -> LocalStreamStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalStreamStore({self.path!r})"

    # -- plumbing ----------------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same snapshot of the file."""
        conn = self._db.connection()
        with translate_errors(self._db.path):
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _ensure_schema(self) -> None:
        conn = self._db.connection()
        with translate_errors(self._db.path):
            if self._schema_ok(conn):
                return
        with self._db.transaction() as conn:
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

    def _stream_row(self, conn: sqlite3.Connection, name: str) -> _StreamRow:
        row = conn.execute(
            "SELECT stream_id, name, retention_hours, created_ms, next_counter, next_shard_index, "
            "last_arrival_ms, last_trim_ms FROM shardwise_streams WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise _not_found_stream(name, self.path)
        return _StreamRow(
            stream_id=int(row[0]),
            name=str(row[1]),
            retention_hours=int(row[2]),
            created_ms=int(row[3]),
            next_counter=int(row[4]),
            next_shard_index=int(row[5]),
            last_arrival_ms=int(row[6]),
            last_trim_ms=int(row[7]),
        )

    def _shard_rows(self, conn: sqlite3.Connection, stream_id: int, where: str = "", *params: Any) -> list[_ShardRow]:
        rows = conn.execute(
            f"SELECT {_SHARD_COLUMNS} FROM shardwise_stream_shards WHERE stream_id = ? {where} ORDER BY shard_index",
            (stream_id, *params),
        ).fetchall()
        return [_shard_row(r) for r in rows]

    def _retained_shard(self, conn: sqlite3.Connection, st: _StreamRow, shard_id: str, now_ms: int) -> _ShardRow:
        match = _SHARD_ID.fullmatch(shard_id)
        shards = self._shard_rows(conn, st.stream_id, "AND shard_index = ?", int(match.group(1))) if match else []
        if not shards or not shards[0].retained(now_ms - st.retention_ms):
            raise _not_found_shard(st.name, str(shard_id))
        return shards[0]

    @staticmethod
    def _insert_shard(conn: sqlite3.Connection, stream_id: int, shard: _ShardRow) -> None:
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

    # -- admin ---------------------------------------------------------------------------------------------

    def create_stream(self, name: str, shard_count: int, *, retention_hours: int = 24) -> None:
        """Create a stream of ``shard_count`` open shards whose hash ranges divide the key space evenly.

        Raises :class:`InvalidStateError` if a stream of that name exists (Kinesis' ResourceInUse) and
        :class:`InvalidArgumentError` for a bad name (1-128 of ``a-zA-Z0-9_.-``), shard count (1-10000) or
        retention (1-8760 hours; Kinesis' minimum is 24, shorter is allowed locally for experiments).
        """
        check_stream_name(name)
        if type(shard_count) is not int or not 1 <= shard_count <= MAX_SHARD_COUNT:
            raise InvalidArgumentError(
                f"invalid shard count {shard_count!r} for stream {name!r}: use 1 to {MAX_SHARD_COUNT} shards"
            )
        if type(retention_hours) is not int or not 1 <= retention_hours <= MAX_RETENTION_HOURS:
            raise InvalidArgumentError(
                f"invalid retention {retention_hours!r} hours for stream {name!r}: use 1 to "
                f"{MAX_RETENTION_HOURS} hours (Kinesis: 24 to 8760)"
            )
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM shardwise_streams WHERE name = ?", (name,)).fetchone():
                raise InvalidStateError(
                    f"stream {name!r} already exists in {self.path}; delete it first or choose another name"
                )
            now_ms = self._now_ms()
            cur = conn.execute(
                "INSERT INTO shardwise_streams (name, retention_hours, created_ms, next_counter, "
                "next_shard_index, last_arrival_ms, last_trim_ms) VALUES (?, ?, ?, 1, ?, ?, ?)",
                (name, retention_hours, now_ms, shard_count, now_ms, now_ms),
            )
            stream_id = cur.lastrowid
            assert stream_id is not None
            for index, hash_range in enumerate(even_hash_key_ranges(shard_count)):
                self._insert_shard(conn, stream_id, _new_shard(index, hash_range, 1, now_ms))
        logger.info("created stream %s with %d shards in %s", name, shard_count, self.path)

    def delete_stream(self, name: str) -> None:
        """Delete a stream, its shards and its records. Iterators into it stop working."""
        with self._db.transaction() as conn:
            st = self._stream_row(conn, name)
            conn.execute("DELETE FROM shardwise_stream_records WHERE stream_id = ?", (st.stream_id,))
            conn.execute("DELETE FROM shardwise_stream_shards WHERE stream_id = ?", (st.stream_id,))
            conn.execute("DELETE FROM shardwise_streams WHERE stream_id = ?", (st.stream_id,))
        logger.info("deleted stream %s from %s", name, self.path)

    def list_streams(self) -> list[str]:
        """Names of the streams, sorted."""
        with self._snapshot() as conn:
            return [str(r[0]) for r in conn.execute("SELECT name FROM shardwise_streams ORDER BY name")]

    def describe_stream(self, name: str) -> StreamDescription:
        """A summary of the stream: retained shards and the number of retained records in each."""
        now_ms = self._now_ms()
        with self._snapshot() as conn:
            st = self._stream_row(conn, name)
            horizon = now_ms - st.retention_ms
            shards = [s for s in self._shard_rows(conn, st.stream_id) if s.retained(horizon)]
            counts = dict(
                conn.execute(
                    "SELECT shard_index, count(*) FROM shardwise_stream_records "
                    "WHERE stream_id = ? AND arrival_ms >= ? GROUP BY shard_index",
                    (st.stream_id, horizon),
                ).fetchall()
            )
        return StreamDescription(
            name=st.name,
            retention_hours=st.retention_hours,
            created=_utc(st.created_ms),
            shards=tuple(s.to_shard() for s in shards),
            open_shard_count=sum(1 for s in shards if s.is_open),
            record_counts={s.shard_id: int(counts.get(s.index, 0)) for s in shards},
        )

    def stream(self, name: str) -> LocalStream:
        """The :class:`StreamSource` view of stream ``name`` (checked on each call, not now)."""
        return LocalStream(self, name)

    # -- producer ------------------------------------------------------------------------------------------

    def put_record(
        self, stream: str, data: bytes, partition_key: str, *, explicit_hash_key: str | None = None
    ) -> PutResult:
        """Append one record to the open shard that owns its hash key (Kinesis ``PutRecord``)."""
        return self.put_records(stream, [(data, partition_key, explicit_hash_key)])[0]

    def put_records(self, stream: str, entries: Iterable[PutEntry]) -> list[PutResult]:
        """Append records in one transaction, in order (Kinesis ``PutRecords``, all-or-nothing).

        Every entry is validated before anything is written. Unlike Kinesis there is no 500-entry limit and
        an empty batch returns ``[]``.
        """
        prepared = [_validate_entry(i, entry) for i, entry in enumerate(entries)]
        if not prepared:
            return []
        with self._db.transaction() as conn:
            st = self._stream_row(conn, stream)
            open_shards = sorted(
                (s.start, s.end, s.index) for s in self._shard_rows(conn, st.stream_id, "AND ending_counter IS NULL")
            )
            starts = [s[0] for s in open_shards]
            now_ms = max(self._now_ms(), st.last_arrival_ms)
            counter = st.next_counter
            rows: list[tuple[int, int, int, int, str, str | None, bytes]] = []
            results: list[PutResult] = []
            for data, partition_key, explicit, hash_key in prepared:
                pos = bisect.bisect_right(starts, hash_key) - 1
                if pos < 0 or hash_key > open_shards[pos][1]:
                    raise InvalidStateError(
                        f"stream {stream!r} in {self.path} has no open shard for hash key {hash_key}; "
                        "its shard table is damaged"
                    )
                index = open_shards[pos][2]
                rows.append((st.stream_id, index, counter, now_ms, partition_key, explicit, data))
                results.append(PutResult(shard_id_for_index(index), _sequence_number(counter)))
                counter += 1
            conn.executemany(
                "INSERT INTO shardwise_stream_records (stream_id, shard_index, counter, arrival_ms, "
                "partition_key, explicit_hash_key, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute(
                "UPDATE shardwise_streams SET next_counter = ?, last_arrival_ms = ? WHERE stream_id = ?",
                (counter, now_ms, st.stream_id),
            )
        if now_ms - st.last_trim_ms >= TRIM_INTERVAL_MS:
            self._trim_opportunistically(stream)
        return results

    def _trim_opportunistically(self, stream: str) -> None:
        try:
            self.trim(stream)
        except Exception:  # a best-effort chore must never fail a put that already committed
            logger.debug("opportunistic trim of stream %s failed; will retry later", stream, exc_info=True)

    # -- resharding ----------------------------------------------------------------------------------------

    def _close_for_reshard(
        self, conn: sqlite3.Connection, st: _StreamRow, parents: Sequence[_ShardRow], now_ms: int
    ) -> tuple[int, int]:
        """Close ``parents`` with a freshly reserved ending counter; return (children's starting counter,
        first free shard index)."""
        ending = st.next_counter
        for parent in parents:
            conn.execute(
                "UPDATE shardwise_stream_shards SET ending_counter = ?, closed_ms = ? "
                "WHERE stream_id = ? AND shard_index = ?",
                (ending, now_ms, st.stream_id, parent.index),
            )
        return ending + 1, st.next_shard_index

    def _open_shard_for_reshard(
        self, conn: sqlite3.Connection, st: _StreamRow, shard_id: str, now_ms: int, action: str
    ) -> _ShardRow:
        shard = self._retained_shard(conn, st, shard_id, now_ms)
        if not shard.is_open:
            raise InvalidStateError(
                f"cannot {action} shard {shard_id} of stream {st.name!r}: it is closed (it was already split "
                "or merged); use one of the open shards (list_shards with AT_LATEST)"
            )
        return shard

    def split_shard(self, stream: str, shard_id: str, new_starting_hash_key: int) -> tuple[Shard, Shard]:
        """Split an open shard at ``new_starting_hash_key`` (Kinesis ``SplitShard``); return the children.

        The key must lie strictly inside the parent's range (``start < key <= end``). Child 1 covers
        ``[start, key - 1]``, child 2 ``[key, end]``; both name the parent as ``parent_shard_id``.
        """
        if type(new_starting_hash_key) is not int:
            raise InvalidArgumentError(
                f"new starting hash key must be an integer, got {type(new_starting_hash_key).__name__}"
            )
        with self._db.transaction() as conn:
            st = self._stream_row(conn, stream)
            now_ms = max(self._now_ms(), st.last_arrival_ms)
            parent = self._open_shard_for_reshard(conn, st, shard_id, now_ms, "split")
            if parent.start == parent.end:
                raise InvalidArgumentError(
                    f"cannot split {shard_id} of stream {stream!r}: its range holds a single hash key"
                )
            if not parent.start < new_starting_hash_key <= parent.end:
                midpoint = parent.start + (parent.end - parent.start + 1) // 2
                raise InvalidArgumentError(
                    f"cannot split {shard_id} of stream {stream!r} at hash key {new_starting_hash_key}: the "
                    f"new starting hash key must be greater than {parent.start} and at most {parent.end} "
                    f"(the shard's range), e.g. the midpoint {midpoint}"
                )
            start_counter, index = self._close_for_reshard(conn, st, [parent], now_ms)
            ranges = (
                HashKeyRange(parent.start, new_starting_hash_key - 1),
                HashKeyRange(new_starting_hash_key, parent.end),
            )
            for i, hash_range in enumerate(ranges):
                child = _new_shard(index + i, hash_range, start_counter, now_ms, parent=parent.index)
                self._insert_shard(conn, st.stream_id, child)
            conn.execute(
                "UPDATE shardwise_streams SET next_counter = ?, next_shard_index = ?, last_arrival_ms = ? "
                "WHERE stream_id = ?",
                (start_counter, index + 2, now_ms, st.stream_id),
            )
        logger.info("split shard %s of stream %s at %d", shard_id, stream, new_starting_hash_key)
        first_child = _new_shard(index, ranges[0], start_counter, now_ms, parent=parent.index)
        return first_child.to_shard(), child.to_shard()

    def merge_shards(self, stream: str, shard_id: str, adjacent_shard_id: str) -> Shard:
        """Merge two open shards with adjacent ranges (either order) into one (Kinesis ``MergeShards``).

        The child covers the union of the ranges, with ``parent_shard_id = shard_id`` and
        ``adjacent_parent_shard_id = adjacent_shard_id``.
        """
        if shard_id == adjacent_shard_id:
            raise InvalidArgumentError(f"cannot merge shard {shard_id} with itself; name two adjacent shards")
        with self._db.transaction() as conn:
            st = self._stream_row(conn, stream)
            now_ms = max(self._now_ms(), st.last_arrival_ms)
            first = self._open_shard_for_reshard(conn, st, shard_id, now_ms, "merge")
            second = self._open_shard_for_reshard(conn, st, adjacent_shard_id, now_ms, "merge")
            if not first.hash_key_range.is_adjacent_to(second.hash_key_range):
                raise InvalidArgumentError(
                    f"cannot merge {shard_id} [{first.start}, {first.end}] and {adjacent_shard_id} "
                    f"[{second.start}, {second.end}] of stream {stream!r}: their hash key ranges are not "
                    "adjacent; merge two open shards whose ranges touch"
                )
            start_counter, index = self._close_for_reshard(conn, st, [first, second], now_ms)
            union = HashKeyRange(min(first.start, second.start), max(first.end, second.end))
            child = _new_shard(index, union, start_counter, now_ms, parent=first.index, adjacent=second.index)
            self._insert_shard(conn, st.stream_id, child)
            conn.execute(
                "UPDATE shardwise_streams SET next_counter = ?, next_shard_index = ?, last_arrival_ms = ? "
                "WHERE stream_id = ?",
                (start_counter, index + 1, now_ms, st.stream_id),
            )
        logger.info("merged shards %s and %s of stream %s", shard_id, adjacent_shard_id, stream)
        return child.to_shard()

    # -- retention -----------------------------------------------------------------------------------------

    def trim(self, stream: str | None = None) -> int:
        """Delete records older than the retention period (of ``stream``, or of every stream), and shards
        closed longer ago than that. Return the number of records deleted."""
        names = [stream] if stream is not None else self.list_streams()
        deleted = 0
        for name in names:
            with self._db.transaction() as conn:
                try:
                    st = self._stream_row(conn, name)
                except ResourceNotFoundError:
                    if stream is not None:
                        raise
                    continue  # deleted meanwhile
                now_ms = self._now_ms()
                horizon = now_ms - st.retention_ms
                cur = conn.execute(
                    "DELETE FROM shardwise_stream_records WHERE stream_id = ? AND arrival_ms < ?",
                    (st.stream_id, horizon),
                )
                count = max(cur.rowcount, 0)
                conn.execute(
                    "DELETE FROM shardwise_stream_shards WHERE stream_id = ? AND closed_ms < ?",
                    (st.stream_id, horizon),
                )
                conn.execute(
                    "UPDATE shardwise_streams SET last_trim_ms = ? WHERE stream_id = ?",
                    (now_ms, st.stream_id),
                )
            if count:
                logger.debug("trimmed %d records older than %d h from stream %s", count, st.retention_hours, name)
            deleted += count
        return deleted

    # -- reads (used by LocalStream) -----------------------------------------------------------------------

    def _list_shards(self, stream: str, shard_filter: ShardFilter | None) -> list[Shard]:
        now_ms = self._now_ms()
        with self._snapshot() as conn:
            st = self._stream_row(conn, stream)
            rows = self._shard_rows(conn, st.stream_id)
        horizon = now_ms - st.retention_ms
        retained = [s for s in rows if s.retained(horizon)]
        kind = None if shard_filter is None else shard_filter.type
        if kind is None or kind is ShardFilterType.FROM_TRIM_HORIZON:
            chosen = retained
        elif kind is ShardFilterType.AT_LATEST:
            chosen = [s for s in retained if s.is_open]
        elif kind is ShardFilterType.AT_TRIM_HORIZON:
            present = {s.index for s in retained}
            chosen = [s for s in retained if not any(p in present for p in (s.parent_index, s.adjacent_parent_index))]
        elif kind is ShardFilterType.AFTER_SHARD_ID:
            assert shard_filter is not None
            assert shard_filter.shard_id is not None
            after = shard_filter.shard_id
            chosen = [s for s in retained if s.shard_id > after]
        else:
            assert shard_filter is not None
            assert shard_filter.timestamp is not None
            ts = max(_ms(shard_filter.timestamp), horizon, st.created_ms)
            if kind is ShardFilterType.AT_TIMESTAMP:
                chosen = [s for s in retained if s.created_ms <= ts and (s.closed_ms is None or s.closed_ms >= ts)]
            else:  # FROM_TIMESTAMP
                chosen = [s for s in retained if s.closed_ms is None or s.closed_ms >= ts]
        return [s.to_shard() for s in chosen]

    def _get_shard_iterator(self, stream: str, shard_id: str, position: StartingPosition) -> str:
        now_ms = self._now_ms()
        with self._snapshot() as conn:
            st = self._stream_row(conn, stream)
            shard = self._retained_shard(conn, st, shard_id, now_ms)
            kind = position.type
            if kind is IteratorType.TRIM_HORIZON:
                pos = shard.starting_counter
            elif kind is IteratorType.LATEST:
                pos = st.next_counter
            elif kind is IteratorType.AT_TIMESTAMP:
                assert position.timestamp is not None
                ts = max(_ms(position.timestamp), now_ms - st.retention_ms)
                pos = self._first_counter_at(conn, st, shard.index, ts)
            else:
                assert position.sequence_number is not None
                counter = self._counter_in_shard(st, shard, position.sequence_number)
                pos = counter if kind is IteratorType.AT_SEQUENCE_NUMBER else counter + 1
        return _Iterator(stream, st.stream_id, shard.index, pos, now_ms).encode()

    @staticmethod
    def _first_counter_at(conn: sqlite3.Connection, st: _StreamRow, shard_index: int, ts_ms: int) -> int:
        """The counter of the shard's first record that arrived at or after ``ts_ms`` (else the next counter).

        Arrival times never decrease along a stream's counters, so that record is the one with the smallest
        counter among the shard's records of the first arrival time at or after ``ts_ms``; both look-ups walk
        the arrival index from ``ts_ms`` and stop early.
        """
        row = conn.execute(
            "SELECT arrival_ms FROM shardwise_stream_records INDEXED BY shardwise_stream_records_by_arrival "
            "WHERE stream_id = ? AND arrival_ms >= ? AND shard_index = ? ORDER BY arrival_ms LIMIT 1",
            (st.stream_id, ts_ms, shard_index),
        ).fetchone()
        if row is None:
            return st.next_counter
        found = conn.execute(
            "SELECT min(counter) FROM shardwise_stream_records "
            "INDEXED BY shardwise_stream_records_by_arrival "
            "WHERE stream_id = ? AND arrival_ms = ? AND shard_index = ?",
            (st.stream_id, int(row[0]), shard_index),
        ).fetchone()
        return int(found[0])

    @staticmethod
    def _counter_in_shard(st: _StreamRow, shard: _ShardRow, sequence_number: str) -> int:
        try:
            value = parse_sequence_number(sequence_number)
        except ValueError as exc:
            raise InvalidArgumentError(f"invalid starting sequence number: {exc}") from exc
        counter = value - SEQ_BASE
        if shard.ending_counter is not None:
            last = shard.ending_counter
        else:  # open: up to the last number issued so far (the starting number is always accepted)
            last = max(st.next_counter - 1, shard.starting_counter)
        if not shard.starting_counter <= counter <= last:
            raise InvalidArgumentError(
                f"invalid starting sequence number {sequence_number} for shard {shard.shard_id} of stream "
                f"{st.name!r}: it does not belong to that shard, whose sequence numbers (so far) run from "
                f"{_sequence_number(shard.starting_counter)} to {_sequence_number(last)}"
            )
        return counter

    def _get_records(self, stream: str, shard_iterator: str, limit: int) -> GetRecordsResult:
        if type(limit) is not int or not 1 <= limit <= MAX_GET_RECORDS_LIMIT:
            raise InvalidArgumentError(f"limit must be 1 to {MAX_GET_RECORDS_LIMIT}, got {limit!r}")
        it = _Iterator.decode(shard_iterator)
        if it.stream != stream:
            raise InvalidArgumentError(
                f"shard iterator belongs to stream {it.stream!r}, not {stream!r}; use that stream's get_records"
            )
        now_ms = self._now_ms()
        ttl_ms = int(self.iterator_ttl_s * 1000)
        if now_ms - it.issued_ms > ttl_ms:
            raise ExpiredIteratorError(
                f"shard iterator for {shard_id_for_index(it.shard_index)} of stream {stream!r} expired "
                f"{(now_ms - it.issued_ms - ttl_ms) / 1000:.1f} s ago "
                f"(iterators live {self.iterator_ttl_s:g} s); "
                "get a new one with AFTER_SEQUENCE_NUMBER of the last record read"
            )
        with self._snapshot() as conn:
            st = self._stream_row(conn, stream)
            if st.stream_id != it.stream_id:
                raise ResourceNotFoundError(
                    f"stream {stream!r} was deleted (and re-created) since this shard iterator was issued; "
                    "get a new iterator"
                )
            shard = self._retained_shard(conn, st, shard_id_for_index(it.shard_index), now_ms)
            horizon = now_ms - st.retention_ms
            rows = conn.execute(_READ_RECORDS, (st.stream_id, shard.index, it.position, horizon, limit)).fetchall()
            exhausted = len(rows) < limit
            newest: tuple[int, int] | None = None
            if not exhausted:
                found = conn.execute(_NEWEST_RECORD, (st.stream_id, shard.index)).fetchone()
                newest = (int(found[0]), int(found[1]))
                exhausted = newest[0] <= rows[-1][0]
            children = (
                self._shard_rows(
                    conn,
                    st.stream_id,
                    "AND (parent_index = ? OR adjacent_parent_index = ?)",
                    shard.index,
                    shard.index,
                )
                if exhausted and not shard.is_open
                else []
            )

        records: list[Record] = []
        append = records.append
        stamps: dict[int, datetime] = {}
        base = SEQ_BASE
        for counter, arrival_ms, partition_key, explicit, data in rows:
            stamp = stamps.get(arrival_ms)
            if stamp is None:
                stamp = stamps[arrival_ms] = _utc(arrival_ms)
            append(Record(data, partition_key, str(base + counter), stamp, 0, explicit, False))

        # How far the last returned record is behind the newest one of the shard; 0 once caught up.
        behind = max(0, newest[1] - int(rows[-1][1])) if newest is not None and not exhausted else 0
        if exhausted and not shard.is_open:
            child_shards = [ChildShard(c.shard_id, c.parent_ids, c.hash_key_range) for c in children]
            return GetRecordsResult(records, None, behind, child_shards)
        position = int(rows[-1][0]) + 1 if rows else it.position
        next_iterator = _Iterator(stream, st.stream_id, shard.index, position, now_ms).encode()
        return GetRecordsResult(records, next_iterator, behind)


def _rebuild_store(path: str, busy_timeout_s: float, clock: Callable[[], float], ttl: float) -> LocalStreamStore:
    return LocalStreamStore(path, busy_timeout_s=busy_timeout_s, clock=clock, iterator_ttl_s=ttl)


class LocalStream:
    """One stream of a :class:`LocalStreamStore`, as a :class:`~shardwise.retrieval.source.StreamSource`.

    ``list_shards`` filters (Kinesis ``ShardFilter``), as read here. A shard is *retained* while it is open or
    was closed no longer ago than the retention period; only retained shards are ever listed.

    * no filter / ``FROM_TRIM_HORIZON``: every retained shard, open or closed.
    * ``AT_LATEST``: the open shards only.
    * ``AT_TRIM_HORIZON``: the shards open at the trim horizon — the retained shards none of whose parents is
      retained (the roots of the retained lineage; for a young stream, its first shards).
    * ``AFTER_SHARD_ID``: retained shards whose id sorts after the given id.
    * ``AT_TIMESTAMP``: shards open at that time — created at or before it and still open or closed at or
      after it. A time before the trim horizon (or the stream's creation) is moved up to it, as Kinesis
      corrects ``FROM_TIMESTAMP``.
    * ``FROM_TIMESTAMP``: every open shard plus the closed ones closed at or after that time (before the trim
      horizon this is every retained shard, i.e. ``FROM_TRIM_HORIZON``).

    Iterator positions: ``TRIM_HORIZON`` is the oldest retained record of the shard, ``LATEST`` just after the
    newest record of the stream, ``AT_TIMESTAMP`` the first record that arrived at or after the time (or
    ``LATEST`` if none has), ``AT_/AFTER_SEQUENCE_NUMBER`` at / just after a sequence number that must belong
    to the shard (between its starting number and its ending number, or the last issued one while it is
    open), else :class:`InvalidArgumentError`.

    ``get_records`` returns ``millis_behind_latest`` as the time between the arrival of the last record it
    returns and that of the newest record of the shard (0 when the response reaches the newest record).
    """

    def __init__(self, store: LocalStreamStore, name: str) -> None:
        self._store = store
        self._name = name

    @property
    def stream_name(self) -> str:
        return self._name

    @property
    def store(self) -> LocalStreamStore:
        return self._store

    def __repr__(self) -> str:
        return f"LocalStream({self._name!r}, {self._store.path!r})"

    def list_shards(self, shard_filter: ShardFilter | None = None) -> list[Shard]:
        return self._store._list_shards(self._name, shard_filter)

    def get_shard_iterator(self, shard_id: str, position: StartingPosition) -> str:
        return self._store._get_shard_iterator(self._name, shard_id, position)

    def get_records(self, shard_iterator: str, *, limit: int = MAX_GET_RECORDS_LIMIT) -> GetRecordsResult:
        return self._store._get_records(self._name, shard_iterator, limit)

    # Producer conveniences, so tests and demos can hold just the stream.
    def put_record(self, data: bytes, partition_key: str, *, explicit_hash_key: str | None = None) -> PutResult:
        return self._store.put_record(self._name, data, partition_key, explicit_hash_key=explicit_hash_key)

    def put_records(self, entries: Iterable[PutEntry]) -> list[PutResult]:
        return self._store.put_records(self._name, entries)
