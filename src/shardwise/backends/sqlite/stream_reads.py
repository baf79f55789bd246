"""One local stream's reads, as Kinesis answers them: ``ListShards`` with its filters, shard iterators and
``GetRecords`` (the behaviour :class:`~shardwise.backends.sqlite.stream.LocalStream` documents).

A shard iterator is self-contained: base64 of a small JSON document naming the stream (and its row id, so an
iterator into a deleted and re-created stream is refused), the shard, the counter of the next record to
return and when it was issued. Iterators expire ``iterator_ttl_s`` (300 s, as Kinesis) after they were issued.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from shardwise.backends.sqlite.stream_tables import (
    SEQ_BASE,
    ShardRow,
    StreamRow,
    StreamTables,
    epoch_ms,
    sequence_number,
    shard_id_for_index,
    utc,
)
from shardwise.checkpoint.sequence import parse_sequence_number
from shardwise.errors import ExpiredIteratorError, InvalidArgumentError, ResourceNotFoundError
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
    "ShardIterator",
    "get_records",
    "get_shard_iterator",
    "list_shards",
]

#: Kinesis' ``Limit`` range for GetRecords.
MAX_GET_RECORDS_LIMIT = 10_000
#: Kinesis shard iterators are valid for 5 minutes.
DEFAULT_ITERATOR_TTL_S = 300.0

_ITERATOR_VERSION = 1

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


@dataclass(frozen=True, slots=True)
class ShardIterator:
    """A position in one shard, and when it was handed out."""

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
    def decode(cls, text: object) -> ShardIterator:
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


def list_shards(tables: StreamTables, stream: str, shard_filter: ShardFilter | None) -> list[Shard]:
    """The retained shards of ``stream`` that ``shard_filter`` selects, in shard-id order."""
    now_ms = tables.now_ms()
    with tables.snapshot() as conn:
        st = tables.stream_row(conn, stream)
        rows = tables.shard_rows(conn, st.stream_id)
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
        ts = max(epoch_ms(shard_filter.timestamp), horizon, st.created_ms)
        if kind is ShardFilterType.AT_TIMESTAMP:
            chosen = [s for s in retained if s.created_ms <= ts and (s.closed_ms is None or s.closed_ms >= ts)]
        else:  # FROM_TIMESTAMP
            chosen = [s for s in retained if s.closed_ms is None or s.closed_ms >= ts]
    return [s.to_shard() for s in chosen]


def get_shard_iterator(tables: StreamTables, stream: str, shard_id: str, position: StartingPosition) -> str:
    """A new iterator into a retained shard of ``stream`` at ``position``."""
    now_ms = tables.now_ms()
    with tables.snapshot() as conn:
        st = tables.stream_row(conn, stream)
        shard = tables.retained_shard(conn, st, shard_id, now_ms)
        kind = position.type
        if kind is IteratorType.TRIM_HORIZON:
            pos = shard.starting_counter
        elif kind is IteratorType.LATEST:
            pos = st.next_counter
        elif kind is IteratorType.AT_TIMESTAMP:
            assert position.timestamp is not None
            ts = max(epoch_ms(position.timestamp), now_ms - st.retention_ms)
            pos = _first_counter_at(conn, st, shard.index, ts)
        else:
            assert position.sequence_number is not None
            counter = _counter_in_shard(st, shard, position.sequence_number)
            pos = counter if kind is IteratorType.AT_SEQUENCE_NUMBER else counter + 1
    return ShardIterator(stream, st.stream_id, shard.index, pos, now_ms).encode()


def _first_counter_at(conn: sqlite3.Connection, st: StreamRow, shard_index: int, ts_ms: int) -> int:
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


def _counter_in_shard(st: StreamRow, shard: ShardRow, sequence_number_text: str) -> int:
    try:
        value = parse_sequence_number(sequence_number_text)
    except ValueError as exc:
        raise InvalidArgumentError(f"invalid starting sequence number: {exc}") from exc
    counter = value - SEQ_BASE
    if shard.ending_counter is not None:
        last = shard.ending_counter
    else:  # open: up to the last number issued so far (the starting number is always accepted)
        last = max(st.next_counter - 1, shard.starting_counter)
    if not shard.starting_counter <= counter <= last:
        raise InvalidArgumentError(
            f"invalid starting sequence number {sequence_number_text} for shard {shard.shard_id} of stream "
            f"{st.name!r}: it does not belong to that shard, whose sequence numbers (so far) run from "
            f"{sequence_number(shard.starting_counter)} to {sequence_number(last)}"
        )
    return counter


def get_records(
    tables: StreamTables, stream: str, shard_iterator: str, limit: int, iterator_ttl_s: float
) -> GetRecordsResult:
    """Up to ``limit`` records from the iterator's position, the next iterator (``None`` past a closed shard's
    last record, with its children) and how far behind the shard's newest record the response ends."""
    if type(limit) is not int or not 1 <= limit <= MAX_GET_RECORDS_LIMIT:
        raise InvalidArgumentError(f"limit must be 1 to {MAX_GET_RECORDS_LIMIT}, got {limit!r}")
    it = ShardIterator.decode(shard_iterator)
    if it.stream != stream:
        raise InvalidArgumentError(
            f"shard iterator belongs to stream {it.stream!r}, not {stream!r}; use that stream's get_records"
        )
    now_ms = tables.now_ms()
    ttl_ms = int(iterator_ttl_s * 1000)
    if now_ms - it.issued_ms > ttl_ms:
        raise ExpiredIteratorError(
            f"shard iterator for {shard_id_for_index(it.shard_index)} of stream {stream!r} expired "
            f"{(now_ms - it.issued_ms - ttl_ms) / 1000:.1f} s ago "
            f"(iterators live {iterator_ttl_s:g} s); "
            "get a new one with AFTER_SEQUENCE_NUMBER of the last record read"
        )
    with tables.snapshot() as conn:
        st = tables.stream_row(conn, stream)
        if st.stream_id != it.stream_id:
            raise ResourceNotFoundError(
                f"stream {stream!r} was deleted (and re-created) since this shard iterator was issued; "
                "get a new iterator"
            )
        shard = tables.retained_shard(conn, st, shard_id_for_index(it.shard_index), now_ms)
        horizon = now_ms - st.retention_ms
        rows = conn.execute(_READ_RECORDS, (st.stream_id, shard.index, it.position, horizon, limit)).fetchall()
        exhausted = len(rows) < limit
        newest: tuple[int, int] | None = None
        if not exhausted:
            found = conn.execute(_NEWEST_RECORD, (st.stream_id, shard.index)).fetchone()
            newest = (int(found[0]), int(found[1]))
            exhausted = newest[0] <= rows[-1][0]
        children = (
            tables.shard_rows(
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
            stamp = stamps[arrival_ms] = utc(arrival_ms)
        append(Record(data, partition_key, str(base + counter), stamp, 0, explicit, False))

    # How far the last returned record is behind the newest one of the shard; 0 once caught up.
    behind = max(0, newest[1] - int(rows[-1][1])) if newest is not None and not exhausted else 0
    if exhausted and not shard.is_open:
        child_shards = [ChildShard(c.shard_id, c.parent_ids, c.hash_key_range) for c in children]
        return GetRecordsResult(records, None, behind, child_shards)
    position = int(rows[-1][0]) + 1 if rows else it.position
    next_iterator = ShardIterator(stream, st.stream_id, shard.index, position, now_ms).encode()
    return GetRecordsResult(records, next_iterator, behind)
