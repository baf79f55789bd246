"""The counting processor of ``shardwise demo --stateful`` and of the stateful scenarios, and how its counts are
read back.

:class:`CountingProcessor` counts records per partition key in the shard's state store (a JSON view: key →
count). It checkpoints every ``SHARDWISE_COUNTING_CHECKPOINT_EVERY`` batches (default 1; 0: never — the
framework's commit interval then commits, and bounds what a crash redelivers). Whatever is redelivered after a
crash, each record changes the counts exactly once: the counts and the position of the last counted record are
committed in one atomic write, and records at or before that position are not delivered again.

A split hands both children the parent's whole state, so a key's count is found in the one **leaf** (open)
shard whose hash-key range holds the key's hash (:func:`leaf_counts`); summing across shards would count a
parent's records twice. A merge combines its two parents' counts: a key both have takes the larger count — the
copies of a key descend from one count and only the shard whose range holds the key adds to it, so the larger
is the one that kept counting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from shardwise.admin.state import read_state
from shardwise.hashkeys import hash_key_for
from shardwise.processor import ProcessRecordsInput, ShardEndedInput, StatefulRecordProcessor
from shardwise.retrieval.model import Shard
from shardwise.state.port import Changelog
from shardwise.state.typed import JSON, TypedView

__all__ = ["CHECKPOINT_EVERY_ENV", "CountingProcessor", "leaf_counts", "leaf_of"]

CHECKPOINT_EVERY_ENV = "SHARDWISE_COUNTING_CHECKPOINT_EVERY"


class CountingProcessor(StatefulRecordProcessor):
    """Per partition key, the number of records seen, in the state store (see the module)."""

    def __init__(self) -> None:
        self._every = int(os.environ.get(CHECKPOINT_EVERY_ENV, "1"))
        self._batches = 0

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        state = process_records_input.state
        assert state is not None, "the framework gives a stateful processor its store"
        counts: TypedView[int] = TypedView(state, JSON)
        for record in process_records_input.records:
            counts.put(record.partition_key, (counts.get(record.partition_key) or 0) + 1)
        self._batches += 1
        if self._every > 0 and self._batches % self._every == 0:
            process_records_input.checkpointer.checkpoint()

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        shard_ended_input.checkpointer.checkpoint()

    def merge_state(self, key: bytes, left: bytes, right: bytes) -> bytes:
        return left if int(json.loads(left)) > int(json.loads(right)) else right


def leaf_of(key: str, shards: Iterable[Shard]) -> str:
    """The open shard whose hash-key range holds ``key``'s hash."""
    hashed = hash_key_for(key)
    for shard in shards:
        if shard.is_open and hashed in shard.hash_key_range:
            return shard.shard_id
    raise ValueError(f"no open shard holds partition key {key!r}")


def leaf_counts(changelog: Changelog, shards: Iterable[Shard], keys: Iterable[str]) -> dict[str, int]:
    """Each key's committed count, read through the changelog from its leaf shard (0 when it has none yet)."""
    listed = list(shards)
    by_leaf: dict[str, list[str]] = {}
    for key in keys:
        by_leaf.setdefault(leaf_of(key, listed), []).append(key)
    counts: dict[str, int] = {}
    for shard_id, wanted in by_leaf.items():
        state: Mapping[str, int] = {k.decode(): int(json.loads(v)) for k, v in read_state(changelog, shard_id)}
        counts.update({key: state.get(key, 0) for key in wanted})
    return counts
