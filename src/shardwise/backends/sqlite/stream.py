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

Where the parts live: this module holds the store (streams, puts, retention) and :class:`LocalStream`;
:mod:`~shardwise.backends.sqlite.stream_tables` the tables (prefixed ``shardwise_stream``, so that the file
can be shared with the SQLite lease store) and their rows; :mod:`~shardwise.backends.sqlite.stream_reads` the
reads and shard iterators; :mod:`~shardwise.backends.sqlite.resharding` splits and merges. Arrival times are
kept non-decreasing per stream so that sequence order and arrival order agree.

Errors: unknown stream or shard → :class:`~shardwise.errors.ResourceNotFoundError`; stream exists / shard not
open → :class:`~shardwise.errors.InvalidStateError`; invalid requests (bad partition key, data too large, bad
hash key, bad sequence number, bad or foreign iterator) → :class:`~shardwise.errors.InvalidArgumentError`;
expired iterator → :class:`~shardwise.errors.ExpiredIteratorError`; a database of another application or an
incompatible schema, or bad store settings → :class:`~shardwise.errors.ConfigurationError`; a file that is not
a database, a damaged or read-only one → :class:`~shardwise.errors.UnusableStoreError`; other SQLite failures,
including ``database is locked`` after the busy timeout → :class:`~shardwise.errors.DependencyError`.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shardwise.backends.sqlite import resharding, stream_reads
from shardwise.backends.sqlite.connection import SQLiteDatabase
from shardwise.backends.sqlite.stream_reads import DEFAULT_ITERATOR_TTL_S, MAX_GET_RECORDS_LIMIT
from shardwise.backends.sqlite.stream_tables import (
    SCHEMA_VERSION,
    SEQ_BASE,
    StreamTables,
    new_shard,
    sequence_number,
    shard_id_for_index,
    utc,
)
from shardwise.errors import ConfigurationError, InvalidArgumentError, InvalidStateError, ResourceNotFoundError
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange, hash_key_for, parse_hash_key
from shardwise.retrieval.model import GetRecordsResult, Shard, ShardFilter, StartingPosition

# SEQ_BASE, SCHEMA_VERSION, shard_id_for_index (stream_tables), DEFAULT_ITERATOR_TTL_S and MAX_GET_RECORDS_LIMIT
# (stream_reads) are re-exported: the CLI, the demo and callers import them from here.
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

#: Kinesis' limits on one record.
MAX_PARTITION_KEY_LENGTH = 256
MAX_RECORD_DATA_BYTES = 1024 * 1024
#: Opportunistic trimming runs at most this often per stream (during puts).
TRIM_INTERVAL_MS = 60_000
MAX_SHARD_COUNT = 10_000
MAX_RETENTION_HOURS = 8_760

_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")

#: One ``put_records`` entry: ``(data, partition_key)`` or ``(data, partition_key, explicit_hash_key)``.
PutEntry = tuple[bytes, str] | tuple[bytes, str, str | None]


# -- helpers -------------------------------------------------------------------------------------------


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
        self._tables = StreamTables(self._db, clock)
        self.iterator_ttl_s = iterator_ttl_s
        try:
            self._tables.ensure_schema()
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
        with self._tables.transaction() as conn:
            if conn.execute("SELECT 1 FROM shardwise_streams WHERE name = ?", (name,)).fetchone():
                raise InvalidStateError(
                    f"stream {name!r} already exists in {self.path}; delete it first or choose another name"
                )
            now_ms = self._tables.now_ms()
            cur = conn.execute(
                "INSERT INTO shardwise_streams (name, retention_hours, created_ms, next_counter, "
                "next_shard_index, last_arrival_ms, last_trim_ms) VALUES (?, ?, ?, 1, ?, ?, ?)",
                (name, retention_hours, now_ms, shard_count, now_ms, now_ms),
            )
            stream_id = cur.lastrowid
            assert stream_id is not None
            for index, hash_range in enumerate(even_hash_key_ranges(shard_count)):
                self._tables.insert_shard(conn, stream_id, new_shard(index, hash_range, 1, now_ms))
        logger.info("created stream %s with %d shards in %s", name, shard_count, self.path)

    def delete_stream(self, name: str) -> None:
        """Delete a stream, its shards and its records. Iterators into it stop working."""
        with self._tables.transaction() as conn:
            st = self._tables.stream_row(conn, name)
            conn.execute("DELETE FROM shardwise_stream_records WHERE stream_id = ?", (st.stream_id,))
            conn.execute("DELETE FROM shardwise_stream_shards WHERE stream_id = ?", (st.stream_id,))
            conn.execute("DELETE FROM shardwise_streams WHERE stream_id = ?", (st.stream_id,))
        logger.info("deleted stream %s from %s", name, self.path)

    def list_streams(self) -> list[str]:
        """Names of the streams, sorted."""
        with self._tables.snapshot() as conn:
            return [str(r[0]) for r in conn.execute("SELECT name FROM shardwise_streams ORDER BY name")]

    def describe_stream(self, name: str) -> StreamDescription:
        """A summary of the stream: retained shards and the number of retained records in each."""
        now_ms = self._tables.now_ms()
        with self._tables.snapshot() as conn:
            st = self._tables.stream_row(conn, name)
            horizon = now_ms - st.retention_ms
            shards = [s for s in self._tables.shard_rows(conn, st.stream_id) if s.retained(horizon)]
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
            created=utc(st.created_ms),
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
        with self._tables.transaction() as conn:
            st = self._tables.stream_row(conn, stream)
            open_shards = sorted(
                (s.start, s.end, s.index)
                for s in self._tables.shard_rows(conn, st.stream_id, "AND ending_counter IS NULL")
            )
            starts = [s[0] for s in open_shards]
            now_ms = max(self._tables.now_ms(), st.last_arrival_ms)
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
                results.append(PutResult(shard_id_for_index(index), sequence_number(counter)))
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

    def split_shard(self, stream: str, shard_id: str, new_starting_hash_key: int) -> tuple[Shard, Shard]:
        """Split an open shard at ``new_starting_hash_key`` (Kinesis ``SplitShard``); return the children.

        The key must lie strictly inside the parent's range (``start < key <= end``). Child 1 covers
        ``[start, key - 1]``, child 2 ``[key, end]``; both name the parent as ``parent_shard_id``.
        """
        return resharding.split_shard(self._tables, stream, shard_id, new_starting_hash_key)

    def merge_shards(self, stream: str, shard_id: str, adjacent_shard_id: str) -> Shard:
        """Merge two open shards with adjacent ranges (either order) into one (Kinesis ``MergeShards``).

        The child covers the union of the ranges, with ``parent_shard_id = shard_id`` and
        ``adjacent_parent_shard_id = adjacent_shard_id``.
        """
        return resharding.merge_shards(self._tables, stream, shard_id, adjacent_shard_id)

    # -- retention -----------------------------------------------------------------------------------------

    def trim(self, stream: str | None = None) -> int:
        """Delete records older than the retention period (of ``stream``, or of every stream), and shards
        closed longer ago than that. Return the number of records deleted."""
        names = [stream] if stream is not None else self.list_streams()
        deleted = 0
        for name in names:
            with self._tables.transaction() as conn:
                try:
                    st = self._tables.stream_row(conn, name)
                except ResourceNotFoundError:
                    if stream is not None:
                        raise
                    continue  # deleted meanwhile
                now_ms = self._tables.now_ms()
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
        return stream_reads.list_shards(self._tables, stream, shard_filter)

    def _get_shard_iterator(self, stream: str, shard_id: str, position: StartingPosition) -> str:
        return stream_reads.get_shard_iterator(self._tables, stream, shard_id, position)

    def _get_records(self, stream: str, shard_iterator: str, limit: int) -> GetRecordsResult:
        return stream_reads.get_records(self._tables, stream, shard_iterator, limit, self.iterator_ttl_s)


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
