"""KPL aggregated records: detection, de-aggregation (as KCL does it) and aggregation.

The Kinesis Producer Library packs many user records into one Kinesis record. Its data is::

    MAGIC (F3 89 9A C2) + protobuf AggregatedRecord + MD5(protobuf bytes) (16 bytes)

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;
    }
    message Tag { required string key = 1; optional string value = 2; }

The protobuf decoder here is deliberately small and defensive: every loop consumes at least one byte per step,
lengths are bounds-checked before use, varints are capped at 10 bytes / 64 bits and group nesting at
``_MAX_GROUP_DEPTH``. Anything it cannot read makes :func:`deaggregate` pass the Kinesis record through
unchanged (KCL behaviour, kcl-protocol.md §8.4); it never raises.

Decoding follows the Java protobuf runtime that KCL uses where the format leaves room: unknown fields of
every wire type (including groups) are skipped, a known field number arriving with an unexpected wire type is
skipped as an unknown field, the last occurrence of a singular field wins, missing *required* fields make the
message malformed, and invalid UTF-8 in strings is replaced with U+FFFD rather than rejected.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from shardwise.hashkeys import HashKeyRange, hash_key_for, parse_hash_key
from shardwise.retrieval.model import Record

__all__ = ["MAGIC", "aggregate", "deaggregate", "is_aggregated"]

logger = logging.getLogger(__name__)

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST_SIZE = 16
_MIN_SIZE = len(MAGIC) + _DIGEST_SIZE

_WT_VARINT = 0
_WT_FIXED64 = 1
_WT_LEN = 2
_WT_START_GROUP = 3
_WT_END_GROUP = 4
_WT_FIXED32 = 5

_MAX_VARINT_BYTES = 10
_UINT64_MAX = 2**64 - 1
_MAX_FIELD_NUMBER = 2**29 - 1
_MAX_GROUP_DEPTH = 64


class _MalformedError(Exception):
    """The protobuf body cannot be read. Private: never escapes :func:`deaggregate`."""


def is_aggregated(data: bytes) -> bool:
    """Whether ``data`` is a KPL aggregated record: the magic prefix, room for the digest, and a matching MD5
    of the protobuf body. (The body itself is only parsed by :func:`deaggregate`.)"""
    return (
        len(data) >= _MIN_SIZE
        and data.startswith(MAGIC)
        and hashlib.md5(memoryview(data)[len(MAGIC) : -_DIGEST_SIZE]).digest() == data[-_DIGEST_SIZE:]
    )


def deaggregate(record: Record, shard_range: HashKeyRange | None = None) -> list[Record]:
    """The user records inside ``record``.

    * Not aggregated (no magic prefix): ``[record]`` unchanged.
    * Aggregated and well-formed: one record per sub-record, in order, each with the parent's sequence number
      and arrival time, ``sub_sequence_number`` = its index in the aggregate, keys from the tables and
      ``aggregated=True``. With ``shard_range``, sub-records whose effective hash key (the explicit hash key,
      else the MD5 of the partition key) lies outside it are dropped, as KCL does; the survivors keep their
      original indices as sub-sequence numbers, so positions stay stable.
    * Magic prefix but malformed (too short, MD5 mismatch, bad protobuf, table index out of range, an explicit
      hash key that is not a hash key): ``[record]`` unchanged, with a warning naming the sequence number.

    Never raises.
    """
    data = record.data
    if not data.startswith(MAGIC):
        return [record]
    try:
        if len(data) < _MIN_SIZE:
            raise _MalformedError(f"only {len(data)} bytes, too short for the magic prefix and MD5 digest")
        body = memoryview(data)[len(MAGIC) : -_DIGEST_SIZE]  # no copy of the whole blob
        if hashlib.md5(body).digest() != data[-_DIGEST_SIZE:]:
            raise _MalformedError("MD5 digest does not match the protobuf body")
        entries = _decode_aggregated_record(body)
    except _MalformedError as exc:
        _warn_passthrough(record, str(exc))
        return [record]
    except Exception as exc:  # a bug in the decoder must not stop a shard; keep the data flowing
        _warn_passthrough(record, f"unexpected {type(exc).__name__}: {exc}")
        return [record]

    result: list[Record] = []
    for index, (sub_data, partition_key, explicit_hash_key, effective_hash_key) in enumerate(entries):
        if shard_range is not None and effective_hash_key not in shard_range:
            logger.debug(
                "dropping sub-record %s/%d: hash key %d is outside the shard's range [%d, %d]",
                record.sequence_number,
                index,
                effective_hash_key,
                shard_range.start,
                shard_range.end,
            )
            continue
        result.append(
            Record(
                data=sub_data,
                partition_key=partition_key,
                sequence_number=record.sequence_number,
                approximate_arrival_timestamp=record.approximate_arrival_timestamp,
                sub_sequence_number=index,
                explicit_hash_key=explicit_hash_key,
                aggregated=True,
            )
        )
    return result


def aggregate(entries: Iterable[tuple[bytes, str, str | None]]) -> bytes:
    """Build the data of one aggregated record from ``(data, partition_key, explicit_hash_key)`` entries.

    The partition-key and explicit-hash-key tables are de-duplicated (first occurrence order). Raises
    ``ValueError`` for an explicit hash key that is not a decimal hash key.
    """
    partition_keys: dict[str, int] = {}
    explicit_hash_keys: dict[str, int] = {}
    records: list[bytes] = []
    for data, partition_key, explicit_hash_key in entries:
        pk_index = partition_keys.setdefault(partition_key, len(partition_keys))
        fields = [_encode_varint_field(1, pk_index)]
        if explicit_hash_key is not None:
            parse_hash_key(explicit_hash_key)
            ehk_index = explicit_hash_keys.setdefault(explicit_hash_key, len(explicit_hash_keys))
            fields.append(_encode_varint_field(2, ehk_index))
        fields.append(_encode_len_field(3, bytes(data)))
        records.append(_encode_len_field(3, b"".join(fields)))
    body = b"".join(
        [
            *(_encode_len_field(1, key.encode("utf-8")) for key in partition_keys),
            *(_encode_len_field(2, key.encode("utf-8")) for key in explicit_hash_keys),
            *records,
        ]
    )
    return MAGIC + body + hashlib.md5(body).digest()


def _warn_passthrough(record: Record, problem: str) -> None:
    logger.warning(
        "record %s (partition key %r) starts with the KPL magic bytes but is not a valid aggregated record "
        "(%s); delivering it unchanged as one record",
        record.sequence_number,
        record.partition_key,
        problem,
    )


# -- decoding ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _SubRecord:
    partition_key_index: int
    explicit_hash_key_index: int | None
    data: bytes


class _Reader:
    """A cursor over ``buf[pos:end]``. Every method either advances or raises ``_MalformedError``."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: memoryview, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def at_end(self) -> bool:
        return self.pos >= self.end

    def varint(self) -> int:
        result = 0
        for i in range(_MAX_VARINT_BYTES):
            if self.pos >= self.end:
                raise _MalformedError(f"truncated varint at offset {self.pos}")
            byte = self.buf[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if result > _UINT64_MAX:
                    raise _MalformedError("varint does not fit in 64 bits")
                return result
        raise _MalformedError(f"varint longer than {_MAX_VARINT_BYTES} bytes")

    def tag(self) -> tuple[int, int]:
        key = self.varint()
        field_number, wire_type = key >> 3, key & 0x7
        if not 1 <= field_number <= _MAX_FIELD_NUMBER:
            raise _MalformedError(f"invalid field number {field_number}")
        if wire_type > _WT_FIXED32:
            raise _MalformedError(f"invalid wire type {wire_type} for field {field_number}")
        return field_number, wire_type

    def advance(self, count: int) -> int:
        """Skip ``count`` bytes and return where they started."""
        if count > self.end - self.pos:
            raise _MalformedError(f"field of {count} bytes at offset {self.pos} runs past its message")
        start = self.pos
        self.pos += count
        return start

    def length_delimited(self) -> tuple[int, int]:
        """The ``(start, end)`` of a length-delimited payload; the cursor moves past it."""
        length = self.varint()
        start = self.advance(length)
        return start, start + length

    def skip(self, field_number: int, wire_type: int) -> None:
        """Skip the value of a field whose tag has just been read (groups included, iteratively)."""
        open_groups: list[int] = []
        while True:
            if wire_type == _WT_VARINT:
                self.varint()
            elif wire_type == _WT_FIXED64:
                self.advance(8)
            elif wire_type == _WT_FIXED32:
                self.advance(4)
            elif wire_type == _WT_LEN:
                self.length_delimited()
            elif wire_type == _WT_START_GROUP:
                if len(open_groups) >= _MAX_GROUP_DEPTH:
                    raise _MalformedError("groups nested too deeply")
                open_groups.append(field_number)
            else:  # _WT_END_GROUP
                if not open_groups or open_groups[-1] != field_number:
                    raise _MalformedError(f"unmatched end-group tag for field {field_number}")
                open_groups.pop()
            if not open_groups:
                return
            if self.at_end():
                raise _MalformedError("group not closed before the end of its message")
            field_number, wire_type = self.tag()


def _decode_string(buf: memoryview, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


def _decode_aggregated_record(body: memoryview) -> list[tuple[bytes, str, str | None, int]]:
    """``(data, partition_key, explicit_hash_key, effective_hash_key)`` for each sub-record, in order."""
    reader = _Reader(body, 0, len(body))
    partition_keys: list[str] = []
    explicit_hash_keys: list[str] = []
    sub_records: list[_SubRecord] = []
    while not reader.at_end():
        field_number, wire_type = reader.tag()
        if field_number == 1 and wire_type == _WT_LEN:
            partition_keys.append(_decode_string(body, *reader.length_delimited()))
        elif field_number == 2 and wire_type == _WT_LEN:
            explicit_hash_keys.append(_decode_string(body, *reader.length_delimited()))
        elif field_number == 3 and wire_type == _WT_LEN:
            sub_records.append(_decode_record(body, *reader.length_delimited()))
        else:
            reader.skip(field_number, wire_type)

    # Tables may come after the records on the wire, so indices are resolved only once everything is read.
    entries: list[tuple[bytes, str, str | None, int]] = []
    parsed_hash_keys: dict[int, int] = {}
    for index, sub in enumerate(sub_records):
        if sub.partition_key_index >= len(partition_keys):
            raise _MalformedError(
                f"sub-record {index}: partition key index {sub.partition_key_index} is outside the table "
                f"of {len(partition_keys)}"
            )
        partition_key = partition_keys[sub.partition_key_index]
        explicit_hash_key: str | None = None
        ehk_index = sub.explicit_hash_key_index
        if ehk_index is None:
            effective = hash_key_for(partition_key)
        else:
            if ehk_index >= len(explicit_hash_keys):
                raise _MalformedError(
                    f"sub-record {index}: explicit hash key index {ehk_index} is outside the table "
                    f"of {len(explicit_hash_keys)}"
                )
            explicit_hash_key = explicit_hash_keys[ehk_index]
            if ehk_index not in parsed_hash_keys:
                try:
                    parsed_hash_keys[ehk_index] = parse_hash_key(explicit_hash_key)
                except ValueError as exc:
                    raise _MalformedError(f"sub-record {index}: {exc}") from None
            effective = parsed_hash_keys[ehk_index]
        entries.append((sub.data, partition_key, explicit_hash_key, effective))
    return entries


def _decode_record(buf: memoryview, start: int, end: int) -> _SubRecord:
    reader = _Reader(buf, start, end)
    partition_key_index: int | None = None
    explicit_hash_key_index: int | None = None
    data: bytes | None = None
    while not reader.at_end():
        field_number, wire_type = reader.tag()
        if field_number == 1 and wire_type == _WT_VARINT:
            partition_key_index = reader.varint()
        elif field_number == 2 and wire_type == _WT_VARINT:
            explicit_hash_key_index = reader.varint()
        elif field_number == 3 and wire_type == _WT_LEN:
            data_start, data_end = reader.length_delimited()
            data = bytes(buf[data_start:data_end])
        elif field_number == 4 and wire_type == _WT_LEN:
            _check_tag(buf, *reader.length_delimited())
        else:
            reader.skip(field_number, wire_type)
    if partition_key_index is None:
        raise _MalformedError("sub-record without its required partition_key_index")
    if data is None:
        raise _MalformedError("sub-record without its required data")
    return _SubRecord(partition_key_index, explicit_hash_key_index, data)


def _check_tag(buf: memoryview, start: int, end: int) -> None:
    """Validate a ``Tag`` (its required key must be present); tags are not exposed."""
    reader = _Reader(buf, start, end)
    has_key = False
    while not reader.at_end():
        field_number, wire_type = reader.tag()
        if field_number in (1, 2) and wire_type == _WT_LEN:
            reader.length_delimited()
            has_key = has_key or field_number == 1
        else:
            reader.skip(field_number, wire_type)
    if not has_key:
        raise _MalformedError("tag without its required key")


# -- encoding ----------------------------------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_varint_field(field_number: int, value: int) -> bytes:
    return _encode_varint(field_number << 3 | _WT_VARINT) + _encode_varint(value)


def _encode_len_field(field_number: int, payload: bytes) -> bytes:
    return _encode_varint(field_number << 3 | _WT_LEN) + _encode_varint(len(payload)) + payload
