"""Resharding a local stream as Kinesis does: ``SplitShard`` and ``MergeShards``.

Splitting or merging closes the parent(s): their ending counter is a fresh one reserved at that moment, so
every record of a parent is ``<=`` its ending sequence number and every child starts after it
(``parent.ending < child.starting``). The children get the next free shard indexes. Each operation is one
write transaction.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from shardwise.backends.sqlite.stream_tables import ShardRow, StreamRow, StreamTables, new_shard
from shardwise.errors import InvalidArgumentError, InvalidStateError
from shardwise.hashkeys import HashKeyRange
from shardwise.retrieval.model import Shard

__all__ = ["merge_shards", "split_shard"]

logger = logging.getLogger(__name__)


def _close_for_reshard(
    conn: sqlite3.Connection, st: StreamRow, parents: Sequence[ShardRow], now_ms: int
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
    tables: StreamTables, conn: sqlite3.Connection, st: StreamRow, shard_id: str, now_ms: int, *, action: str
) -> ShardRow:
    shard = tables.retained_shard(conn, st, shard_id, now_ms)
    if not shard.is_open:
        raise InvalidStateError(
            f"cannot {action} shard {shard_id} of stream {st.name!r}: it is closed (it was already split "
            "or merged); use one of the open shards (list_shards with AT_LATEST)"
        )
    return shard


def split_shard(tables: StreamTables, stream: str, shard_id: str, new_starting_hash_key: int) -> tuple[Shard, Shard]:
    """Split an open shard at ``new_starting_hash_key``; return the children (see
    :meth:`LocalStreamStore.split_shard <shardwise.backends.sqlite.stream.LocalStreamStore.split_shard>`)."""
    if type(new_starting_hash_key) is not int:
        raise InvalidArgumentError(
            f"new starting hash key must be an integer, got {type(new_starting_hash_key).__name__}"
        )
    with tables.transaction() as conn:
        st = tables.stream_row(conn, stream)
        now_ms = max(tables.now_ms(), st.last_arrival_ms)
        parent = _open_shard_for_reshard(tables, conn, st, shard_id, now_ms, action="split")
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
        start_counter, index = _close_for_reshard(conn, st, [parent], now_ms)
        ranges = (
            HashKeyRange(parent.start, new_starting_hash_key - 1),
            HashKeyRange(new_starting_hash_key, parent.end),
        )
        for i, hash_range in enumerate(ranges):
            child = new_shard(index + i, hash_range, start_counter, now_ms, parent=parent.index)
            tables.insert_shard(conn, st.stream_id, child)
        conn.execute(
            "UPDATE shardwise_streams SET next_counter = ?, next_shard_index = ?, last_arrival_ms = ? "
            "WHERE stream_id = ?",
            (start_counter, index + 2, now_ms, st.stream_id),
        )
    logger.info("split shard %s of stream %s at %d", shard_id, stream, new_starting_hash_key)
    first_child = new_shard(index, ranges[0], start_counter, now_ms, parent=parent.index)
    return first_child.to_shard(), child.to_shard()


def merge_shards(tables: StreamTables, stream: str, shard_id: str, adjacent_shard_id: str) -> Shard:
    """Merge two open shards with adjacent ranges into one; return the child (see
    :meth:`LocalStreamStore.merge_shards <shardwise.backends.sqlite.stream.LocalStreamStore.merge_shards>`)."""
    if shard_id == adjacent_shard_id:
        raise InvalidArgumentError(f"cannot merge shard {shard_id} with itself; name two adjacent shards")
    with tables.transaction() as conn:
        st = tables.stream_row(conn, stream)
        now_ms = max(tables.now_ms(), st.last_arrival_ms)
        first = _open_shard_for_reshard(tables, conn, st, shard_id, now_ms, action="merge")
        second = _open_shard_for_reshard(tables, conn, st, adjacent_shard_id, now_ms, action="merge")
        if not first.hash_key_range.is_adjacent_to(second.hash_key_range):
            raise InvalidArgumentError(
                f"cannot merge {shard_id} [{first.start}, {first.end}] and {adjacent_shard_id} "
                f"[{second.start}, {second.end}] of stream {stream!r}: their hash key ranges are not "
                "adjacent; merge two open shards whose ranges touch"
            )
        start_counter, index = _close_for_reshard(conn, st, [first, second], now_ms)
        union = HashKeyRange(min(first.start, second.start), max(first.end, second.end))
        child = new_shard(index, union, start_counter, now_ms, parent=first.index, adjacent=second.index)
        tables.insert_shard(conn, st.stream_id, child)
        conn.execute(
            "UPDATE shardwise_streams SET next_counter = ?, next_shard_index = ?, last_arrival_ms = ? "
            "WHERE stream_id = ?",
            (start_counter, index + 1, now_ms, st.stream_id),
        )
    logger.info("merged shards %s and %s of stream %s", shard_id, adjacent_shard_id, stream)
    return child.to_shard()
