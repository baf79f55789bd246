"""Value types of the stream side: shards, records, starting positions, GetRecords results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.hashkeys import HashKeyRange

__all__ = [
    "ChildShard",
    "GetRecordsResult",
    "IteratorType",
    "Record",
    "Shard",
    "ShardFilter",
    "ShardFilterType",
    "StartingPosition",
]


class IteratorType(str, enum.Enum):
    """Kinesis ``ShardIteratorType`` values."""

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"
    AT_SEQUENCE_NUMBER = "AT_SEQUENCE_NUMBER"
    AFTER_SEQUENCE_NUMBER = "AFTER_SEQUENCE_NUMBER"


@dataclass(frozen=True, slots=True)
class StartingPosition:
    """Where a shard iterator starts. ``sequence_number`` goes with the *_SEQUENCE_NUMBER types and
    ``timestamp`` (timezone-aware) with AT_TIMESTAMP."""

    type: IteratorType
    sequence_number: str | None = None
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        needs_seq = self.type in (IteratorType.AT_SEQUENCE_NUMBER, IteratorType.AFTER_SEQUENCE_NUMBER)
        if needs_seq != (self.sequence_number is not None):
            raise ValueError(f"{self.type.value} {'needs' if needs_seq else 'takes no'} sequence_number")
        if (self.type is IteratorType.AT_TIMESTAMP) != (self.timestamp is not None):
            raise ValueError("AT_TIMESTAMP (and only it) needs a timestamp")
        if self.timestamp is not None and self.timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")

    @classmethod
    def trim_horizon(cls) -> StartingPosition:
        return cls(IteratorType.TRIM_HORIZON)

    @classmethod
    def latest(cls) -> StartingPosition:
        return cls(IteratorType.LATEST)

    @classmethod
    def at_timestamp(cls, timestamp: datetime) -> StartingPosition:
        return cls(IteratorType.AT_TIMESTAMP, timestamp=timestamp)

    @classmethod
    def at_sequence(cls, sequence_number: str) -> StartingPosition:
        return cls(IteratorType.AT_SEQUENCE_NUMBER, sequence_number=sequence_number)

    @classmethod
    def after_sequence(cls, sequence_number: str) -> StartingPosition:
        return cls(IteratorType.AFTER_SEQUENCE_NUMBER, sequence_number=sequence_number)


class ShardFilterType(str, enum.Enum):
    """Kinesis ``ShardFilter`` types for ListShards."""

    AFTER_SHARD_ID = "AFTER_SHARD_ID"
    AT_TRIM_HORIZON = "AT_TRIM_HORIZON"
    FROM_TRIM_HORIZON = "FROM_TRIM_HORIZON"
    AT_LATEST = "AT_LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"
    FROM_TIMESTAMP = "FROM_TIMESTAMP"


@dataclass(frozen=True, slots=True)
class ShardFilter:
    type: ShardFilterType
    shard_id: str | None = None
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if (self.type is ShardFilterType.AFTER_SHARD_ID) != (self.shard_id is not None):
            raise ValueError("AFTER_SHARD_ID (and only it) needs shard_id")
        needs_ts = self.type in (ShardFilterType.AT_TIMESTAMP, ShardFilterType.FROM_TIMESTAMP)
        if needs_ts != (self.timestamp is not None):
            raise ValueError(f"{self.type.value} {'needs' if needs_ts else 'takes no'} timestamp")


@dataclass(frozen=True, slots=True)
class Shard:
    """A shard as ListShards describes it. ``ending_sequence_number`` is set once the shard is closed."""

    shard_id: str
    hash_key_range: HashKeyRange
    starting_sequence_number: str
    ending_sequence_number: str | None = None
    parent_shard_id: str | None = None
    adjacent_parent_shard_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.ending_sequence_number is None

    @property
    def parent_shard_ids(self) -> tuple[str, ...]:
        return tuple(p for p in (self.parent_shard_id, self.adjacent_parent_shard_id) if p is not None)


@dataclass(frozen=True, slots=True)
class ChildShard:
    """A child reported by GetRecords at the end of a closed shard."""

    shard_id: str
    parent_shards: tuple[str, ...]
    hash_key_range: HashKeyRange


@dataclass(frozen=True, slots=True)
class Record:
    """One user record. KPL sub-records of an aggregated record share ``sequence_number`` and differ in
    ``sub_sequence_number``; ``aggregated`` tells them apart from plain records (sub-sequence 0)."""

    data: bytes
    partition_key: str
    sequence_number: str
    approximate_arrival_timestamp: datetime
    sub_sequence_number: int = 0
    explicit_hash_key: str | None = None
    aggregated: bool = False

    @property
    def extended_sequence_number(self) -> ExtendedSequenceNumber:
        return ExtendedSequenceNumber(self.sequence_number, self.sub_sequence_number)


@dataclass(frozen=True, slots=True)
class GetRecordsResult:
    """One GetRecords response. ``next_iterator`` is ``None`` when a closed shard has been read to its end;
    ``child_shards`` is then the list of its children (empty for an open shard)."""

    records: list[Record]
    next_iterator: str | None
    millis_behind_latest: int | None = None
    child_shards: list[ChildShard] = field(default_factory=list)
