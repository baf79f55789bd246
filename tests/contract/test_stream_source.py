"""The StreamSource contract: Kinesis' read semantics, identical on the local stream and on Kinesis.

Kinesis runs on kinesis-local (the only stand-in with ChildShards and ShardFilter); records per test stay
small because kinesis-local's puts slow down as a stream grows.
"""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from shardwise.errors import ResourceNotFoundError
from shardwise.hashkeys import MAX_HASH_KEY, hash_key_for
from shardwise.retrieval.kpl import aggregate
from shardwise.retrieval.model import Record, ShardFilter, ShardFilterType, StartingPosition
from shardwise.retrieval.reader import ShardReader
from shardwise.retrieval.source import StreamSource
from support.backends import StreamBackend


def unique(prefix: str = "contract") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def read_all(source: StreamSource, shard_id: str, position: StartingPosition, limit: int = 10_000) -> list[Record]:
    """Read a shard from ``position`` until it is caught up (open shard) or ended (closed shard)."""
    records: list[Record] = []
    iterator: str | None = source.get_shard_iterator(shard_id, position)
    while iterator is not None:
        result = source.get_records(iterator, limit=limit)
        records.extend(result.records)
        if not result.records and result.millis_behind_latest in (0, None) and result.next_iterator is not None:
            break
        iterator = result.next_iterator
    return records


def test_satisfies_the_protocol(stream_backend: StreamBackend) -> None:
    assert isinstance(stream_backend.create(unique(), 1), StreamSource)


class TestShards:
    def test_shards_tile_the_hash_space(self, stream_backend: StreamBackend) -> None:
        source = stream_backend.create(unique(), 4)
        shards = source.list_shards()
        assert [s.shard_id for s in shards] == sorted(s.shard_id for s in shards)
        assert len(shards) == 4
        assert all(s.is_open and s.parent_shard_ids == () for s in shards)
        ranges = sorted((s.hash_key_range.start, s.hash_key_range.end) for s in shards)
        assert ranges[0][0] == 0
        assert ranges[-1][1] == MAX_HASH_KEY
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert start == end + 1

    def test_unknown_stream_and_shard(self, stream_backend: StreamBackend) -> None:
        with pytest.raises(ResourceNotFoundError):
            stream_backend.open(unique("missing")).list_shards()
        source = stream_backend.create(unique(), 1)
        with pytest.raises(ResourceNotFoundError):
            source.get_shard_iterator("shardId-000000000099", StartingPosition.trim_horizon())


class TestReading:
    def test_records_route_by_md5_and_keep_order(self, stream_backend: StreamBackend) -> None:
        name = unique()
        source = stream_backend.create(name, 3)
        shards = {s.shard_id: s for s in source.list_shards()}
        written: dict[str, list[tuple[str, bytes]]] = {}
        for i in range(30):
            key = f"pk-{i}"
            shard_id, seq = stream_backend.put(name, f"r{i}".encode(), key)
            assert hash_key_for(key) in shards[shard_id].hash_key_range
            written.setdefault(shard_id, []).append((seq, f"r{i}".encode()))
        for shard_id, expected in written.items():
            records = read_all(source, shard_id, StartingPosition.trim_horizon())
            assert [(r.sequence_number, r.data) for r in records] == expected
            numbers = [int(r.sequence_number) for r in records]
            assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
            assert all(r.sub_sequence_number == 0 and not r.aggregated for r in records)
            assert all(r.approximate_arrival_timestamp.tzinfo is not None for r in records)

    def test_explicit_hash_key_routes(self, stream_backend: StreamBackend) -> None:
        name = unique()
        source = stream_backend.create(name, 2)
        low, high = sorted(source.list_shards(), key=lambda s: s.hash_key_range.start)
        assert stream_backend.put(name, b"x", "any", str(high.hash_key_range.end))[0] == high.shard_id
        assert stream_backend.put(name, b"y", "any", "0")[0] == low.shard_id

    def test_iterator_types(self, stream_backend: StreamBackend) -> None:
        name = unique()
        source = stream_backend.create(name, 1)
        (shard,) = source.list_shards()
        seqs = [stream_backend.put(name, f"a{i}".encode(), "k")[1] for i in range(5)]
        latest = source.get_shard_iterator(shard.shard_id, StartingPosition.latest())
        time.sleep(1.1)
        boundary = datetime.now(timezone.utc)
        time.sleep(1.1)
        later = [stream_backend.put(name, f"b{i}".encode(), "k")[1] for i in range(3)]

        def seqs_from(position: StartingPosition) -> list[str]:
            return [r.sequence_number for r in read_all(source, shard.shard_id, position)]

        assert seqs_from(StartingPosition.trim_horizon()) == seqs + later
        assert [r.sequence_number for r in source.get_records(latest).records] == later
        assert seqs_from(StartingPosition.at_sequence(seqs[2])) == seqs[2:] + later
        assert seqs_from(StartingPosition.after_sequence(seqs[2])) == seqs[3:] + later
        assert seqs_from(StartingPosition.at_timestamp(boundary)) == later
        assert seqs_from(StartingPosition.at_timestamp(boundary - timedelta(hours=1))) == seqs + later

    def test_limit_and_continuation(self, stream_backend: StreamBackend) -> None:
        name = unique()
        source = stream_backend.create(name, 1)
        (shard,) = source.list_shards()
        seqs = [stream_backend.put(name, b"d", "k")[1] for _ in range(7)]
        first = source.get_records(source.get_shard_iterator(shard.shard_id, StartingPosition.trim_horizon()), limit=3)
        assert [r.sequence_number for r in first.records] == seqs[:3]
        assert first.next_iterator is not None
        rest = read_all(source, shard.shard_id, StartingPosition.after_sequence(seqs[2]))
        assert [r.sequence_number for r in rest] == seqs[3:]
        second = source.get_records(first.next_iterator, limit=10)
        assert [r.sequence_number for r in second.records] == seqs[3:]
        assert second.child_shards == []

    def test_aggregated_records_are_deaggregated_by_the_reader(self, stream_backend: StreamBackend) -> None:
        name = unique()
        source = stream_backend.create(name, 1)
        (shard,) = source.list_shards()
        blob = aggregate([(f"user-{i}".encode(), f"pk-{i}", None) for i in range(4)])
        _, seq = stream_backend.put(name, blob, "pk-0")
        raw = read_all(source, shard.shard_id, StartingPosition.trim_horizon())
        assert len(raw) == 1 and raw[0].data == blob
        batch = ShardReader(
            source, shard.shard_id, StartingPosition.trim_horizon(), shard_range=shard.hash_key_range
        ).read()
        assert [(r.data, r.partition_key, r.sequence_number, r.sub_sequence_number) for r in batch.records] == [
            (f"user-{i}".encode(), f"pk-{i}", seq, i) for i in range(4)
        ]
        assert all(r.aggregated for r in batch.records)


class TestResharding:
    def test_split_closes_parent_and_reports_children(self, stream_backend: StreamBackend) -> None:
        name = unique()
        source = stream_backend.create(name, 1)
        (parent,) = source.list_shards()
        before = [stream_backend.put(name, f"p{i}".encode(), f"k{i}")[1] for i in range(4)]
        middle = MAX_HASH_KEY // 2 + 1
        stream_backend.split(name, parent.shard_id, middle)

        shards = {s.shard_id: s for s in source.list_shards()}
        closed = shards[parent.shard_id]
        assert not closed.is_open
        children = sorted(
            (s for s in shards.values() if s.parent_shard_id == parent.shard_id),
            key=lambda s: s.hash_key_range.start,
        )
        assert len(children) == 2 and all(c.is_open for c in children)
        assert (children[0].hash_key_range.start, children[0].hash_key_range.end) == (0, middle - 1)
        assert (children[1].hash_key_range.start, children[1].hash_key_range.end) == (middle, MAX_HASH_KEY)
        open_ids = {s.shard_id for s in source.list_shards(ShardFilter(ShardFilterType.AT_LATEST))}
        assert open_ids == {c.shard_id for c in children}

        after_shard, after_seq = stream_backend.put(name, b"after", "k-after")
        assert after_shard in open_ids

        # Reading the closed parent ends with no next iterator and the children, as Kinesis reports them.
        iterator: str | None = source.get_shard_iterator(parent.shard_id, StartingPosition.trim_horizon())
        seen: list[str] = []
        child_ids: set[str] = set()
        for _ in range(20):
            assert iterator is not None
            result = source.get_records(iterator)
            seen += [r.sequence_number for r in result.records]
            if result.next_iterator is None:
                child_ids = {c.shard_id for c in result.child_shards}
                assert all(c.parent_shards == (parent.shard_id,) for c in result.child_shards)
                break
            iterator = result.next_iterator
        assert seen == before
        assert child_ids == {c.shard_id for c in children}
        assert int(after_seq) > int(before[-1])
        child_records = read_all(source, after_shard, StartingPosition.trim_horizon())
        assert [r.sequence_number for r in child_records] == [after_seq]

    def test_merge_closes_both_parents(self, stream_backend: StreamBackend) -> None:
        name = unique()
        source = stream_backend.create(name, 2)
        low, high = sorted(source.list_shards(), key=lambda s: s.hash_key_range.start)
        stream_backend.put(name, b"lo", "x", "0")
        stream_backend.merge(name, low.shard_id, high.shard_id)
        shards = {s.shard_id: s for s in source.list_shards()}
        (child,) = [s for s in shards.values() if s.is_open]
        assert set(child.parent_shard_ids) == {low.shard_id, high.shard_id}
        assert (child.hash_key_range.start, child.hash_key_range.end) == (0, MAX_HASH_KEY)
        assert not shards[low.shard_id].is_open and not shards[high.shard_id].is_open
        for parent in (low, high):
            reader = ShardReader(source, parent.shard_id, StartingPosition.trim_horizon())
            for _ in range(20):
                batch = reader.read()
                if batch.shard_ended:
                    break
            assert batch.shard_ended
            assert [c.shard_id for c in batch.child_shards] == [child.shard_id]
            assert set(batch.child_shards[0].parent_shards) == {low.shard_id, high.shard_id}
        assert stream_backend.put(name, b"m", "y")[0] == child.shard_id
