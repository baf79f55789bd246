"""The state-store ports and their values.

A **local store** belongs to one shard lease on one worker and is opened by the framework, never by the user.
Writes go to a *pending batch*; reads see the pending batch over the committed state (read your writes).
:meth:`LocalStore.commit` writes the pending changes **and** the shard's last applied position in one atomic
write (level 2, KIP-1035), so a restarted worker finds state and position that agree.

The **changelog** is the durable copy of every shard's state beyond one machine (a table in the embedded SQLite
database, or the DynamoDB table ``<app>-state``). Each framework commit appends the pending changes to the
changelog first, then commits the local store, then writes the lease checkpoint — so
``lease checkpoint ≤ local position ≤ changelog position`` holds at every instant, and a crash between any two
of the writes loses nothing and applies nothing twice (the store's position wins over the lease checkpoint).

Commits are numbered per shard from 1 within a **lineage** (a random id chosen by the first commit of a shard's
changelog): a local store at commit ``c`` of lineage ``L`` restores only what the changelog has after ``c`` (or
everything, when the lineages differ or the changelog no longer keeps what follows ``c``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from shardwise.checkpoint.sequence import ExtendedSequenceNumber

__all__ = [
    "FORMAT_IN_STORE",
    "FORMAT_SIDECAR",
    "KNOWN_FORMATS",
    "Change",
    "Changelog",
    "ChangelogHead",
    "ChangelogStats",
    "CommitMeta",
    "LocalStore",
    "OpenOutcome",
    "OpenedStore",
    "RestorePlan",
    "StateStore",
    "StoreStats",
    "restore_from",
]

#: ``state.format`` level 1: the position is kept beside the store in a sidecar checkpoint file (Kafka Streams
#: ≤ 4.2's ``.checkpoint``), written after the store's data — not atomic with it.
FORMAT_SIDECAR = 1
#: ``state.format`` level 2: the position is kept inside the store, in the same atomic write as the data.
FORMAT_IN_STORE = 2
KNOWN_FORMATS = (FORMAT_SIDECAR, FORMAT_IN_STORE)

#: One change of a commit: ``(key, value)``; ``value is None`` deletes the key.
Change = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class CommitMeta:
    """What a commit records besides the data: its number, the shard position it covers, its lineage."""

    commit: int  # 1, 2, … within the lineage
    position: ExtendedSequenceNumber  # the last applied record (or TRIM_HORIZON/LATEST/…, or SHARD_END)
    lineage: str


@dataclass(frozen=True, slots=True)
class StoreStats:
    key_count: int
    size_bytes: int  # on disk (files of the store, sidecar included)


class StateStore(Protocol):
    """What a stateful processor sees: one shard's key-value state, bytes keys and values, sorted by key.

    Writes are pending until the framework commits them (at a checkpoint, at the commit interval, at shard
    end); a ``lease_lost`` or a failed ``process_records`` discards them. Not thread-safe: a processor is called
    by one thread at a time, and so is its store."""

    @property
    def shard_id(self) -> str: ...

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def range(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Keys in ``[start, end)`` in byte order, pending writes included (a list may be taken of it; the
        store must not be written while iterating)."""
        ...

    def __len__(self) -> int:
        """The number of keys, pending writes included."""
        ...


@runtime_checkable
class LocalStore(StateStore, Protocol):
    """What the framework drives: the pending batch, the atomic commit, restore, and the store's metadata."""

    @property
    def format_level(self) -> int: ...

    def committed(self) -> CommitMeta | None:
        """The last commit (None for a new, empty store)."""
        ...

    def pending(self) -> list[Change]:
        """The pending changes, sorted by key, one per key (the last write wins)."""
        ...

    def has_pending(self) -> bool: ...

    def commit(self, meta: CommitMeta) -> None:
        """Write the pending changes and ``meta`` (level 2: in one atomic write; level 1: data, then the
        sidecar file). Clears the pending batch. ``meta.commit`` must be the last commit's + 1, or any number
        when the lineage changes (raises ``StateStoreError`` otherwise)."""
        ...

    def discard(self) -> None:
        """Drop the pending batch."""
        ...

    def restore(self, changes: Iterator[Change], meta: CommitMeta, *, replace: bool) -> int:
        """Apply restored changes and ``meta`` as one commit (``replace``: the store is emptied first, in the
        same atomic write where the engine allows, else before it with the store marked as restoring so a
        crash in between reopens as empty). Requires an empty pending batch; returns the changes applied."""
        ...

    def stats(self) -> StoreStats: ...

    def close(self) -> None: ...


class OpenOutcome:
    """How :func:`~shardwise.state.engines.open_local_store` found the store (for the one log line it gives)."""

    CREATED = "created"  # no store on disk
    OPENED = "opened"  # found at the format it is opened with
    UPGRADED = "upgraded"  # level 1 found, offsets imported into the store, sidecar removed (level 2)
    CONVERTED_DOWN = "converted-down"  # level 2 found by a worker writing level 1: offsets exported, safely
    WIPED_NEWER = "wiped-newer-format"  # a format this worker cannot read: wiped, to be restored
    WIPED_CORRUPT = "wiped-corrupt"  # unreadable, truncated, or left mid-restore/unclean at level 1: wiped
    WIPED_ENGINE = "wiped-other-engine"  # written by the other engine: wiped


@dataclass(frozen=True, slots=True)
class OpenedStore:
    store: LocalStore
    outcome: str  # an OpenOutcome value
    detail: str  # one line: what was found and what was done (empty for CREATED/OPENED)


@dataclass(frozen=True, slots=True)
class ChangelogHead:
    """A shard's changelog as last committed."""

    commit: int
    position: ExtendedSequenceNumber
    lineage: str
    format_level: int  # the format the committing worker wrote its store in


@dataclass(frozen=True, slots=True)
class ChangelogStats:
    key_count: int  # keys in the state as of the head
    items: int  # items (rows) the changelog keeps for the shard
    size_bytes: int


@dataclass(frozen=True, slots=True)
class RestorePlan:
    """What to apply to a local store to bring it to ``head``: everything (``full``: empty the store first) or
    only the changes after the store's commit."""

    head: ChangelogHead
    full: bool
    changes: Iterator[Change]


class Changelog(Protocol):
    """The durable copy of each shard's committed state for one application (one table).

    Raises :class:`~shardwise.errors.ChangelogConflictError` when an append finds the head moved (another worker
    committed: this one no longer owns the shard), :class:`~shardwise.errors.ChangelogMissingError` when the
    table does not exist and cannot be created, :class:`~shardwise.errors.MalformedItemError` for an item of
    the wrong shape, :class:`~shardwise.errors.DependencyError` for transient faults."""

    @property
    def name(self) -> str:
        """The table's name, for messages (``<app>-state`` on DynamoDB)."""
        ...

    def ensure_exists(self) -> None:
        """Create the table if missing (on-demand billing on DynamoDB) and wait until it is usable."""
        ...

    def head(self, shard_id: str) -> ChangelogHead | None: ...

    def append(self, shard_id: str, changes: Sequence[Change], meta: CommitMeta, *, format_level: int) -> None:
        """Record one commit: visible to readers all at once or not at all, whatever its size. ``meta.commit``
        must be the head's + 1 in the head's lineage, or 1 with a new lineage when there is no head."""
        ...

    def plan_restore(self, shard_id: str, *, lineage: str | None, after_commit: int | None) -> RestorePlan | None:
        """What a store at ``after_commit`` of ``lineage`` (None, None: an empty store) lacks; None when the
        shard has no changelog. The changes of a plan reflect exactly the head's commit, never part of a later,
        unfinished one."""
        ...

    def needs_compaction(self, shard_id: str) -> bool:
        """Whether the changes kept since the shard's last snapshot exceed max(100, the keys of that snapshot):
        the framework then calls :meth:`compact` with the committed state (cheap to ask: reads the head)."""
        ...

    def compact(self, shard_id: str, state: Iterator[Change], meta: CommitMeta) -> None:
        """Record ``state`` (the committed state at ``meta``, which must be the head: else
        :class:`~shardwise.errors.ChangelogConflictError`) as the shard's snapshot, so a full restore reads it
        instead of the whole log, then delete what the snapshot makes obsolete (best-effort). A backend that
        keeps the materialized state (SQLite) may ignore ``state`` and only purge its tombstones."""
        ...

    def delete(self, shard_id: str) -> None:
        """Forget the shard's changelog (a wiped shard starts over)."""
        ...

    def shard_ids(self) -> list[str]: ...

    def stats(self, shard_id: str) -> ChangelogStats | None: ...


def restore_from(changelog: Changelog, store: LocalStore, shard_id: str) -> tuple[ChangelogHead, int] | None:
    """Bring ``store`` to the changelog's head (only what it lacks); returns the head and the changes applied,
    or None when the shard has no changelog."""
    meta = store.committed()
    plan = changelog.plan_restore(
        shard_id,
        lineage=None if meta is None else meta.lineage,
        after_commit=None if meta is None else meta.commit,
    )
    if plan is None:
        return None
    if not plan.full and meta is not None and meta.commit == plan.head.commit:
        return plan.head, 0
    head = plan.head
    applied = store.restore(plan.changes, CommitMeta(head.commit, head.position, head.lineage), replace=plan.full)
    return head, applied
