"""KinesisStream / KinesisAdmin against the real Kinesis protocol (kinesis-local, kinesalite), plus the error
translation on a stubbed client.

Stand-in quirks these tests pin down (ecosystem-and-stand-ins.md B.3):

* kinesis-local answers GetRecords with an unknown/garbled iterator with HTTP 500 ``Internal Server Error``
  (code ``500``) instead of AWS's ``InvalidArgumentException``; shardwise can only report that as a
  :class:`DependencyError`. kinesalite answers correctly, and shardwise reports :class:`InvalidArgumentError`.
* kinesis-local answers ``AT_SEQUENCE_NUMBER`` with a sequence number that is not in the shard with
  ``ResourceNotFoundException`` (AWS: ``InvalidArgumentException``).
* kinesalite ignores ``MaxResults`` and ``ShardFilter`` in ListShards, and reports no ``ChildShards``.
* MillisBehindLatest is always 0 on every stand-in.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Protocol

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from shardwise.backends.aws.kinesis import KinesisAdmin, KinesisStream, PutResult
from shardwise.errors import (
    AccessDeniedError,
    ConfigurationError,
    DependencyError,
    ExpiredIteratorError,
    InvalidArgumentError,
    InvalidStateError,
    ResourceNotFoundError,
    ShardNotFoundError,
    StreamNotFoundError,
    ThrottlingError,
)
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange, hash_key_for
from shardwise.retrieval.kpl import MAGIC, aggregate
from shardwise.retrieval.model import Record, Shard, ShardFilter, ShardFilterType, StartingPosition
from shardwise.retrieval.reader import ShardReader
from shardwise.retrieval.source import StreamSource

pytestmark = pytest.mark.aws

REGION = "us-east-1"
NO_RETRIES = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=10)

StreamFactory = Callable[..., tuple[KinesisStream, KinesisAdmin]]


class Server(Protocol):
    """The stand-in fixtures of tests/conftest.py (``support`` is not importable for mypy from here)."""

    @property
    def endpoint_url(self) -> str: ...


def _factory(endpoint_url: str) -> Iterator[StreamFactory]:
    admins: list[KinesisAdmin] = []

    def make(shard_count: int = 1, **kwargs: Any) -> tuple[KinesisStream, KinesisAdmin]:
        name = f"sw-{uuid.uuid4().hex[:12]}"
        stream = KinesisStream(name, endpoint_url=endpoint_url, region_name=REGION, **kwargs)
        admin = KinesisAdmin(stream)
        admin.create(shard_count)
        admins.append(admin)
        return stream, admin

    yield make
    for admin in admins:
        with contextlib.suppress(DependencyError):
            admin.delete()


@pytest.fixture
def local_stream(kinesis_local: Server) -> Iterator[StreamFactory]:
    yield from _factory(kinesis_local.endpoint_url)


@pytest.fixture
def lite_stream(kinesalite: Server) -> Iterator[StreamFactory]:
    yield from _factory(kinesalite.endpoint_url)


def read_all(stream: StreamSource, shard: Shard | str, start: StartingPosition | None = None) -> list[Record]:
    """Everything currently readable (until an empty batch, or the shard's end)."""
    shard_id = shard if isinstance(shard, str) else shard.shard_id
    reader = ShardReader(stream, shard_id, start or StartingPosition.trim_horizon())
    records: list[Record] = []
    while True:
        batch = reader.read(limit=100)
        records.extend(batch.records)
        if batch.shard_ended or not batch.records:
            return records


def raw_client(endpoint_url: str) -> Any:
    return boto3.session.Session().client("kinesis", endpoint_url=endpoint_url, region_name=REGION, config=NO_RETRIES)


# -- listing -------------------------------------------------------------------------------------------------


def test_is_a_stream_source(local_stream: StreamFactory) -> None:
    stream, _ = local_stream()
    assert isinstance(stream, StreamSource)


def test_list_shards_follows_next_token_with_token_only_requests(local_stream: StreamFactory) -> None:
    stream, _ = local_stream(7, page_size=2)
    requests: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        requests.append(dict(params))

    stream.client.meta.events.register("provide-client-params.kinesis.ListShards", record)
    shards = stream.list_shards()
    assert [s.shard_id for s in shards] == [f"shardId-{i:012d}" for i in range(7)]
    assert len(requests) == 4
    assert requests[0] == {"StreamName": stream.stream_name, "MaxResults": 2}
    assert all(set(r) == {"NextToken", "MaxResults"} for r in requests[1:])
    # The open shards tile the whole hash-key space.
    assert shards[0].hash_key_range.start == 0
    assert shards[-1].hash_key_range.end == MAX_HASH_KEY
    for left, right in itertools.pairwise(shards):
        assert left.hash_key_range.end + 1 == right.hash_key_range.start
    assert all(s.is_open and s.parent_shard_ids == () for s in shards)


def test_stream_can_be_identified_by_arn(local_stream: StreamFactory, kinesis_local: Server) -> None:
    stream, _ = local_stream(2)
    arn = raw_client(kinesis_local.endpoint_url).describe_stream_summary(StreamName=stream.stream_name)[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    by_arn = KinesisStream(stream_arn=arn, endpoint_url=kinesis_local.endpoint_url)  # region from the ARN
    assert by_arn.stream_name == stream.stream_name
    assert by_arn.stream_arn == arn
    assert by_arn.list_shards() == stream.list_shards()
    put = KinesisAdmin(by_arn).put_record(b"via arn", "pk")
    assert [r.data for r in read_all(by_arn, put.shard_id)] == [b"via arn"]


def test_shard_filters_after_a_split(local_stream: StreamFactory) -> None:
    stream, admin = local_stream(2)
    admin.split_shard("shardId-000000000000")
    shards = {s.shard_id: s for s in stream.list_shards()}
    assert sorted(shards) == [f"shardId-{i:012d}" for i in range(4)]
    parent = shards["shardId-000000000000"]
    assert not parent.is_open
    children = [shards["shardId-000000000002"], shards["shardId-000000000003"]]
    assert all(c.parent_shard_id == parent.shard_id and c.is_open for c in children)
    assert children[0].hash_key_range.start == parent.hash_key_range.start
    assert children[1].hash_key_range.end == parent.hash_key_range.end
    assert children[0].hash_key_range.end + 1 == children[1].hash_key_range.start

    latest = stream.list_shards(ShardFilter(ShardFilterType.AT_LATEST))
    assert [s.shard_id for s in latest] == [
        "shardId-000000000001",
        "shardId-000000000002",
        "shardId-000000000003",
    ]
    after = stream.list_shards(ShardFilter(ShardFilterType.AFTER_SHARD_ID, shard_id="shardId-000000000001"))
    assert [s.shard_id for s in after] == ["shardId-000000000002", "shardId-000000000003"]
    everything = stream.list_shards(ShardFilter(ShardFilterType.FROM_TRIM_HORIZON))
    assert [s.shard_id for s in everything] == sorted(shards)


# -- reading -------------------------------------------------------------------------------------------------


def test_all_iterator_types(local_stream: StreamFactory) -> None:
    stream, admin = local_stream(1)
    (shard,) = stream.list_shards()
    puts: list[PutResult] = []
    for i in range(3):
        puts.append(admin.put_record(f"r{i}".encode(), f"pk{i}"))
        time.sleep(0.02)  # distinct arrival timestamps (millisecond resolution)
    assert all(p.shard_id == shard.shard_id for p in puts)
    assert all(int(a.sequence_number) < int(b.sequence_number) for a, b in itertools.pairwise(puts))

    def data(start: StartingPosition) -> list[bytes]:
        return [r.data for r in read_all(stream, shard, start)]

    everything = read_all(stream, shard)
    assert [r.data for r in everything] == [b"r0", b"r1", b"r2"]
    assert [r.sequence_number for r in everything] == [p.sequence_number for p in puts]
    assert [r.partition_key for r in everything] == ["pk0", "pk1", "pk2"]
    arrival = everything[1].approximate_arrival_timestamp
    assert arrival.utcoffset() == timedelta(0)
    assert not any(r.aggregated or r.sub_sequence_number for r in everything)

    assert data(StartingPosition.at_sequence(puts[1].sequence_number)) == [b"r1", b"r2"]
    assert data(StartingPosition.after_sequence(puts[1].sequence_number)) == [b"r2"]
    assert data(StartingPosition.at_timestamp(arrival)) == [b"r1", b"r2"]
    assert data(StartingPosition.at_timestamp(arrival + timedelta(milliseconds=1))) == [b"r2"]

    latest = ShardReader(stream, shard.shard_id, StartingPosition.latest())
    assert latest.read().records == []
    admin.put_record(b"r3", "pk3")
    assert [r.data for r in latest.read().records] == [b"r3"]


def test_get_records_result_fields(local_stream: StreamFactory) -> None:
    stream, admin = local_stream(1)
    (shard,) = stream.list_shards()
    admin.put_records([(b"a", "k"), (b"b", "k"), (b"c", "k")])
    iterator = stream.get_shard_iterator(shard.shard_id, StartingPosition.trim_horizon())
    first = stream.get_records(iterator, limit=2)
    assert [r.data for r in first.records] == [b"a", b"b"]
    assert first.next_iterator is not None
    assert first.millis_behind_latest == 0  # stand-ins always say 0 (B.3)
    assert first.child_shards == []
    second = stream.get_records(first.next_iterator)
    assert [r.data for r in second.records] == [b"c"]
    assert second.next_iterator is not None  # an open shard never ends


def test_put_records_reports_shard_and_sequence_in_input_order(local_stream: StreamFactory) -> None:
    stream, admin = local_stream(2)
    shards = stream.list_shards()
    entries: list[tuple[bytes, str] | tuple[bytes, str, str | None]] = [
        (f"e{i}".encode(), f"key-{i}", str(MAX_HASH_KEY) if i % 2 else None) for i in range(1200)
    ]
    results = admin.put_records(entries)
    assert len(results) == len(entries)
    for i, result in enumerate(results):
        hash_key = MAX_HASH_KEY if i % 2 else hash_key_for(f"key-{i}")
        expected = next(s for s in shards if hash_key in s.hash_key_range)
        assert result.shard_id == expected.shard_id
    read_back = {r.sequence_number: r.data for shard in shards for r in read_all(stream, shard)}
    assert [read_back[r.sequence_number] for r in results] == [e[0] for e in entries]


def test_aggregated_records_are_stored_as_one_and_deaggregated_by_the_reader(
    local_stream: StreamFactory,
) -> None:
    stream, admin = local_stream(2)
    low, high = stream.list_shards()
    keys = [f"user-{i}" for i in range(30)]
    entries: list[tuple[bytes, str, str | None]] = [(k.encode(), k, None) for k in keys]
    entries.append((b"pinned-high", "whatever", str(high.hash_key_range.start)))
    # The KPL routes an aggregate by one explicit hash key; put it into the low shard on purpose.
    put = admin.put_record(aggregate(entries), "agg", explicit_hash_key="0")
    assert put.shard_id == low.shard_id

    (raw,) = _raw_records(stream, low)  # one Kinesis record, stored as it was put
    assert raw.sequence_number == put.sequence_number
    assert raw.data.startswith(MAGIC)
    assert not raw.aggregated

    everything = ShardReader(stream, low.shard_id, StartingPosition.trim_horizon()).read().records
    assert [(r.data, r.partition_key, r.explicit_hash_key) for r in everything] == entries
    assert all(r.aggregated and r.sequence_number == put.sequence_number for r in everything)
    assert [r.sub_sequence_number for r in everything] == list(range(len(entries)))

    # With the shard's range, sub-records that hash elsewhere are dropped (what KCL does after a reshard).
    reader = ShardReader(stream, low.shard_id, StartingPosition.trim_horizon(), shard_range=low.hash_key_range)
    mine = reader.read().records
    assert [r.partition_key for r in mine] == [k for k in keys if hash_key_for(k) in low.hash_key_range]
    assert reader.last_sequence_number == put.sequence_number


def _raw_records(stream: KinesisStream, shard: Shard) -> list[Record]:
    return ShardReader(stream, shard.shard_id, StartingPosition.trim_horizon(), deaggregate=False).read().records


def test_child_shards_after_split_and_merge(local_stream: StreamFactory) -> None:
    stream, admin = local_stream(1)
    (parent,) = stream.list_shards()
    admin.put_record(b"before split", "k")
    admin.split_shard(parent.shard_id, 2**127)

    reader = ShardReader(stream, parent.shard_id, StartingPosition.trim_horizon())
    records, batch = [], reader.read()
    while not batch.shard_ended:
        records.extend(batch.records)
        batch = reader.read()
    records.extend(batch.records)
    assert [r.data for r in records] == [b"before split"]
    assert sorted(c.shard_id for c in batch.child_shards) == ["shardId-000000000001", "shardId-000000000002"]
    by_id = {c.shard_id: c for c in batch.child_shards}
    assert by_id["shardId-000000000001"].parent_shards == (parent.shard_id,)
    assert by_id["shardId-000000000001"].hash_key_range == HashKeyRange(0, 2**127 - 1)
    assert by_id["shardId-000000000002"].hash_key_range == HashKeyRange(2**127, MAX_HASH_KEY)
    assert reader.read().shard_ended  # and no more calls

    admin.put_record(b"low child", "x", explicit_hash_key="1")
    admin.merge_shards("shardId-000000000001", "shardId-000000000002")
    merged: list[str] = []
    for child in ("shardId-000000000001", "shardId-000000000002"):
        child_reader = ShardReader(stream, child, StartingPosition.trim_horizon())
        batch = child_reader.read()
        while not batch.shard_ended:
            batch = child_reader.read()
        assert len(batch.child_shards) == 1
        (grandchild,) = batch.child_shards
        assert sorted(grandchild.parent_shards) == ["shardId-000000000001", "shardId-000000000002"]
        assert grandchild.hash_key_range == HashKeyRange(0, MAX_HASH_KEY)
        merged.append(grandchild.shard_id)
    assert merged[0] == merged[1] == "shardId-000000000003"
    shards = {s.shard_id: s for s in stream.list_shards()}
    assert shards["shardId-000000000003"].parent_shard_ids == ("shardId-000000000001", "shardId-000000000002")


# -- error translation ---------------------------------------------------------------------------------------


def test_unknown_stream_is_resource_not_found(kinesis_local: Server) -> None:
    stream = KinesisStream("no-such-stream", endpoint_url=kinesis_local.endpoint_url, region_name=REGION)
    with pytest.raises(ResourceNotFoundError, match="no-such-stream") as listed:
        stream.list_shards()
    with pytest.raises(ResourceNotFoundError, match="no-such-stream") as iterated:
        stream.get_shard_iterator("shardId-000000000000", StartingPosition.trim_horizon())
    for caught in (listed, iterated):
        # The stream is missing, not one shard: permanent for a worker, and the message says what to do.
        assert type(caught.value) is StreamNotFoundError
        assert "create the stream" in str(caught.value)


def test_unknown_shard_is_shard_not_found(local_stream: StreamFactory) -> None:
    stream, _ = local_stream(1)
    with pytest.raises(ShardNotFoundError, match="shardId-000000000042"):
        stream.get_shard_iterator("shardId-000000000042", StartingPosition.trim_horizon())


def test_invalid_iterator_on_kinesis_local_is_a_dependency_error(local_stream: StreamFactory) -> None:
    stream, _ = local_stream(1)
    no_retries = KinesisStream(stream.stream_name, client=raw_client(stream.client.meta.endpoint_url))
    # Quirk (B.3): kinesis-local answers HTTP 500 where AWS answers InvalidArgumentException.
    with pytest.raises(DependencyError, match=r"GetRecords .*HTTP 500") as caught:
        no_retries.get_records("AAAAAAAAAAEnotAnIterator==")
    assert not isinstance(caught.value, InvalidArgumentError)


def test_sequence_number_outside_the_shard_on_kinesis_local(local_stream: StreamFactory) -> None:
    stream, admin = local_stream(1)
    admin.put_record(b"x", "k")
    # Quirk: kinesis-local says ResourceNotFoundException; AWS says InvalidArgumentException. (On an empty
    # shard kinesis-local even hands out an iterator.)
    with pytest.raises(ResourceNotFoundError, match="SequenceNumber"):
        stream.get_shard_iterator("shardId-000000000000", StartingPosition.at_sequence("123"))


def test_limit_out_of_range_is_rejected_before_the_call(local_stream: StreamFactory) -> None:
    stream, _ = local_stream(1)
    iterator = stream.get_shard_iterator("shardId-000000000000", StartingPosition.trim_horizon())
    for limit in (0, 10_001):
        with pytest.raises(InvalidArgumentError, match="limit"):
            stream.get_records(iterator, limit=limit)


def test_unreachable_endpoint_is_a_dependency_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once the socket is closed: nothing listens there
    endpoint = f"http://127.0.0.1:{port}"
    stream = KinesisStream("s", client=raw_client(endpoint))
    with pytest.raises(DependencyError, match="ListShards on stream 's'"):
        stream.list_shards()


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ExpiredIteratorException", 400, ExpiredIteratorError),
        ("ProvisionedThroughputExceededException", 400, ThrottlingError),
        ("LimitExceededException", 400, ThrottlingError),
        ("KMSThrottlingException", 400, ThrottlingError),
        ("ResourceNotFoundException", 400, StreamNotFoundError),
        ("InvalidArgumentException", 400, InvalidArgumentError),
        ("ResourceInUseException", 400, InvalidStateError),
        ("KMSAccessDeniedException", 400, AccessDeniedError),
        ("AccessDeniedException", 400, AccessDeniedError),
        ("UnrecognizedClientException", 400, AccessDeniedError),
        ("InvalidSignatureException", 403, AccessDeniedError),
        ("ExpiredTokenException", 403, AccessDeniedError),
        ("InternalFailure", 500, DependencyError),
        ("ServiceUnavailable", 503, DependencyError),
    ],
)
def test_client_errors_are_translated(code: str, status: int, expected: type[Exception]) -> None:
    client = boto3.session.Session().client("kinesis", region_name=REGION, config=NO_RETRIES)
    stream = KinesisStream("translated", client=client, data_client="boto3")  # Stubber: boto3 path
    with Stubber(client) as stubber:
        stubber.add_client_error("get_records", service_error_code=code, http_status_code=status)
        with pytest.raises(expected, match=rf"GetRecords on stream 'translated': {code}") as caught:
            stream.get_records("iterator")
    assert type(caught.value) is expected


def test_put_records_retries_failed_entries_then_gives_up() -> None:
    client = boto3.session.Session().client("kinesis", region_name=REGION, config=NO_RETRIES)
    admin = KinesisAdmin(KinesisStream("retry", client=client))
    throttled = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}
    ok = {"ShardId": "shardId-000000000000", "SequenceNumber": "1"}
    with Stubber(client) as stubber:
        stubber.add_response("put_records", {"FailedRecordCount": 1, "Records": [ok, throttled]})
        stubber.add_response("put_records", {"Records": [{**ok, "SequenceNumber": "2"}]})
        results = admin.put_records([(b"a", "k"), (b"b", "k")], backoff_s=0)
        assert results == [PutResult("shardId-000000000000", "1"), PutResult("shardId-000000000000", "2")]
        stubber.add_response("put_records", {"FailedRecordCount": 1, "Records": [throttled]})
        stubber.add_response("put_records", {"FailedRecordCount": 1, "Records": [throttled]})
        with pytest.raises(ThrottlingError, match="1 record"):
            admin.put_records([(b"c", "k")], max_attempts=2, backoff_s=0)


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        KinesisStream()
    with pytest.raises(ConfigurationError, match="not a Kinesis stream ARN"):
        KinesisStream(stream_arn="arn:aws:sqs:us-east-1:1:queue")
    with pytest.raises(ConfigurationError, match="does not match"):
        KinesisStream("a", stream_arn="arn:aws:kinesis:us-east-1:000000000000:stream/b", region_name=REGION)
    with pytest.raises(ConfigurationError, match="page_size"):
        KinesisStream("a", region_name=REGION, page_size=0)


# -- kinesalite ----------------------------------------------------------------------------------------------


def test_kinesalite_put_and_get(lite_stream: StreamFactory) -> None:
    stream, admin = lite_stream(3, page_size=1)
    shards = stream.list_shards()  # kinesalite ignores MaxResults: one page
    assert [s.shard_id for s in shards] == [f"shardId-{i:012d}" for i in range(3)]
    entries: list[tuple[bytes, str] | tuple[bytes, str, str | None]] = [(f"v{i}".encode(), f"k{i}") for i in range(50)]
    puts = admin.put_records(entries)
    entries.append((aggregate([(b"sub0", "s0", None), (b"sub1", "s1", None)]), "agg"))
    puts.append(admin.put_record(entries[-1][0], "agg"))
    got = {shard.shard_id: read_all(stream, shard) for shard in shards}
    for put, entry in zip(puts[:-1], entries[:-1], strict=True):
        assert any(r.sequence_number == put.sequence_number and r.data == entry[0] for r in got[put.shard_id])
    agg = [r for r in got[puts[-1].shard_id] if r.aggregated]
    assert [(r.data, r.sub_sequence_number) for r in agg] == [(b"sub0", 0), (b"sub1", 1)]


def test_kinesalite_rejects_an_invalid_iterator_correctly(lite_stream: StreamFactory) -> None:
    stream, _ = lite_stream(1)
    with pytest.raises(InvalidArgumentError):
        stream.get_records("AAAAAAAAAAEnotAnIterator==")


def test_kinesalite_closed_shard_ends_without_child_shards(lite_stream: StreamFactory) -> None:
    stream, admin = lite_stream(1)
    admin.put_record(b"x", "k")
    admin.split_shard("shardId-000000000000")
    reader = ShardReader(stream, "shardId-000000000000", StartingPosition.trim_horizon())
    batch = reader.read()
    while not batch.shard_ended:
        batch = reader.read()
    assert batch.child_shards == []  # quirk: kinesalite reports no ChildShards
    assert len(stream.list_shards()) == 3


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Stream translated under account 123456789012 not found.", StreamNotFoundError),  # AWS, kinesalite
        ("Stream arn arn:aws:kinesis:us-east-1:0:stream/translated not found", StreamNotFoundError),  # kinesis-local
        ("Shard shardId-000000000007 in stream translated under account 1 does not exist", ShardNotFoundError),
        ("Could not find shardId shardId-000000000007 in stream translated", ShardNotFoundError),
        ("Unable to find record with provided SequenceNumber SequenceNumber(1) in stream Some(t)", ShardNotFoundError),
    ],
)
def test_a_missing_shard_is_told_from_a_missing_stream(message: str, expected: type[Exception]) -> None:
    client = boto3.session.Session().client("kinesis", region_name=REGION, config=NO_RETRIES)
    stream = KinesisStream("translated", client=client, data_client="boto3")  # Stubber: boto3 path
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "get_shard_iterator", service_error_code="ResourceNotFoundException", service_message=message
        )
        with pytest.raises(expected) as caught:
            stream.get_shard_iterator("shardId-000000000007", StartingPosition.trim_horizon())
    assert type(caught.value) is expected
