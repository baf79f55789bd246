"""What the step-by-step ShardConsumer tests share: a clock moved by hand in milliseconds, the real stream
recording the iterator positions asked for, and stepping a consumer."""

from __future__ import annotations

from shardwise.lifecycle.consumer import ShardConsumer
from shardwise.lifecycle.states import ConsumerState
from shardwise.retrieval.model import GetRecordsResult, Shard, ShardFilter, StartingPosition
from shardwise.retrieval.source import StreamSource

__all__ = ["MS", "MillisClock", "RecordingSource", "start", "state", "steps"]

MS = 1_000_000


class MillisClock:
    """A monotonic clock (``clock_ns``) the test moves by hand."""

    def __init__(self) -> None:
        self.now_ns = 1_000 * MS

    def __call__(self) -> int:
        return self.now_ns

    def advance_ms(self, ms: int) -> None:
        self.now_ns += ms * MS


class RecordingSource:
    """The real stream, recording the iterator positions asked for in :attr:`positions` (a list it may share)."""

    def __init__(self, inner: StreamSource, positions: list[tuple[str, StartingPosition]] | None = None) -> None:
        self._inner = inner
        self.positions: list[tuple[str, StartingPosition]] = [] if positions is None else positions

    @property
    def stream_name(self) -> str:
        return self._inner.stream_name

    def list_shards(self, shard_filter: ShardFilter | None = None) -> list[Shard]:
        return self._inner.list_shards(shard_filter)

    def get_shard_iterator(self, shard_id: str, position: StartingPosition) -> str:
        self.positions.append((shard_id, position))
        return self._inner.get_shard_iterator(shard_id, position)

    def get_records(self, shard_iterator: str, *, limit: int = 10_000) -> GetRecordsResult:
        return self._inner.get_records(shard_iterator, limit=limit)


def state(consumer: ShardConsumer) -> ConsumerState:
    """The current state (a call, so that type checkers do not narrow it across steps)."""
    return consumer.state


def steps(consumer: ShardConsumer, count: int) -> None:
    for _ in range(count):
        consumer.step()


def start(consumer: ShardConsumer) -> None:
    """Through WAITING_ON_PARENT_SHARDS and INITIALIZING."""
    steps(consumer, 2)
    assert state(consumer) is ConsumerState.PROCESSING
