"""The rules both state changelogs (SQLite, DynamoDB) apply: which commit may follow a head, when a snapshot is
due, and the strict check of whole numbers read back from a table."""

from __future__ import annotations

from shardwise.errors import ChangelogConflictError, MalformedItemError
from shardwise.state.port import ChangelogHead, CommitMeta

__all__ = [
    "COMPACTION_MIN_CHANGES",
    "check_successor",
    "compaction_due",
    "describe_head",
    "restore_is_full",
    "whole_number",
]

#: Compaction is due when the changes since the last snapshot exceed max(this, the keys in the snapshot).
COMPACTION_MIN_CHANGES = 100


def compaction_due(log_changes: int, snapshot_keys: int) -> bool:
    """Whether the changes kept since the last snapshot make a new one worth writing."""
    return log_changes > max(COMPACTION_MIN_CHANGES, snapshot_keys)


def describe_head(head: ChangelogHead | None) -> str:
    return "none" if head is None else f"commit {head.commit} ({head.lineage})"


def check_successor(name: str, shard_id: str, current: ChangelogHead | None, meta: CommitMeta) -> None:
    """``meta`` must follow ``current``: the next commit of its lineage, or commit 1 when there is no head;
    anything else means another worker committed (:class:`ChangelogConflictError`)."""
    if current is None:
        follows = meta.commit == 1
    else:
        follows = meta.commit == current.commit + 1 and meta.lineage == current.lineage
    if not follows:
        raise ChangelogConflictError(
            f"changelog {name!r} shard {shard_id}: commit {meta.commit} ({meta.lineage}) does not follow the head "
            f"({describe_head(current)}): another worker committed, this one no longer owns the shard"
        )


def whole_number(key: str, name: str, value: object, minimum: int = 0) -> int:
    """``value`` if it is an int ≥ ``minimum`` (not a bool), else :class:`MalformedItemError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MalformedItemError(key, f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def restore_is_full(head: ChangelogHead, lineage: str | None, after_commit: int | None, snapshot_commit: int) -> bool:
    """Whether a store at ``after_commit`` of ``lineage`` must be restored in full: another lineage, an empty
    store, a commit older than the snapshot (the log before it is gone) or newer than the head (not this log)."""
    return (
        lineage != head.lineage or after_commit is None or after_commit < snapshot_commit or after_commit > head.commit
    )
