"""Checkpoint positions and (in later issues) the record-processor checkpointer."""

from shardwise.checkpoint.sequence import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    SentinelCheckpoint,
    parse_sequence_number,
)

__all__ = [
    "AT_TIMESTAMP",
    "LATEST",
    "SHARD_END",
    "TRIM_HORIZON",
    "ExtendedSequenceNumber",
    "SentinelCheckpoint",
    "parse_sequence_number",
]
