"""ShardReader over a scripted in-memory StreamSource: iterator expiry, shard end, de-aggregation."""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timedelta, timezone

import pytest

from shardwise.errors import ExpiredIteratorError, ThrottlingError
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange, hash_key_for
from shardwise.retrieval.kpl import aggregate
from shardwise.retrieval.model import (
    ChildShard,
    GetRecordsResult,
    IteratorType,
    Record,
    Shard,
    ShardFilter,
    StartingPosition,
)
from shardwise.retrieval.reader import ReadBatch, ShardReader
from shardwise.retrieval.source import StreamSource

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
SHARD = "shardId-000000000000"
CHILDREN = [
    ChildShard("shardId-000000000001", (SHARD,), HashKeyRange(0, 2**127 - 1)),
    ChildShard("shardId-000000000002", (SHARD,), HashKeyRange(2**127, MAX_HASH_KEY)),
]


def plain(n: int) -> Record:
    return Record(
        data=f"r{n}".encode(),
        partition_key=f"pk{n}",
        sequence_number=str(1000 + n),
        approximate_arrival_timestamp=T0 + timedelta(seconds=n),
    )


class FakeSource:
    """One shard. Iterators are opaque tokens mapped to an index into ``records``.

    ``expire_next`` makes the next N ``get_records`` calls raise ``ExpiredIteratorError``; ``fail_next`` makes
    the next one raise the given error.
    """

    stream_name = "fake-stream"

    def __init__(self, records: list[Record], *, closed: bool = False) -> None:
        self.records = records
        self.closed = closed
        self.expire_next = 0
        self.fail_next: Exception | None = None
        self.iterator_requests: list[StartingPosition] = []
        self.get_records_calls = 0
        self._iterators: dict[str, int] = {}
        self._tokens = itertools.count()

    def _iterator(self, index: int) -> str:
        token = f"it-{next(self._tokens)}"
        self._iterators[token] = index
        return token

    def _index_of(self, sequence_number: str) -> int:
        return next(i for i, r in enumerate(self.records) if r.sequence_number == sequence_number)

    def list_shards(self, shard_filter: ShardFilter | None = None) -> list[Shard]:
        return [Shard(SHARD, HashKeyRange(0, MAX_HASH_KEY), "0", "9999" if self.closed else None)]

    def get_shard_iterator(self, shard_id: str, position: StartingPosition) -> str:
        assert shard_id == SHARD
        self.iterator_requests.append(position)
        if position.type is IteratorType.TRIM_HORIZON:
            return self._iterator(0)
        if position.type is IteratorType.LATEST:
            return self._iterator(len(self.records))
        if position.type is IteratorType.AT_TIMESTAMP:
            assert position.timestamp is not None
            ts = position.timestamp
            return self._iterator(
                next(
                    (i for i, r in enumerate(self.records) if r.approximate_arrival_timestamp >= ts),
                    len(self.records),
                )
            )
        assert position.sequence_number is not None
        index = self._index_of(position.sequence_number)
        return self._iterator(index + (position.type is IteratorType.AFTER_SEQUENCE_NUMBER))

    def get_records(self, shard_iterator: str, *, limit: int = 10_000) -> GetRecordsResult:
        self.get_records_calls += 1
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if self.expire_next:
            self.expire_next -= 1
            raise ExpiredIteratorError(f"iterator {shard_iterator} expired")
        start = self._iterators[shard_iterator]
        batch = self.records[start : start + limit]
        end = start + len(batch)
        if self.closed and end >= len(self.records):
            return GetRecordsResult(batch, None, 0, list(CHILDREN))
        return GetRecordsResult(batch, self._iterator(end), (len(self.records) - end) * 1000)


def data_of(batch: ReadBatch) -> list[bytes]:
    return [r.data for r in batch.records]


def test_fake_source_is_a_stream_source() -> None:
    assert isinstance(FakeSource([]), StreamSource)


def test_reads_in_order_from_the_start_position_lazily() -> None:
    source = FakeSource([plain(i) for i in range(5)])
    reader = ShardReader(source, SHARD, StartingPosition.at_sequence("1002"))
    assert source.iterator_requests == []  # nothing happens until the first read
    first = reader.read(limit=2)
    assert data_of(first) == [b"r2", b"r3"]
    assert first.millis_behind_latest == 1000
    assert not first.shard_ended
    assert data_of(reader.read(limit=2)) == [b"r4"]
    assert reader.read().records == []
    assert source.iterator_requests == [StartingPosition.at_sequence("1002")]
    assert reader.last_sequence_number == "1004"
    assert reader.position == StartingPosition.after_sequence("1004")


def test_expired_iterator_resumes_after_the_last_record_returned(caplog: pytest.LogCaptureFixture) -> None:
    source = FakeSource([plain(i) for i in range(6)])
    reader = ShardReader(source, SHARD, StartingPosition.trim_horizon())
    assert data_of(reader.read(limit=2)) == [b"r0", b"r1"]
    source.expire_next = 1
    with caplog.at_level(logging.INFO, logger="shardwise.retrieval.reader"):
        assert data_of(reader.read(limit=2)) == [b"r2", b"r3"]
    assert source.iterator_requests[-1] == StartingPosition.after_sequence("1001")
    assert any("expired" in r.getMessage() and "1001" in r.getMessage() for r in caplog.records)
    assert data_of(reader.read(limit=10)) == [b"r4", b"r5"]


def test_expired_iterator_before_any_record_uses_the_original_start() -> None:
    source = FakeSource([plain(i) for i in range(4)])
    start = StartingPosition.at_timestamp(T0 + timedelta(seconds=2))
    reader = ShardReader(source, SHARD, start)
    source.expire_next = 1
    assert data_of(reader.read()) == [b"r2", b"r3"]
    assert source.iterator_requests == [start, start]


def test_expiry_after_empty_reads_still_uses_the_original_start() -> None:
    source = FakeSource([])
    reader = ShardReader(source, SHARD, StartingPosition.latest())
    assert reader.read().records == []
    source.records.append(plain(0))
    source.expire_next = 1
    # LATEST again: what KCL does too when nothing was fetched yet
    assert reader.read().records == []
    assert source.iterator_requests == [StartingPosition.latest(), StartingPosition.latest()]


def test_a_second_expiry_propagates_and_the_next_read_recovers() -> None:
    source = FakeSource([plain(i) for i in range(3)])
    reader = ShardReader(source, SHARD, StartingPosition.trim_horizon())
    assert data_of(reader.read(limit=1)) == [b"r0"]
    source.expire_next = 2
    with pytest.raises(ExpiredIteratorError):
        reader.read()
    assert data_of(reader.read()) == [b"r1", b"r2"]
    assert source.iterator_requests[1:] == [StartingPosition.after_sequence("1000")] * 2


def test_other_errors_propagate_and_keep_the_iterator() -> None:
    source = FakeSource([plain(i) for i in range(3)])
    reader = ShardReader(source, SHARD, StartingPosition.trim_horizon())
    assert data_of(reader.read(limit=1)) == [b"r0"]
    source.fail_next = ThrottlingError("slow down")
    with pytest.raises(ThrottlingError):
        reader.read()
    assert data_of(reader.read()) == [b"r1", b"r2"]
    assert len(source.iterator_requests) == 1


def test_shard_end_reports_children_once_then_stops_calling_the_source() -> None:
    source = FakeSource([plain(i) for i in range(3)], closed=True)
    reader = ShardReader(source, SHARD, StartingPosition.trim_horizon())
    first = reader.read(limit=2)
    assert not first.shard_ended
    assert first.child_shards == []
    last = reader.read(limit=2)
    assert data_of(last) == [b"r2"]
    assert last.shard_ended
    assert last.child_shards == CHILDREN
    assert reader.shard_ended
    assert reader.child_shards == CHILDREN
    calls = (source.get_records_calls, len(source.iterator_requests))
    for _ in range(3):
        again = reader.read()
        assert again == ReadBatch(records=[], shard_ended=True)
    assert (source.get_records_calls, len(source.iterator_requests)) == calls


def test_empty_closed_shard_ends_on_first_read() -> None:
    reader = ShardReader(FakeSource([], closed=True), SHARD, StartingPosition.trim_horizon())
    batch = reader.read()
    assert batch.shard_ended
    assert batch.child_shards == CHILDREN


def _aggregated(n: int, entries: list[tuple[bytes, str, str | None]]) -> Record:
    return Record(
        data=aggregate(entries),
        partition_key=f"agg{n}",
        sequence_number=str(1000 + n),
        approximate_arrival_timestamp=T0 + timedelta(seconds=n),
    )


def test_deaggregates_and_resumes_by_the_parent_sequence_number() -> None:
    records = [
        plain(0),
        _aggregated(1, [(b"a0", "k0", None), (b"a1", "k1", None), (b"a2", "k2", None)]),
        plain(2),
        _aggregated(3, [(b"b0", "k0", None), (b"b1", "k1", None)]),
    ]
    source = FakeSource(records)
    reader = ShardReader(source, SHARD, StartingPosition.trim_horizon())
    batch = reader.read(limit=2)
    assert data_of(batch) == [b"r0", b"a0", b"a1", b"a2"]
    assert [(r.sequence_number, r.sub_sequence_number, r.aggregated) for r in batch.records] == [
        ("1000", 0, False),
        ("1001", 0, True),
        ("1001", 1, True),
        ("1001", 2, True),
    ]
    assert reader.last_sequence_number == "1001"
    source.expire_next = 1
    assert data_of(reader.read()) == [b"r2", b"b0", b"b1"]
    assert source.iterator_requests[-1] == StartingPosition.after_sequence("1001")


def test_shard_range_drops_foreign_sub_records_but_still_advances() -> None:
    keys = [str(i) for i in range(40)]
    low = HashKeyRange(0, 2**127 - 1)
    inside = [k for k in keys if hash_key_for(k) in low]
    outside = [k for k in keys if hash_key_for(k) not in low]
    records = [
        _aggregated(0, [(k.encode(), k, None) for k in keys]),
        _aggregated(1, [(b"foreign", outside[0], None)]),  # nothing of it belongs to this shard
    ]
    source = FakeSource(records)
    reader = ShardReader(source, SHARD, StartingPosition.trim_horizon(), shard_range=low)
    batch = reader.read()
    assert [r.partition_key for r in batch.records] == inside
    assert [r.sub_sequence_number for r in batch.records] == [keys.index(k) for k in inside]
    assert reader.last_sequence_number == "1001"


def test_deaggregation_can_be_switched_off() -> None:
    parent = _aggregated(0, [(b"a", "k", None), (b"b", "k", None)])
    reader = ShardReader(FakeSource([parent]), SHARD, StartingPosition.trim_horizon(), deaggregate=False)
    assert reader.read().records == [parent]
