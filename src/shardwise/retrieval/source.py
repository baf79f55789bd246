"""The ``StreamSource`` port: the subset of the Kinesis data-plane API that a consumer needs."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from shardwise.retrieval.model import GetRecordsResult, Shard, ShardFilter, StartingPosition

__all__ = ["StreamSource"]


@runtime_checkable
class StreamSource(Protocol):
    """One stream, read by polling. Implementations: ``KinesisStream`` (AWS) and ``LocalStream`` (SQLite).

    Errors: :class:`~shardwise.errors.ResourceNotFoundError` for an unknown stream or shard,
    :class:`~shardwise.errors.ExpiredIteratorError` for an expired iterator,
    :class:`~shardwise.errors.InvalidArgumentError` for an invalid one,
    :class:`~shardwise.errors.ThrottlingError` / :class:`~shardwise.errors.DependencyError` for backend
    faults.
    """

    @property
    def stream_name(self) -> str: ...

    def list_shards(self, shard_filter: ShardFilter | None = None) -> list[Shard]:
        """Every shard (all pages), optionally filtered as Kinesis' ``ShardFilter`` does, by shard id."""
        ...

    def get_shard_iterator(self, shard_id: str, position: StartingPosition) -> str:
        """An iterator into ``shard_id`` at ``position``."""
        ...

    def get_records(self, shard_iterator: str, *, limit: int = 10_000) -> GetRecordsResult:
        """Up to ``limit`` records from the iterator's position. Aggregated KPL records are returned as they
        are stored (one record each); de-aggregation is :func:`shardwise.retrieval.kpl.deaggregate`'s job."""
        ...
