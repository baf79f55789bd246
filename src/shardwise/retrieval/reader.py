"""Read one shard without handling shard iterators: :class:`ShardReader`.

The reader owns the shard iterator. It remembers the sequence number of the last *Kinesis* record it returned
(for an aggregated KPL record, the parent's sequence number: the parent is one Kinesis record and all of its
sub-records are delivered together), so that when an iterator expires it can ask for a new one
``AFTER_SEQUENCE_NUMBER`` of it, as KCL does, without losing or repeating records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from shardwise.errors import ExpiredIteratorError
from shardwise.hashkeys import HashKeyRange
from shardwise.retrieval.kpl import deaggregate as deaggregate_record
from shardwise.retrieval.model import ChildShard, Record, StartingPosition
from shardwise.retrieval.source import StreamSource

__all__ = ["ReadBatch", "ShardReader"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """What one :meth:`ShardReader.read` returned.

    ``records`` are user records (after KPL de-aggregation, if enabled). ``shard_ended`` is true once the
    shard is closed and read to its end; the batch that first reports it carries the ``child_shards`` (when
    the backend reports them), later ones are empty.
    """

    records: list[Record]
    millis_behind_latest: int | None = None
    shard_ended: bool = False
    child_shards: list[ChildShard] = field(default_factory=list)


class ShardReader:
    """Polls one shard of a :class:`~shardwise.retrieval.source.StreamSource` from ``start``.

    * ``shard_range``: the shard's hash-key range; KPL sub-records outside it are dropped (KCL behaviour after
      resharding). ``None`` keeps every sub-record.
    * ``deaggregate``: expand KPL aggregated records into their sub-records (default), or deliver them as
      stored.

    On :class:`~shardwise.errors.ExpiredIteratorError` the reader gets a fresh iterator
    ``AFTER_SEQUENCE_NUMBER`` of the last record it returned (or at ``start`` if it has returned none) and
    retries once. A second expiry propagates (the next :meth:`read` starts from a fresh iterator); other
    errors propagate and keep the iterator. Either way the next :meth:`read` resumes from the same position.
    Not thread-safe: one reader per shard consumer.
    """

    def __init__(
        self,
        source: StreamSource,
        shard_id: str,
        start: StartingPosition,
        *,
        shard_range: HashKeyRange | None = None,
        deaggregate: bool = True,
    ) -> None:
        self._source = source
        self._shard_id = shard_id
        self._start = start
        self._shard_range = shard_range
        self._deaggregate = deaggregate
        self._iterator: str | None = None
        self._last_sequence_number: str | None = None
        self._ended = False
        self._child_shards: list[ChildShard] = []

    def __repr__(self) -> str:
        return f"ShardReader({self._source.stream_name!r}, {self._shard_id!r}, at {self.position})"

    @property
    def shard_id(self) -> str:
        return self._shard_id

    @property
    def last_sequence_number(self) -> str | None:
        """Sequence number of the last Kinesis record returned (the parent's, for aggregated records)."""
        return self._last_sequence_number

    @property
    def position(self) -> StartingPosition:
        """Where a new iterator would start: after the last record returned, or the original start."""
        if self._last_sequence_number is not None:
            return StartingPosition.after_sequence(self._last_sequence_number)
        return self._start

    @property
    def shard_ended(self) -> bool:
        return self._ended

    @property
    def child_shards(self) -> list[ChildShard]:
        """The children reported at the shard's end (empty before it, or if the backend reports none)."""
        return list(self._child_shards)

    def read(self, limit: int = 10_000) -> ReadBatch:
        """The next records (up to ``limit`` Kinesis records, before de-aggregation)."""
        if self._ended:
            return ReadBatch(records=[], shard_ended=True)
        if self._iterator is None:
            self._iterator = self._source.get_shard_iterator(self._shard_id, self.position)
        try:
            result = self._source.get_records(self._iterator, limit=limit)
        except ExpiredIteratorError:
            self._iterator = None
            position = self.position
            logger.info(
                "shard iterator for %s/%s expired; getting a new one %s%s",
                self._source.stream_name,
                self._shard_id,
                position.type.value,
                f" {position.sequence_number}" if position.sequence_number is not None else "",
            )
            self._iterator = self._source.get_shard_iterator(self._shard_id, position)
            try:
                result = self._source.get_records(self._iterator, limit=limit)
            except ExpiredIteratorError:
                self._iterator = None  # known bad: the next read starts from a fresh one
                raise

        self._iterator = result.next_iterator
        if result.records:
            self._last_sequence_number = result.records[-1].sequence_number
        if self._deaggregate:
            records = [sub for record in result.records for sub in deaggregate_record(record, self._shard_range)]
        else:
            records = list(result.records)
        if result.next_iterator is None:
            self._ended = True
            self._child_shards = list(result.child_shards)
            logger.debug(
                "shard %s/%s ended; children %s",
                self._source.stream_name,
                self._shard_id,
                [child.shard_id for child in result.child_shards],
            )
        return ReadBatch(
            records=records,
            millis_behind_latest=result.millis_behind_latest,
            shard_ended=self._ended,
            child_shards=list(result.child_shards) if self._ended else [],
        )
