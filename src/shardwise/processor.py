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
from shardwise.state.port import StateStore

__all__ = [
    "BaseRecordProcessor",
    "InitializationInput",
    "LeaseLostInput",
    "ProcessRecordsInput",
    "RecordProcessor",
    "RecordProcessorFactory",
    "ShardEndedInput",
    "ShutdownRequestedInput",
    "StatefulRecordProcessor",
    "is_stateful",
]


@dataclass(frozen=True, slots=True)
class InitializationInput:
    shard_id: str
    extended_sequence_number: ExtendedSequenceNumber
    pending_checkpoint_sequence_number: ExtendedSequenceNumber | None = None
    pending_checkpoint_state: bytes | None = None
    state: StateStore | None = None  # the shard's store, restored (stateful processors only)


@dataclass(frozen=True, slots=True)
class ProcessRecordsInput:
    records: Sequence[Record]
    checkpointer: Checkpointer
    millis_behind_latest: int | None = None
    child_shards: Sequence[ChildShard] = field(default_factory=tuple)
    state: StateStore | None = None


@dataclass(frozen=True, slots=True)
class LeaseLostInput:
    shard_id: str


@dataclass(frozen=True, slots=True)
class ShardEndedInput:
    shard_id: str
    checkpointer: Checkpointer
    state: StateStore | None = None


@dataclass(frozen=True, slots=True)
class ShutdownRequestedInput:
    shard_id: str
    checkpointer: Checkpointer
    state: StateStore | None = None


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


class StatefulRecordProcessor(BaseRecordProcessor):
    """A processor with a per-shard state store: ``process_records_input.state`` (also on the initialize,
    shard-ended and shutdown-requested inputs) is the shard's :class:`~shardwise.state.port.StateStore`, opened
    and restored by the framework before the first ``process_records``.

    Writes are pending until a commit, which the framework makes at every checkpoint (state first, then the
    lease checkpoint: the position goes into the store in the same atomic write as the data), at
    ``shard_ended``'s checkpoint, and every ``state.commit_interval_ms`` (it then checkpoints everything
    delivered). A failed ``process_records`` and ``lease_lost`` discard what is pending; records already
    committed to the store are never delivered again, so each record changes the state exactly once.

    A checkpoint at record X commits the state *as of X*: take it when the state holds the effect of exactly the
    records up to X — after applying X and before applying the next (``checkpoint(record)`` after each record
    works), or, simplest, ``checkpoint()`` without an argument once the whole batch is applied. A checkpoint at
    an earlier record after later ones were applied would commit their effects with X's position, and they would
    be applied again after a restart::

        from shardwise.state.typed import JSON, TypedView

        class Counter(StatefulRecordProcessor):
            def process_records(self, process_records_input):
                counts = TypedView(process_records_input.state, JSON)
                for record in process_records_input.records:
                    counts.put(record.partition_key, (counts.get(record.partition_key) or 0) + 1)
                process_records_input.checkpointer.checkpoint()

    A shard born of a **merge** starts with both parents' state; :meth:`merge_state` decides a key both
    parents have (by default the parent later in lease-key order wins). A split hands each child the parent's
    whole state.
    """

    stateful = True

    def merge_state(self, key: bytes, left: bytes, right: bytes) -> bytes:
        """The value of ``key`` in a merged shard whose parents hold ``left`` (the parent earlier in lease-key
        order) and ``right``. Override to combine (e.g. add counts); the default keeps ``right``."""
        return right


def is_stateful(processor: object) -> bool:
    """Whether the framework gives ``processor`` a state store: a :class:`StatefulRecordProcessor` (or any
    processor with ``stateful = True``), or an amazon-kclpy-shaped one with ``shardwise_stateful = True``."""
    return getattr(processor, "stateful", False) is True or getattr(processor, "shardwise_stateful", False) is True
