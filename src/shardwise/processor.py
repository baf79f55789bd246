"""The record-processor API: what an application implements to consume a shard.

The shape is KCL's (and amazon-kclpy v3's): one processor per shard, created by a factory, called with one
input object per callback so that fields can be added without breaking implementations::

    initialize → process_records* → lease_lost | shard_ended | shutdown_requested

* ``lease_lost``: another worker owns the shard now; checkpointing is no longer possible.
* ``shard_ended``: the shard is closed and fully delivered; the processor **must** call
  ``checkpointer.checkpoint()`` (which records ``SHARD_END``), otherwise the shard end is retried and the
  children of the shard are never processed.
* ``shutdown_requested``: the worker is stopping gracefully or hands the lease to another worker; checkpoint
  here to avoid reprocessing.

Threading: a processor instance is called by one thread at a time, but not always by the same thread (the
worker runs shard consumers on a bounded pool). Resources bound to a thread — such as a ``sqlite3``
connection with its default ``check_same_thread=True`` — must be opened per call or made shareable.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from shardwise.checkpoint.checkpointer import Checkpointer
from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.retrieval.model import ChildShard, Record

__all__ = [
    "BaseRecordProcessor",
    "InitializationInput",
    "LeaseLostInput",
    "ProcessRecordsInput",
    "RecordProcessor",
    "RecordProcessorFactory",
    "ShardEndedInput",
    "ShutdownRequestedInput",
]


@dataclass(frozen=True, slots=True)
class InitializationInput:
    shard_id: str
    extended_sequence_number: ExtendedSequenceNumber
    pending_checkpoint_sequence_number: ExtendedSequenceNumber | None = None
    pending_checkpoint_state: bytes | None = None


@dataclass(frozen=True, slots=True)
class ProcessRecordsInput:
    records: Sequence[Record]
    checkpointer: Checkpointer
    millis_behind_latest: int | None = None
    child_shards: Sequence[ChildShard] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class LeaseLostInput:
    shard_id: str


@dataclass(frozen=True, slots=True)
class ShardEndedInput:
    shard_id: str
    checkpointer: Checkpointer


@dataclass(frozen=True, slots=True)
class ShutdownRequestedInput:
    shard_id: str
    checkpointer: Checkpointer


@runtime_checkable
class RecordProcessor(Protocol):
    def initialize(self, initialization_input: InitializationInput) -> None: ...

    def process_records(self, process_records_input: ProcessRecordsInput) -> None: ...

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None: ...

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None: ...

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None: ...


RecordProcessorFactory = Callable[[], RecordProcessor]


class BaseRecordProcessor(abc.ABC):
    """A convenient base: implement ``process_records``. By default it checkpoints at shard end and on a
    shutdown request, and does nothing on initialize and lease loss."""

    def initialize(self, initialization_input: InitializationInput) -> None:
        return None

    @abc.abstractmethod
    def process_records(self, process_records_input: ProcessRecordsInput) -> None: ...

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        return None

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        shutdown_requested_input.checkpointer.checkpoint()
