"""LocalStreamStore / LocalStream: a SQLite stream that must behave like Kinesis."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import multiprocessing
import pickle
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardwise.backends.sqlite.connection import SQLiteDatabase
from shardwise.backends.sqlite.stream import LocalStream, LocalStreamStore, even_hash_key_ranges
from shardwise.backends.sqlite.stream_tables import SEQ_BASE, shard_id_for_index
from shardwise.errors import (
    ConfigurationError,
    DependencyError,
    ExpiredIteratorError,
    InvalidArgumentError,
    InvalidStateError,
    ResourceNotFoundError,
    UnusableStoreError,
)
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.retrieval.model import (
    GetRecordsResult,
    Record,
    ShardFilter,
    ShardFilterType,
    StartingPosition,
)
from shardwise.retrieval.source import StreamSource

T0 = 1_800_000_000.0
S = [shard_id_for_index(i) for i in range(8)]


class FakeClock:
    """Wall-clock seconds under the test's control."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.now, tz=timezone.utc)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[LocalStreamStore]:
    with LocalStreamStore(tmp_path / "streams.db", clock=clock) as s:
        yield s


@pytest.fixture
def stream(store: LocalStreamStore) -> LocalStream:
    store.create_stream("orders", 4)
    return store.stream("orders")


def md5_int(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest(), "big")


def read_all(
    stream: LocalStream, shard_id: str, position: StartingPosition | None = None, limit: int = 10_000
) -> tuple[list[Record], GetRecordsResult]:
    """Read a shard from ``position`` until caught up (open shard) or its end (closed shard)."""
    iterator: str | None = stream.get_shard_iterator(shard_id, position or StartingPosition.trim_horizon())
    records: list[Record] = []
    while True:
        assert iterator is not None
        result = stream.get_records(iterator, limit=limit)
        records.extend(result.records)
        if result.next_iterator is None or not result.records:
            return records, result
        iterator = result.next_iterator


def seqs(records: list[Record]) -> list[int]:
    return [int(r.sequence_number) for r in records]


# -- hash-key layout -----------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=10_000))
@settings(max_examples=60, deadline=None)
def test_even_ranges_tile_the_hash_key_space(n: int) -> None:
    ranges = even_hash_key_ranges(n)
    assert len(ranges) == n
    assert ranges[0].start == 0
    assert ranges[-1].end == MAX_HASH_KEY
    size = (MAX_HASH_KEY + 1) // n
    for left, right in itertools.pairwise(ranges):
        assert left.end + 1 == right.start
    assert all(r.end - r.start + 1 == size for r in ranges[:-1])
    assert ranges[-1].end - ranges[-1].start + 1 >= size


def test_layout_matches_kinesis() -> None:
    assert even_hash_key_ranges(4)[0] == HashKeyRange(0, 2**126 - 1)
    # What Kinesis reports for shardId-000000000000 of a 3-shard stream.
    assert even_hash_key_ranges(3)[0].end == 113427455640312821154458202477256070484
    assert even_hash_key_ranges(1) == [HashKeyRange(0, MAX_HASH_KEY)]
    with pytest.raises(ValueError, match="shard count"):
        even_hash_key_ranges(0)


def test_create_stream_lists_open_shards_like_kinesis(stream: LocalStream) -> None:
    assert isinstance(stream, StreamSource)
    shards = stream.list_shards()
    assert [s.shard_id for s in shards] == S[:4]
    assert [s.hash_key_range for s in shards] == even_hash_key_ranges(4)
    for shard in shards:
        assert shard.is_open
        assert shard.parent_shard_ids == ()
        assert len(shard.starting_sequence_number) == 56
        assert int(shard.starting_sequence_number) >= SEQ_BASE


def test_create_stream_rejects_bad_input(store: LocalStreamStore) -> None:
    store.create_stream("s", 1)
    with pytest.raises(InvalidStateError, match="'s' already exists"):
        store.create_stream("s", 2)
    with pytest.raises(InvalidArgumentError, match="shard count 0"):
        store.create_stream("t", 0)
    with pytest.raises(InvalidArgumentError, match="stream name"):
        store.create_stream("bad name!", 1)
    with pytest.raises(InvalidArgumentError, match="retention"):
        store.create_stream("t", 1, retention_hours=0)
    assert store.list_streams() == ["s"]


def test_list_describe_and_delete_streams(store: LocalStreamStore) -> None:
    store.create_stream("b", 2, retention_hours=48)
    store.create_stream("a", 1)
    store.put_records("b", [(b"x", f"k{i}") for i in range(10)])
    assert store.list_streams() == ["a", "b"]
    desc = store.describe_stream("b")
    assert desc.name == "b"
    assert desc.retention_hours == 48
    assert desc.created.tzinfo is not None
    assert desc.open_shard_count == 2
    assert [s.shard_id for s in desc.shards] == S[:2]
    assert set(desc.record_counts) == set(S[:2])
    assert desc.record_count == 10
    store.delete_stream("b")
    assert store.list_streams() == ["a"]
    with pytest.raises(ResourceNotFoundError, match=r"'b' does not exist.*create"):
        store.describe_stream("b")
    with pytest.raises(ResourceNotFoundError):
        store.delete_stream("b")


def test_unknown_stream_and_shard(store: LocalStreamStore, stream: LocalStream) -> None:
    with pytest.raises(ResourceNotFoundError, match=r"'nope' does not exist.*stream create"):
        store.put_record("nope", b"x", "k")
    with pytest.raises(ResourceNotFoundError, match="nope"):
        store.stream("nope").list_shards()
    for bad in ("shardId-000000000009", "shardId-1", "garbage"):
        with pytest.raises(ResourceNotFoundError, match=bad):
            stream.get_shard_iterator(bad, StartingPosition.latest())


# -- puts ------------------------------------------------------------------------------------------------


def test_records_are_routed_by_md5_of_the_partition_key(stream: LocalStream) -> None:
    ranges = {s.shard_id: s.hash_key_range for s in stream.list_shards()}
    keys = [f"key-{i}" for i in range(300)] + ["ü", "a" * 256]
    results = stream.put_records([(k.encode(), k) for k in keys])
    for key, result in zip(keys, results, strict=True):
        assert md5_int(key) in ranges[result.shard_id]
    used = {r.shard_id for r in results}
    assert used == set(S[:4])


@pytest.fixture(scope="module")
def routing_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStreamStore]:
    with LocalStreamStore(tmp_path_factory.mktemp("routing") / "r.db") as store:
        store.create_stream("r", 7)
        yield store


@given(key=st.text(min_size=1, max_size=256))
@settings(max_examples=50, deadline=None)
def test_routing_property(routing_store: LocalStreamStore, key: str) -> None:
    result = routing_store.put_record("r", b"", key)
    index = int(result.shard_id.removeprefix("shardId-"))
    assert md5_int(key) in even_hash_key_ranges(7)[index]


def test_explicit_hash_key_overrides_the_partition_key(stream: LocalStream) -> None:
    first = stream.put_record(b"a", "same", explicit_hash_key="0")
    last = stream.put_record(b"b", "same", explicit_hash_key=str(MAX_HASH_KEY))
    assert (first.shard_id, last.shard_id) == (S[0], S[3])
    records, _ = read_all(stream, S[3])
    assert records[-1].explicit_hash_key == str(MAX_HASH_KEY)
    assert records[-1].partition_key == "same"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ((b"x", ""), "partition key must be 1 to 256 characters, got 0"),
        ((b"x", "k" * 257), "partition key must be 1 to 256 characters, got 257"),
        ((b"x" * (1024 * 1024 + 1), "k"), "at most 1 MiB"),
        (("text", "k"), "data must be bytes"),
        ((b"x", "k", "abc"), "explicit hash key"),
        ((b"x", "k", str(2**128)), "explicit hash key"),
        ((b"x", "k", "-1"), "explicit hash key"),
    ],
)
def test_puts_are_validated_like_kinesis(stream: LocalStream, entry: tuple[object, ...], message: str) -> None:
    good = (b"ok", "k")
    with pytest.raises(InvalidArgumentError, match=message):
        stream.put_records([good, entry])  # type: ignore[list-item]
    records, _ = read_all(stream, S[0])
    assert stream.store.describe_stream("orders").record_count == 0, "nothing of the batch is written"
    assert records == []


def test_largest_record_is_accepted(stream: LocalStream) -> None:
    stream.put_record(b"x" * (1024 * 1024), "k" * 256)
    assert stream.store.describe_stream("orders").record_count == 1


def test_sequence_numbers_strictly_increase_as_integers(stream: LocalStream) -> None:
    results = stream.put_records([(b"%d" % i, f"k{i}") for i in range(500)])
    results += [stream.put_record(b"x", f"k{i}") for i in range(20)]
    numbers = [int(r.sequence_number) for r in results]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    assert all(len(r.sequence_number) == 56 for r in results)
    shards = {s.shard_id: s for s in stream.list_shards()}
    for result in results:
        assert int(result.sequence_number) >= int(shards[result.shard_id].starting_sequence_number)
    # Per shard, reads return the records in sequence order, with their data in put order.
    for shard_id in S[:4]:
        records, _ = read_all(stream, shard_id)
        assert seqs(records) == sorted(seqs(records))
        expected = [r.sequence_number for r in results if r.shard_id == shard_id]
        assert [r.sequence_number for r in records] == expected


def test_empty_batch_is_a_no_op(stream: LocalStream) -> None:
    assert stream.put_records([]) == []


# -- iterators -------------------------------------------------------------------------------------------


def _fill_one_shard(stream: LocalStream, count: int, clock: FakeClock | None = None) -> list[str]:
    out = []
    for i in range(count):
        out.append(stream.put_record(b"%d" % i, "k", explicit_hash_key="1").sequence_number)
        if clock is not None:
            clock.advance(1)
    return out


def test_iterator_types(stream: LocalStream, clock: FakeClock) -> None:
    numbers = _fill_one_shard(stream, 10, clock)
    shard = S[0]
    all_records, _ = read_all(stream, shard)
    assert [r.sequence_number for r in all_records] == numbers
    assert [r.data for r in all_records] == [b"%d" % i for i in range(10)]

    at, _ = read_all(stream, shard, StartingPosition.at_sequence(numbers[3]))
    assert at[0].sequence_number == numbers[3]
    after, _ = read_all(stream, shard, StartingPosition.after_sequence(numbers[3]))
    assert after[0].sequence_number == numbers[4]
    after_last, _ = read_all(stream, shard, StartingPosition.after_sequence(numbers[-1]))
    assert after_last == []

    # AT_TIMESTAMP: record i arrived at T0 + i seconds.
    ts, _ = read_all(stream, shard, StartingPosition.at_timestamp(datetime.fromtimestamp(T0 + 6.5, timezone.utc)))
    assert ts[0].sequence_number == numbers[7]
    exact, _ = read_all(stream, shard, StartingPosition.at_timestamp(datetime.fromtimestamp(T0 + 6, timezone.utc)))
    assert exact[0].sequence_number == numbers[6]
    early, _ = read_all(stream, shard, StartingPosition.at_timestamp(datetime.fromtimestamp(0, timezone.utc)))
    assert len(early) == 10
    future = stream.get_shard_iterator(shard, StartingPosition.at_timestamp(clock.dt() + timedelta(hours=1)))
    assert stream.get_records(future).records == []

    latest = stream.get_shard_iterator(shard, StartingPosition.latest())
    assert stream.get_records(latest).records == []
    late = _fill_one_shard(stream, 2)
    got = stream.get_records(latest)
    assert [r.sequence_number for r in got.records] == late
    assert all(r.approximate_arrival_timestamp.tzinfo is not None for r in got.records)
    assert all_records[0].approximate_arrival_timestamp == datetime.fromtimestamp(T0, timezone.utc)


def test_starting_position_on_empty_shard(stream: LocalStream) -> None:
    shard = stream.list_shards()[0]
    it = stream.get_shard_iterator(shard.shard_id, StartingPosition.at_sequence(shard.starting_sequence_number))
    assert stream.get_records(it).records == []
    seq = stream.put_record(b"x", "k", explicit_hash_key="0").sequence_number
    assert [r.sequence_number for r in stream.get_records(it).records] == [seq]


def test_sequence_number_must_belong_to_the_shard(stream: LocalStream) -> None:
    numbers = _fill_one_shard(stream, 3)
    with pytest.raises(InvalidArgumentError, match="does not belong"):
        stream.get_shard_iterator(S[0], StartingPosition.at_sequence(str(int(numbers[-1]) + 1)))
    with pytest.raises(InvalidArgumentError, match="does not belong"):
        stream.get_shard_iterator(S[0], StartingPosition.at_sequence("1"))
    with pytest.raises(InvalidArgumentError, match="sequence number"):
        stream.get_shard_iterator(S[0], StartingPosition.at_sequence("12x"))
    # After a split, the parent's range ends: a child's number is not the parent's.
    store = stream.store
    child, _ = store.split_shard("orders", S[0], 2**64)
    later = stream.put_record(b"y", "k", explicit_hash_key="1").sequence_number
    with pytest.raises(InvalidArgumentError, match=S[0]):
        stream.get_shard_iterator(S[0], StartingPosition.at_sequence(later))
    with pytest.raises(InvalidArgumentError, match=child.shard_id):
        stream.get_shard_iterator(child.shard_id, StartingPosition.at_sequence(numbers[0]))


def test_limit(stream: LocalStream) -> None:
    numbers = _fill_one_shard(stream, 25)
    it = stream.get_shard_iterator(S[0], StartingPosition.trim_horizon())
    seen: list[str] = []
    for expected in (10, 10, 5, 0):
        result = stream.get_records(it, limit=10)
        assert len(result.records) == expected
        seen += [r.sequence_number for r in result.records]
        assert result.next_iterator is not None
        it = result.next_iterator
    assert seen == numbers
    for bad in (0, -1, 10_001):
        with pytest.raises(InvalidArgumentError, match="limit"):
            stream.get_records(it, limit=bad)


def test_millis_behind_latest(stream: LocalStream, clock: FakeClock) -> None:
    _fill_one_shard(stream, 5)
    clock.advance(2.5)
    _fill_one_shard(stream, 5)
    it = stream.get_shard_iterator(S[0], StartingPosition.trim_horizon())
    first = stream.get_records(it, limit=5)
    assert first.millis_behind_latest == 2500
    assert first.next_iterator is not None
    second = stream.get_records(first.next_iterator, limit=5)
    assert second.millis_behind_latest == 0
    assert second.next_iterator is not None
    empty = stream.get_records(second.next_iterator)
    assert empty.records == []
    assert empty.millis_behind_latest == 0


def test_iterators_expire(tmp_path: Path, clock: FakeClock) -> None:
    store = LocalStreamStore(tmp_path / "s.db", clock=clock, iterator_ttl_s=60)
    store.create_stream("s", 1)
    stream = store.stream("s")
    it = stream.get_shard_iterator(S[0], StartingPosition.trim_horizon())
    clock.advance(59)
    fresh = stream.get_records(it).next_iterator
    assert fresh is not None
    clock.advance(2)
    with pytest.raises(ExpiredIteratorError, match="expired"):
        stream.get_records(it)
    assert stream.get_records(fresh).records == []  # the next iterator was issued at +59 s
    clock.advance(300)
    with pytest.raises(ExpiredIteratorError):
        stream.get_records(fresh)
    store.close()


def test_default_iterator_lifetime_is_five_minutes(stream: LocalStream, clock: FakeClock) -> None:
    it = stream.get_shard_iterator(S[0], StartingPosition.latest())
    clock.advance(299)
    stream.get_records(it)
    clock.advance(2)
    with pytest.raises(ExpiredIteratorError):
        stream.get_records(it)


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not an iterator!",
        "AAAA",
        _b64([1, 2, 3]),
        _b64({"v": 1, "s": "orders"}),
        _b64({"v": 1, "s": "orders", "i": 1, "k": 0, "p": -1, "t": 0}),
        _b64({"v": 1, "s": "orders", "i": 1, "k": 0, "p": "1", "t": 0}),
        _b64({"v": 99, "s": "orders", "i": 1, "k": 0, "p": 1, "t": 0}),
    ],
)
def test_garbage_iterators_are_invalid(stream: LocalStream, garbage: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid shard iterator") as info:
        stream.get_records(garbage)
    assert not isinstance(info.value, ExpiredIteratorError)


def test_iterator_of_another_or_recreated_stream(store: LocalStreamStore, stream: LocalStream) -> None:
    store.create_stream("other", 1)
    foreign = store.stream("other").get_shard_iterator(S[0], StartingPosition.latest())
    with pytest.raises(InvalidArgumentError, match="belongs to stream 'other'"):
        stream.get_records(foreign)
    it = stream.get_shard_iterator(S[0], StartingPosition.latest())
    store.delete_stream("orders")
    with pytest.raises(ResourceNotFoundError):
        stream.get_records(it)
    store.create_stream("orders", 4)
    with pytest.raises(ResourceNotFoundError, match="re-created"):
        stream.get_records(it)


# -- resharding ------------------------------------------------------------------------------------------


def test_split_shard(stream: LocalStream, store: LocalStreamStore) -> None:
    parent_range = stream.list_shards()[0].hash_key_range
    before = [stream.put_record(b"b%d" % i, f"k{i}", explicit_hash_key=str(i * 2**120)) for i in range(40)]
    key = 2**125
    c1, c2 = store.split_shard("orders", S[0], key)
    assert (c1.shard_id, c2.shard_id) == (S[4], S[5])
    assert c1.hash_key_range == HashKeyRange(parent_range.start, key - 1)
    assert c2.hash_key_range == HashKeyRange(key, parent_range.end)
    assert c1.parent_shard_id == c2.parent_shard_id == S[0]
    assert c1.adjacent_parent_shard_id is None

    shards = {s.shard_id: s for s in stream.list_shards()}
    parent = shards[S[0]]
    assert not parent.is_open
    assert parent.ending_sequence_number is not None
    ending = int(parent.ending_sequence_number)
    assert all(int(r.sequence_number) <= ending for r in before)
    assert int(shards[S[4]].starting_sequence_number) > ending
    assert [s.shard_id for s in stream.list_shards(ShardFilter(ShardFilterType.AT_LATEST))] == [
        S[1],
        S[2],
        S[3],
        S[4],
        S[5],
    ]

    after = [stream.put_record(b"a%d" % i, f"k{i}", explicit_hash_key=str(i * 2**120)) for i in range(40)]
    assert {r.shard_id for r in after} <= {S[4], S[5], S[1], S[2], S[3]}
    assert {S[4], S[5]} <= {r.shard_id for r in after}

    # The parent reads to its end: its records, then next_iterator None and the children.
    records, last = read_all(stream, S[0], limit=7)
    assert [r.sequence_number for r in records] == [r.sequence_number for r in before if r.shard_id == S[0]]
    assert last.next_iterator is None
    assert last.millis_behind_latest == 0
    assert [(c.shard_id, c.parent_shards, c.hash_key_range) for c in last.child_shards] == [
        (S[4], (S[0],), c1.hash_key_range),
        (S[5], (S[0],), c2.hash_key_range),
    ]
    # Child shards come only with the response that ends the shard.
    it = stream.get_shard_iterator(S[0], StartingPosition.trim_horizon())
    first = stream.get_records(it, limit=1)
    assert first.next_iterator is not None
    assert first.child_shards == []
    # LATEST on a closed shard is already its end.
    end = stream.get_records(stream.get_shard_iterator(S[0], StartingPosition.latest()))
    assert end.records == []
    assert end.next_iterator is None
    assert len(end.child_shards) == 2

    # The children hold the later records.
    child_records = read_all(stream, S[4])[0] + read_all(stream, S[5])[0]
    expected = {r.sequence_number for r in after if r.shard_id in (S[4], S[5])}
    assert {r.sequence_number for r in child_records} == expected


def test_split_rejects_bad_requests(stream: LocalStream, store: LocalStreamStore) -> None:
    start, end = 0, 2**126 - 1
    for key in (start, end + 1, -5):
        with pytest.raises(InvalidArgumentError, match="greater than 0 and at most"):
            store.split_shard("orders", S[0], key)
    store.split_shard("orders", S[0], end)  # the last key is allowed: child 2 holds one key
    with pytest.raises(InvalidStateError, match="closed"):
        store.split_shard("orders", S[0], 5)
    with pytest.raises(InvalidArgumentError, match="single hash key"):
        store.split_shard("orders", S[5], end)
    with pytest.raises(ResourceNotFoundError):
        store.split_shard("orders", "shardId-000000000099", 5)


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_merge_shards(stream: LocalStream, store: LocalStreamStore, order: str) -> None:
    a, b = (S[1], S[2]) if order == "forward" else (S[2], S[1])
    ranges = {s.shard_id: s.hash_key_range for s in stream.list_shards()}
    before = stream.put_records([(b"x", f"k{i}") for i in range(100)])
    child = store.merge_shards("orders", a, b)
    assert child.shard_id == S[4]
    assert child.parent_shard_id == a
    assert child.adjacent_parent_shard_id == b
    assert child.hash_key_range == HashKeyRange(ranges[S[1]].start, ranges[S[2]].end)
    after = stream.put_records([(b"y", f"k{i}") for i in range(100)])
    assert {r.shard_id for r in after} == {S[0], S[3], S[4]}
    listed = {s.shard_id: s for s in stream.list_shards()}
    assert listed[a].ending_sequence_number == listed[b].ending_sequence_number
    assert listed[a].ending_sequence_number is not None
    for parent in (a, b):
        records, last = read_all(stream, parent)
        assert {r.sequence_number for r in records} == {r.sequence_number for r in before if r.shard_id == parent}
        assert last.next_iterator is None
        assert [(c.shard_id, c.parent_shards) for c in last.child_shards] == [(S[4], (a, b))]
    records, _ = read_all(stream, S[4])
    assert {r.sequence_number for r in records} == {r.sequence_number for r in after if r.shard_id == S[4]}


def test_merge_rejects_bad_requests(stream: LocalStream, store: LocalStreamStore) -> None:
    with pytest.raises(InvalidArgumentError, match="not adjacent"):
        store.merge_shards("orders", S[0], S[2])
    with pytest.raises(InvalidArgumentError, match="itself"):
        store.merge_shards("orders", S[0], S[0])
    store.merge_shards("orders", S[0], S[1])
    with pytest.raises(InvalidStateError, match="closed"):
        store.merge_shards("orders", S[1], S[2])
    with pytest.raises(ResourceNotFoundError):
        store.merge_shards("orders", S[3], "shardId-000000000042")


# -- retention -------------------------------------------------------------------------------------------


def test_retention_trims_old_records(store: LocalStreamStore, clock: FakeClock) -> None:
    store.create_stream("r", 1, retention_hours=24)
    stream = store.stream("r")
    old = [stream.put_record(b"old", "k") for _ in range(5)]
    clock.advance(23 * 3600)
    newer = [stream.put_record(b"newer", "k") for _ in range(3)]
    clock.advance(3600 + 1)
    # Expired records are invisible at once, even before trim() deletes them.
    assert store.describe_stream("r").record_count == 3
    records, _ = read_all(stream, S[0])
    assert [r.sequence_number for r in records] == [r.sequence_number for r in newer]
    assert store.trim("r") == 5
    assert store.trim() == 0
    records, _ = read_all(stream, S[0], StartingPosition.at_sequence(old[0].sequence_number))
    assert [r.sequence_number for r in records] == [r.sequence_number for r in newer]


def test_puts_trim_opportunistically(store: LocalStreamStore, clock: FakeClock) -> None:
    store.create_stream("r", 1, retention_hours=1)
    for _ in range(10):
        store.put_record("r", b"x", "k")
    clock.advance(3600 + 120)
    store.put_record("r", b"y", "k")
    with sqlite3.connect(store.path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM shardwise_stream_records").fetchone()
    assert count == 1


def test_closed_shards_expire_after_retention(store: LocalStreamStore, clock: FakeClock) -> None:
    store.create_stream("r", 1, retention_hours=1)
    stream = store.stream("r")
    store.put_record("r", b"x", "k")
    clock.advance(60)
    store.split_shard("r", S[0], 2**127)
    clock.advance(1800)
    assert [s.shard_id for s in stream.list_shards()] == [S[0], S[1], S[2]]
    assert [s.shard_id for s in stream.list_shards(ShardFilter(ShardFilterType.AT_TRIM_HORIZON))] == [S[0]]
    clock.advance(1800 + 1)
    assert [s.shard_id for s in stream.list_shards()] == [S[1], S[2]]
    assert [s.shard_id for s in stream.list_shards(ShardFilter(ShardFilterType.AT_TRIM_HORIZON))] == [
        S[1],
        S[2],
    ]
    with pytest.raises(ResourceNotFoundError):
        stream.get_shard_iterator(S[0], StartingPosition.trim_horizon())
    store.trim("r")
    assert [s.shard_id for s in store.describe_stream("r").shards] == [S[1], S[2]]


# -- ListShards filters ----------------------------------------------------------------------------------


def test_shard_filters(stream: LocalStream, store: LocalStreamStore, clock: FakeClock) -> None:
    created = clock.dt()
    clock.advance(100)
    before_split = clock.dt()
    clock.advance(100)
    store.split_shard("orders", S[0], 2**100)  # at T0 + 200: S0 closes, S4/S5 open
    split_at = clock.dt()
    clock.advance(100)
    store.merge_shards("orders", S[4], S[5])  # at T0 + 300: S4/S5 close, S6 opens
    clock.advance(100)

    def ids(shard_filter: ShardFilter | None) -> list[str]:
        return [s.shard_id for s in stream.list_shards(shard_filter)]

    everything = [S[0], S[1], S[2], S[3], S[4], S[5], S[6]]
    assert ids(None) == everything
    assert ids(ShardFilter(ShardFilterType.FROM_TRIM_HORIZON)) == everything
    assert ids(ShardFilter(ShardFilterType.AT_LATEST)) == [S[1], S[2], S[3], S[6]]
    assert ids(ShardFilter(ShardFilterType.AT_TRIM_HORIZON)) == S[:4]
    assert ids(ShardFilter(ShardFilterType.AFTER_SHARD_ID, shard_id=S[3])) == [S[4], S[5], S[6]]
    at = ShardFilterType.AT_TIMESTAMP
    assert ids(ShardFilter(at, timestamp=before_split)) == S[:4]
    assert ids(ShardFilter(at, timestamp=created - timedelta(days=1))) == S[:4]
    assert ids(ShardFilter(at, timestamp=split_at + timedelta(seconds=50))) == [S[1], S[2], S[3], S[4], S[5]]
    assert ids(ShardFilter(at, timestamp=clock.dt())) == [S[1], S[2], S[3], S[6]]
    frm = ShardFilterType.FROM_TIMESTAMP
    assert ids(ShardFilter(frm, timestamp=before_split)) == everything
    assert ids(ShardFilter(frm, timestamp=split_at + timedelta(seconds=50))) == [
        S[1],
        S[2],
        S[3],
        S[4],
        S[5],
        S[6],
    ]
    assert ids(ShardFilter(frm, timestamp=clock.dt())) == [S[1], S[2], S[3], S[6]]
    assert all(s.is_open for s in stream.list_shards(ShardFilter(ShardFilterType.AT_LATEST)))


# -- the database file -----------------------------------------------------------------------------------


def test_refuses_a_file_that_is_not_a_shardwise_database(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(ConfigurationError, match=r"foreign\.db is not a shardwise database.*invoices"):
        LocalStreamStore(foreign)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UnusableStoreError, match=r"garbage\.db .*not a database"):
        LocalStreamStore(garbage)


def test_refuses_an_incompatible_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    LocalStreamStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE shardwise_stream_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(ConfigurationError, match=r"s\.db.*incompatible.*version 99"):
        LocalStreamStore(path)


def test_reopens_and_shares_a_file_with_other_shardwise_tables(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE shardwise_leases (lease_key TEXT)")
    conn.close()
    with LocalStreamStore(path) as store:
        store.create_stream("s", 2)
        store.put_record("s", b"x", "k")
    with LocalStreamStore(path) as again:
        assert again.describe_stream("s").record_count == 1


def test_a_locked_database_is_a_dependency_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with LocalStreamStore(path, busy_timeout_s=0.2) as store:
        store.create_stream("s", 1)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(DependencyError, match="locked"):
                store.put_record("s", b"x", "k")
            # Reads go on while another process writes (WAL).
            assert store.describe_stream("s").record_count == 0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.put_record("s", b"x", "k")


def test_shares_a_database_object_with_other_backends(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "shared.db")
    store = LocalStreamStore("ignored", database=database)
    assert store.path == str(tmp_path / "shared.db")
    store.create_stream("s", 1)
    store.close()  # not its database to close
    assert database.connection().execute("SELECT count(*) FROM shardwise_streams").fetchone() == (1,)
    database.close()


def test_store_is_picklable(stream: LocalStream, store: LocalStreamStore) -> None:
    stream.put_record(b"x", "k")
    copy = pickle.loads(pickle.dumps(store))  # noqa: S301 - our own bytes
    assert copy.path == store.path
    assert copy.describe_stream("orders").record_count == 1
    copy.close()


def test_threads_share_a_store(stream: LocalStream) -> None:
    errors: list[BaseException] = []

    def put(n: int) -> None:
        try:
            for i in range(100):
                stream.put_record(b"%d-%d" % (n, i), f"{n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stream.store.describe_stream("orders").record_count == 400


def _producer(path: str, worker: int, count: int) -> None:
    store = LocalStreamStore(path)
    for i in range(count):
        store.put_record("mp", b"%d:%d" % (worker, i), f"w{worker}-{i}")
    store.close()


def test_processes_put_concurrently_without_losing_records(tmp_path: Path) -> None:
    path = str(tmp_path / "mp.db")
    with LocalStreamStore(path) as store:
        store.create_stream("mp", 4)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_producer, args=(path, w, 500)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    with LocalStreamStore(path) as store:
        stream = store.stream("mp")
        all_records: list[Record] = []
        for shard in stream.list_shards():
            records, _ = read_all(stream, shard.shard_id)
            numbers = seqs(records)
            assert numbers == sorted(numbers)
            assert len(set(numbers)) == len(numbers)
            all_records += records
    assert len(all_records) == 2000
    assert len({r.sequence_number for r in all_records}) == 2000
    assert {r.data for r in all_records} == {b"%d:%d" % (w, i) for w in range(4) for i in range(500)}
    # Within each producer, later puts got larger sequence numbers.
    by_worker: dict[bytes, list[tuple[int, int]]] = {}
    for r in all_records:
        worker, index = r.data.split(b":")
        by_worker.setdefault(worker, []).append((int(index), int(r.sequence_number)))
    for pairs in by_worker.values():
        pairs.sort()
        assert [s for _, s in pairs] == sorted(s for _, s in pairs)
