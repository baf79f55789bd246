"""The fast data-plane client's wire format: Kinesis's JSON 1.1 requests and answers for GetRecords and
GetShardIterator, encoded and decoded with ``msgspec``.

Answers are decoded into typed structs in C — ``Data`` typed as ``bytes``, so msgspec undoes the base64 itself;
``ApproximateArrivalTimestamp`` (epoch seconds) typed as ``datetime``, so msgspec makes the aware UTC datetime
itself — and then turned into :class:`~shardwise.retrieval.model.Record` values. ``bench/bench_decode.py`` measures
this against botocore's parser and against CBOR (``application/x-amz-cbor-1.1``, which Kinesis also speaks).

A body that is not the documented shape raises :class:`ValueError` (the caller's ``_parsing`` block turns it into
a :class:`~shardwise.errors.DependencyError`, as it does for the boto3 client's answers). Error answers are read
as botocore reads them
(:func:`~shardwise.backends.aws.signed_http.error_parts`), so both clients see the same code and message.
"""

from __future__ import annotations

import calendar
import dataclasses
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import msgspec

from shardwise.backends.aws.signed_http import error_parts
from shardwise.hashkeys import HashKeyRange, parse_hash_key
from shardwise.retrieval.model import ChildShard, GetRecordsResult, Record

__all__ = [
    "decode_get_records",
    "decode_shard_iterator",
    "encode_request",
    "epoch_seconds",
    "error_parts",
]


class _Record(msgspec.Struct, rename="pascal", gc=False):
    data: bytes
    sequence_number: str
    partition_key: str = ""
    approximate_arrival_timestamp: datetime | None = None


class _HashKeyRange(msgspec.Struct, rename="pascal", gc=False):
    starting_hash_key: str
    ending_hash_key: str


class _ChildShard(msgspec.Struct, rename="pascal"):
    shard_id: str
    parent_shards: list[str]
    hash_key_range: _HashKeyRange


class _GetRecordsOutput(msgspec.Struct, rename="pascal"):
    records: list[_Record] = []
    next_shard_iterator: str | None = None
    millis_behind_latest: int | None = None
    child_shards: list[_ChildShard] | None = None


class _GetShardIteratorOutput(msgspec.Struct, rename="pascal"):
    shard_iterator: str | None = None


# strict=False: epoch-second numbers decode into datetimes (UTC).
_GET_RECORDS = msgspec.json.Decoder(_GetRecordsOutput, strict=False)
_GET_SHARD_ITERATOR = msgspec.json.Decoder(_GetShardIteratorOutput)
_ENCODER = msgspec.json.Encoder()


def _record_maker() -> Callable[[bytes, str, str, datetime], Record]:
    """``Record(data, partition_key, sequence_number, arrival)`` — at half the cost of the frozen dataclass's
    ``__init__`` (which sets each field through ``object.__setattr__``) by setting its slots directly, with the
    defaults of the other fields. Used only while ``Record`` has exactly the fields below and no ``__post_init__``
    (else ``Record`` itself), so it cannot build a record ``Record(...)`` would not."""
    names = ("data", "partition_key", "sequence_number", "approximate_arrival_timestamp")
    defaults = {"sub_sequence_number": 0, "explicit_hash_key": None, "aggregated": False}
    fields = {field.name: field.default for field in dataclasses.fields(Record)}
    if fields != {**dict.fromkeys(names, dataclasses.MISSING), **defaults} or hasattr(Record, "__post_init__"):
        return Record
    slots = vars(Record)
    set_data, set_key, set_sequence, set_arrival, set_sub, set_hash, set_aggregated = (
        slots[name].__set__ for name in (*names, *defaults)
    )
    new = object.__new__

    def make(data: bytes, partition_key: str, sequence_number: str, arrival: datetime) -> Record:
        record: Record = new(Record)
        set_data(record, data)
        set_key(record, partition_key)
        set_sequence(record, sequence_number)
        set_arrival(record, arrival)
        set_sub(record, 0)
        set_hash(record, None)
        set_aggregated(record, False)
        return record

    return make


_new_record = _record_maker()


def encode_request(request: dict[str, Any]) -> bytes:
    """The JSON body of a request (``datetime`` values must already be epoch seconds: :func:`epoch_seconds`)."""
    return _ENCODER.encode(request)


def epoch_seconds(value: datetime) -> int | float:
    """A timestamp as botocore's JSON serializer writes it: whole seconds, or seconds with microseconds."""
    whole = calendar.timegm(value.utctimetuple())
    return (whole * 10**6 + value.microsecond) / 10**6 if value.microsecond else whole


def decode_get_records(body: bytes) -> GetRecordsResult:
    """A GetRecords answer as a :class:`GetRecordsResult`; :class:`ValueError` if it is not one."""
    try:
        output = _GET_RECORDS.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"GetRecords answer does not decode: {exc}") from exc
    now: datetime | None = None
    records: list[Record] = []
    append = records.append
    new_record = _new_record
    for item in output.records:
        arrival = item.approximate_arrival_timestamp
        if arrival is None:
            arrival = now = now or datetime.now(timezone.utc)
        elif arrival.tzinfo is None:  # an ISO string without a zone: taken as UTC, as on the boto3 path
            arrival = arrival.replace(tzinfo=timezone.utc)
        append(new_record(item.data, item.partition_key, item.sequence_number, arrival))
    children = [
        ChildShard(
            shard_id=child.shard_id,
            parent_shards=tuple(child.parent_shards),
            hash_key_range=HashKeyRange(
                parse_hash_key(child.hash_key_range.starting_hash_key),
                parse_hash_key(child.hash_key_range.ending_hash_key),
            ),
        )
        for child in output.child_shards or ()
    ]
    return GetRecordsResult(
        records=records,
        next_iterator=output.next_shard_iterator or None,
        millis_behind_latest=output.millis_behind_latest,
        child_shards=children,
    )


def decode_shard_iterator(body: bytes) -> str | None:
    """The ``ShardIterator`` of a GetShardIterator answer (``None`` when it has none); :class:`ValueError` if the
    body is not such an answer."""
    try:
        return _GET_SHARD_ITERATOR.decode(body).shard_iterator
    except msgspec.DecodeError as exc:
        raise ValueError(f"GetShardIterator answer does not decode: {exc}") from exc
