"""The pure decisions of a stateful processor's shard state (:mod:`shardwise.lifecycle.stateful` applies them):
which open case applies, where reading resumes, when the interval commit is due, the next commit's meta, and how
merged parents' states combine."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.state.port import Change, CommitMeta

__all__ = ["MergeFunction", "OpenCase", "commit_due", "merge_states", "next_commit", "open_case", "start_position"]

#: A processor's ``merge_state(key, left, right) -> bytes`` (left: the parent earlier in lease-key order).
MergeFunction = Callable[[bytes, bytes, bytes], bytes]


class OpenCase(enum.Enum):
    RESTORE = "restore"  # (a) the changelog has a head
    REPUBLISH = "republish"  # (b) no head, the local store has commits
    SEED_FROM_PARENTS = "seed-from-parents"  # (c) a new child of a reshard
    EMPTY = "empty"  # (d) nothing anywhere: empty state at the lease checkpoint


def open_case(*, has_head: bool, local_has_commits: bool, has_parents: bool, checkpoint_is_sentinel: bool) -> OpenCase:
    """Which of the four open cases applies (see the module docstring)."""
    if has_head:
        return OpenCase.RESTORE
    if local_has_commits:
        return OpenCase.REPUBLISH
    if has_parents and checkpoint_is_sentinel:
        return OpenCase.SEED_FROM_PARENTS
    return OpenCase.EMPTY


def start_position(
    lease_checkpoint: ExtendedSequenceNumber, store_position: ExtendedSequenceNumber | None
) -> ExtendedSequenceNumber:
    """Where processing resumes: the later of the lease checkpoint and the store's position (the store's position
    wins). A store at an initial sentinel (seeded at a new child's ``TRIM_HORIZON``) defers to the lease."""
    if store_position is None or (store_position.is_sentinel and not store_position.is_shard_end):
        return lease_checkpoint
    return max(lease_checkpoint, store_position)


def commit_due(last_commit_ns: int, now_ns: int, interval_ms: int) -> bool:
    """Whether the commit interval has passed since the last commit."""
    return now_ns - last_commit_ns >= interval_ms * 1_000_000


def next_commit(
    committed: CommitMeta | None, position: ExtendedSequenceNumber, new_lineage: Callable[[], str]
) -> CommitMeta:
    """The meta of the next commit: the committed number + 1 in its lineage, or commit 1 of a new lineage."""
    if committed is None:
        return CommitMeta(1, position, new_lineage())
    return CommitMeta(committed.commit + 1, position, committed.lineage)


def merge_states(
    parents: Sequence[Iterable[Change]], merge: MergeFunction | None
) -> tuple[dict[bytes, bytes], list[bytes]]:
    """The union of the parents' states (given in lease-key order; tombstones ignored) and the keys found in more
    than one parent: ``merge(key, left, right)`` decides those, else the later parent wins."""
    merged: dict[bytes, bytes] = {}
    conflicts: list[bytes] = []
    for changes in parents:
        seen: dict[bytes, bytes] = {}
        for key, value in changes:
            if value is not None:
                seen[key] = value
        for key, value in seen.items():
            if key in merged:
                conflicts.append(key)
                merged[key] = merge(key, merged[key], value) if merge is not None else value
            else:
                merged[key] = value
    return merged, conflicts
