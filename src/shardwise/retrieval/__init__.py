"""Retrieval: the ``StreamSource`` port, its backends (Kinesis, local SQLite stream), KPL de-aggregation."""

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
from shardwise.retrieval.source import StreamSource

__all__ = [
    "ChildShard",
    "GetRecordsResult",
    "IteratorType",
    "Record",
    "Shard",
    "ShardFilter",
    "ShardFilterType",
    "StartingPosition",
    "StreamSource",
]
