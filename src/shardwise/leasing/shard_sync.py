"""Shard sync: which leases to create for the shards of a stream, which finished leases to delete, and when
the lease table has a hole (kcl-protocol.md §2.4; KCL's ``HierarchicalShardSyncer``, ``ShutdownTask``,
``LeaseCleanupManager`` and ``PeriodicShardSyncManager``).

The decisions are pure functions over a snapshot (shards listed, leases scanned):

* :func:`leases_to_create` — the leases a shard sync creates;
* :func:`child_leases` — the leases a worker creates for the children of a shard it read to its end;
* :func:`leases_to_clean_up` — finished parent leases that may be deleted;
* :func:`hash_range_holes` — the parts of the hash-key space no unfinished lease covers.

:class:`ShardSyncer` is the thin shell that lists, decides and applies the decisions with conditional writes.
Losing a race (``create_lease_if_not_exists`` returning ``None`` because another worker created the lease
first) is the normal case in a fleet, not an error.

How KCL's hierarchical rule reads (``NonEmptyLeaseTableSynchronizer`` and
``checkIfDescendantAndAddNewLeasesForAncestors``), and what this module does the same way:

* Only *open* shards without a lease are starting points; a shard whose parent is still open (an inconsistent
  listing taken during a reshard) is skipped.
* A shard is a *descendant* if it has a lease, or if one of its parents (among the listed shards) is a
  descendant, or — for TRIM_HORIZON / AT_TIMESTAMP — one of its parents is a lineage root that must be read
  from the start ("should create": a listed shard with no leased ancestor).
* For a descendant, each parent without a lease gets a lease if it is such a root, or if it is *not* a
  descendant itself (the other parent of a merge whose own lineage has no lease). Its checkpoint is
  TRIM_HORIZON when the parent is on a descendant line and the position is not AT_TIMESTAMP; otherwise the
  initial position's sentinel (AT_TIMESTAMP; and LATEST for the non-descendant parent of a merge under
  LATEST — KCL documents that case). Parents that are descendants themselves get no lease: they will be
  created as children when their own parents reach SHARD_END. So leases are created for the first missing
  level only.
* An open shard that is not a descendant gets a lease at the initial position.
* Leases are returned in the order of their shards' starting sequence numbers (then shard id), so that a
  sync interrupted half-way leaves the oldest leases in place.

This reproduces ``docs/lease-lifecycle.md``: leases (4, 5, 7) exist → LATEST creates (6), TRIM_HORIZON and
AT_TIMESTAMP create (0, 1).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shardwise.checkpoint.sequence import AT_TIMESTAMP, LATEST, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import ConfigurationError, InvalidStateError
from shardwise.hashkeys import MAX_HASH_KEY, HashKeyRange
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, MalformedLease
from shardwise.leasing.bad_items import malformed_lease_message
from shardwise.retrieval.model import ChildShard, Shard, ShardFilter, ShardFilterType
from shardwise.retrieval.source import StreamSource

__all__ = [
    "HoleAuditor",
    "InitialPosition",
    "InitialPositionKind",
    "ShardSyncer",
    "child_leases",
    "deferred_merge_children",
    "hash_range_holes",
    "inconsistent_shard_ids",
    "leases_to_clean_up",
    "leases_to_create",
    "shards_at_initial_position",
]

logger = logging.getLogger(__name__)

#: KCL's ``leasesRecoveryAuditorInconsistencyConfidenceThreshold``.
DEFAULT_CONFIDENCE_THRESHOLD = 3


# -- initial position --------------------------------------------------------------------------------------


class InitialPositionKind(str, enum.Enum):
    """KCL's ``InitialPositionInStream``."""

    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"


_CHECKPOINTS = {
    InitialPositionKind.TRIM_HORIZON: TRIM_HORIZON,
    InitialPositionKind.LATEST: LATEST,
    InitialPositionKind.AT_TIMESTAMP: AT_TIMESTAMP,
}


@dataclass(frozen=True, slots=True)
class InitialPosition:
    """Where an application starts reading shards nobody has checkpointed yet (KCL's
    ``InitialPositionInStreamExtended``). ``timestamp`` (timezone-aware) goes with AT_TIMESTAMP only."""

    kind: InitialPositionKind
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, InitialPositionKind):
            raise ConfigurationError(
                f"initial position must be one of {', '.join(k.value for k in InitialPositionKind)}, got {self.kind!r}"
            )
        if (self.kind is InitialPositionKind.AT_TIMESTAMP) != (self.timestamp is not None):
            raise ConfigurationError("an AT_TIMESTAMP initial position (and only it) needs a timestamp")
        if self.timestamp is not None and self.timestamp.tzinfo is None:
            raise ConfigurationError("the AT_TIMESTAMP timestamp must be timezone-aware")

    @classmethod
    def trim_horizon(cls) -> InitialPosition:
        return cls(InitialPositionKind.TRIM_HORIZON)

    @classmethod
    def latest(cls) -> InitialPosition:
        return cls(InitialPositionKind.LATEST)

    @classmethod
    def at_timestamp(cls, timestamp: datetime) -> InitialPosition:
        return cls(InitialPositionKind.AT_TIMESTAMP, timestamp)

    @property
    def checkpoint(self) -> ExtendedSequenceNumber:
        """The sentinel checkpoint of a lease created at this position."""
        return _CHECKPOINTS[self.kind]

    @property
    def shard_filter(self) -> ShardFilter:
        """The ``ShardFilter`` KCL lists shards with when the lease table is empty."""
        if self.kind is InitialPositionKind.LATEST:
            return ShardFilter(ShardFilterType.AT_LATEST)
        if self.kind is InitialPositionKind.TRIM_HORIZON:
            return ShardFilter(ShardFilterType.AT_TRIM_HORIZON)
        return ShardFilter(ShardFilterType.AT_TIMESTAMP, timestamp=self.timestamp)


# -- pure decisions ----------------------------------------------------------------------------------------


def _listed_parents(shard: Shard, by_id: Mapping[str, Shard]) -> list[str]:
    """The shard's parents that are in the listing (KCL's ``getParentShardIds``), without duplicates."""
    return [p for p in dict.fromkeys(shard.parent_shard_ids) if p in by_id]


def _new_lease(shard: Shard, checkpoint: ExtendedSequenceNumber) -> Lease:
    """KCL's ``newKCLLease``: parent ids are every non-null parent of the shard, listed or not."""
    return Lease(
        lease_key=shard.shard_id,
        checkpoint=checkpoint,
        parent_shard_ids=frozenset(shard.parent_shard_ids),
        hash_key_range=shard.hash_key_range,
    )


def _in_creation_order(leases: Iterable[Lease], by_id: Mapping[str, Shard]) -> list[Lease]:
    def key(lease: Lease) -> tuple[int, str]:
        return (int(by_id[lease.lease_key].starting_sequence_number), lease.lease_key)

    return sorted(leases, key=key)


def inconsistent_shard_ids(shards: Sequence[Shard]) -> frozenset[str]:
    """Shards whose parent is listed and still open: the listing was taken while a reshard was under way."""
    by_id = {s.shard_id: s for s in shards}
    return frozenset(s.shard_id for s in shards if any(p in by_id and by_id[p].is_open for p in s.parent_shard_ids))


def shards_at_initial_position(shards: Sequence[Shard], position: InitialPosition) -> list[Shard]:
    """What ListShards with the position's ``ShardFilter`` returns, computed from a full listing.

    LATEST (``AT_LATEST``): the open shards. TRIM_HORIZON (``AT_TRIM_HORIZON``) and AT_TIMESTAMP: the oldest
    retained generation — the shards none of whose parents is listed. (For AT_TIMESTAMP, Kinesis returns the
    shards open at the timestamp; reading from the oldest generation instead reaches the same records, just
    through a few extra, quickly finished shards. Given a listing already filtered by the service, this
    function returns it unchanged.)
    """
    if position.kind is InitialPositionKind.LATEST:
        return [s for s in shards if s.is_open]
    listed = {s.shard_id for s in shards}
    return [s for s in shards if not any(p in listed for p in s.parent_shard_ids)]


def _bootstrap(shards: Sequence[Shard], position: InitialPosition) -> list[Lease]:
    """KCL's ``EmptyLeaseTableSynchronizer``: a lease per shard at the initial position."""
    skip = inconsistent_shard_ids(shards)
    chosen = {s.shard_id: s for s in shards_at_initial_position(shards, position) if s.shard_id not in skip}
    return _in_creation_order((_new_lease(s, position.checkpoint) for s in chosen.values()), chosen)


@dataclass
class _AncestryWalk:
    """State of one hierarchical evaluation (KCL's ``MemoizationContext`` plus the map of new leases)."""

    by_id: Mapping[str, Shard]
    leased: frozenset[str]
    position: InitialPosition
    descendant: dict[str, bool] = field(default_factory=dict)
    roots_to_read: set[str] = field(default_factory=set)
    new: dict[str, Lease] = field(default_factory=dict)

    def order(self, start: str) -> list[str]:
        """``start`` and the ancestors its evaluation needs, parents before children (an iterative
        post-order walk, so long lineages do not hit the recursion limit). The walk stops at leased shards,
        whose ancestry KCL never looks at, and at shards already evaluated."""
        result: list[str] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            shard_id, expanded = stack.pop()
            if expanded:
                result.append(shard_id)
                continue
            if shard_id in seen or shard_id in self.descendant:
                continue
            seen.add(shard_id)
            stack.append((shard_id, True))
            if shard_id in self.leased or shard_id not in self.by_id:
                continue
            for parent in reversed(_listed_parents(self.by_id[shard_id], self.by_id)):
                if parent not in seen and parent not in self.descendant:
                    stack.append((parent, False))
        return result

    def evaluate(self, shard_id: str) -> bool:
        for sid in self.order(shard_id):
            if sid not in self.descendant:
                self.descendant[sid] = self._evaluate_one(sid)
        return self.descendant.get(shard_id, False)

    def _evaluate_one(self, shard_id: str) -> bool:
        if shard_id not in self.by_id:
            return False
        if shard_id in self.leased:
            return True
        parents = _listed_parents(self.by_id[shard_id], self.by_id)
        on_lineage = {p for p in parents if self.descendant.get(p, False) or p in self.roots_to_read}
        if not on_lineage:
            if self.position.kind is not InitialPositionKind.LATEST:
                self.roots_to_read.add(shard_id)
            return False
        for parent in parents:
            if parent in self.leased:
                continue
            lease = self.new.get(parent)
            if lease is None and (parent in self.roots_to_read or parent not in on_lineage):
                lease = _new_lease(self.by_id[parent], self.position.checkpoint)
            if lease is None:
                continue  # a descendant itself: its lease comes when its own parents reach SHARD_END
            if parent in on_lineage and self.position.kind is not InitialPositionKind.AT_TIMESTAMP:
                checkpoint = TRIM_HORIZON
            else:
                checkpoint = self.position.checkpoint
            self.new[parent] = lease.with_changes(checkpoint=checkpoint)
        return True


def leases_to_create(shards: Sequence[Shard], leases: Sequence[Lease], position: InitialPosition) -> list[Lease]:
    """The leases a shard sync creates, in creation order.

    * **Empty lease table**: one lease per shard the position's ``ShardFilter`` returns
      (:func:`shards_at_initial_position`), checkpoint = the position's sentinel.
    * **Otherwise**: KCL's hierarchical rule (module docstring) for every open shard without a lease.

    Every lease carries its shard's parent ids (parent and adjacent parent, whenever the shard names them)
    and hash range; owner none, counter 0. Inconsistent shards (:func:`inconsistent_shard_ids`) are skipped.
    """
    if not leases:
        return _bootstrap(shards, position)
    by_id = {s.shard_id: s for s in shards}
    walk = _AncestryWalk(by_id, frozenset(lease.lease_key for lease in leases), position)
    skip = inconsistent_shard_ids(shards)
    for shard in shards:
        if not shard.is_open or shard.shard_id in walk.leased or shard.shard_id in skip:
            continue
        if not walk.evaluate(shard.shard_id):
            walk.new[shard.shard_id] = _new_lease(shard, position.checkpoint)
    return _in_creation_order(walk.new.values(), by_id)


def _plan_children(
    parent: Lease, children: Sequence[ChildShard], leases_by_key: Mapping[str, Lease]
) -> tuple[list[Lease], list[str]]:
    create: list[Lease] = []
    deferred: list[str] = []
    for child in {c.shard_id: c for c in children}.values():
        if not child.parent_shards:
            raise InvalidStateError(
                f"cannot create a lease for child shard {child.shard_id} of {parent.lease_key}: the stream "
                "reported no parent shards for it"
            )
        if child.shard_id in leases_by_key:
            continue  # created already (by the other parent of a merge, or an earlier attempt)
        others = [p for p in dict.fromkeys(child.parent_shards) if p != parent.lease_key]
        if any(p not in leases_by_key for p in others):
            deferred.append(child.shard_id)
            continue
        create.append(
            Lease(
                lease_key=child.shard_id,
                checkpoint=TRIM_HORIZON,
                parent_shard_ids=frozenset(child.parent_shards),
                hash_key_range=child.hash_key_range,
            )
        )
    return create, deferred


def child_leases(parent: Lease, children: Sequence[ChildShard], leases_by_key: Mapping[str, Lease]) -> list[Lease]:
    """The leases to create for the children of ``parent`` when its shard is read to its end (SHARD_END).

    Each has checkpoint TRIM_HORIZON (so nothing between the parents' end and the child's start is lost),
    the child's parent ids and hash range. Children that already have a lease in ``leases_by_key`` are
    skipped.

    Merge children: KCL (``ShutdownTask``) creates the child of a merge only when both parents' leases are
    consistently present (it checks that before anything else and otherwise defers: retries later, and once in
    a while drops the parent lease). Here a merge child *without* a lease is created only if the other parent's
    lease is present in ``leases_by_key`` (``parent`` itself always counts as present) and is otherwise
    deferred (:func:`deferred_merge_children`) — the same as KCL. A merge child that already has a lease is
    simply skipped whatever the other parent's state: the other parent's lease can only be missing then
    because it finished and was cleaned up (cleanup needs the child's lease to have progressed), which is
    fine. That is where this differs from KCL, which keeps deferring in that case.
    """
    return _plan_children(parent, children, leases_by_key)[0]


def deferred_merge_children(
    parent: Lease, children: Sequence[ChildShard], leases_by_key: Mapping[str, Lease]
) -> list[str]:
    """Ids of merge children :func:`child_leases` does not create yet because the other parent's lease is
    missing. The parent must not be checkpointed at SHARD_END until they can be created."""
    return _plan_children(parent, children, leases_by_key)[1]


_NOT_STARTED = (TRIM_HORIZON, AT_TIMESTAMP)


def leases_to_clean_up(leases: Sequence[Lease]) -> list[str]:
    """Keys of finished parent leases that may be deleted (KCL's ``LeaseCleanupManager``).

    A lease qualifies when its checkpoint is SHARD_END, it names its children (``childShardIds``), every child
    has a lease whose checkpoint is neither TRIM_HORIZON nor AT_TIMESTAMP (processing of the child has begun),
    and none of its own parents still has a lease (the tombstone keeps the lineage ordered).
    """
    by_key = {lease.lease_key: lease for lease in leases}
    result: list[str] = []
    for lease in leases:
        if not lease.is_complete or not lease.child_shard_ids:
            continue
        children = [by_key.get(c) for c in lease.child_shard_ids]
        if any(c is None or c.checkpoint in _NOT_STARTED for c in children):
            continue
        if any(p in by_key for p in lease.parent_shard_ids):
            continue
        result.append(lease.lease_key)
    return result


def hash_range_holes(leases: Sequence[Lease]) -> list[HashKeyRange]:
    """The ranges of ``[0, 2**128 - 1]`` that no unfinished lease (checkpoint not SHARD_END) covers, in order.

    KCL's periodic auditor looks at the same leases. Leases without a hash range are ignored (the shell fills
    the ranges in from the stream first, as KCL does). No leases at all → one hole, the whole space.
    """
    ranges = sorted(
        (lease.hash_key_range for lease in leases if not lease.is_complete and lease.hash_key_range is not None),
        key=lambda r: r.start,
    )
    holes: list[HashKeyRange] = []
    next_uncovered = 0
    for r in ranges:
        if r.start > next_uncovered:
            holes.append(HashKeyRange(next_uncovered, r.start - 1))
        next_uncovered = max(next_uncovered, r.end + 1)
    if next_uncovered <= MAX_HASH_KEY:
        holes.append(HashKeyRange(next_uncovered, MAX_HASH_KEY))
    return holes


class HoleAuditor:
    """Confidence counter of KCL's ``PeriodicShardSyncManager``: a sync is needed once the *same* holes have
    been seen in ``confidence_threshold`` consecutive audits. An audit without holes resets the count; other
    holes start it again at 1. The count is not reset by a sync: while the holes persist, every further audit
    asks for a sync again (as KCL does)."""

    def __init__(self, confidence_threshold: int = DEFAULT_CONFIDENCE_THRESHOLD) -> None:
        if confidence_threshold < 1:
            raise ConfigurationError(f"confidence_threshold must be >= 1, got {confidence_threshold}")
        self.confidence_threshold = confidence_threshold
        self._holes: tuple[HashKeyRange, ...] = ()
        self._count = 0

    @property
    def consecutive(self) -> int:
        """How many consecutive audits found the current holes."""
        return self._count

    def record(self, holes: Sequence[HashKeyRange]) -> bool:
        """Record one audit's holes; return whether a shard sync is needed now."""
        current = tuple(holes)
        if not current:
            self.reset()
            return False
        if current == self._holes:
            self._count += 1
        else:
            self._holes = current
            self._count = 1
        return self._count >= self.confidence_threshold

    def reset(self) -> None:
        self._holes = ()
        self._count = 0


# -- the shell ---------------------------------------------------------------------------------------------


class ShardSyncer:
    """Applies the shard-sync decisions to a lease store, for one stream.

    In a fleet only the leader runs :meth:`sync`, :meth:`clean_up` and :meth:`audit`; any worker runs
    :meth:`create_child_leases` for the shard it finished. Every write is conditional or idempotent, so
    concurrent runs are safe: each lease is created once, whoever wins.
    """

    def __init__(
        self,
        store: LeaseStore,
        source: StreamSource,
        position: InitialPosition,
        *,
        auditor: HoleAuditor | None = None,
    ) -> None:
        self._store = store
        self._source = source
        self._position = position
        self._auditor = auditor if auditor is not None else HoleAuditor()
        self._lock = threading.Lock()

    @property
    def position(self) -> InitialPosition:
        return self._position

    @property
    def auditor(self) -> HoleAuditor:
        return self._auditor

    def sync(self) -> list[Lease]:
        """List the shards and leases, create the missing leases; return those this call created."""
        with self._lock:
            leases = self._store.list_leases()
            if leases:
                shards = self._source.list_shards()
            else:
                shards = self._source.list_shards(self._position.shard_filter)
                self._check_bootstrap_listing(shards)
            skipped = inconsistent_shard_ids(shards)
            if skipped:
                logger.warning(
                    "stream %s: not creating leases for shards %s whose parent is still open (listing taken "
                    "during a reshard); the next sync will",
                    self._source.stream_name,
                    ", ".join(sorted(skipped)),
                )
            return self._create_all(leases_to_create(shards, leases, self._position), "shard sync")

    def _check_bootstrap_listing(self, shards: Sequence[Shard]) -> None:
        if not shards:
            raise InvalidStateError(
                f"stream {self._source.stream_name} listed no shards at {self._position.kind.value}; "
                "is it being created? retry the shard sync later"
            )
        holes = hash_range_holes(
            [_new_lease(s, self._position.checkpoint) for s in shards_at_initial_position(shards, self._position)]
        )
        if holes:
            raise InvalidStateError(
                f"the shards of stream {self._source.stream_name} at {self._position.kind.value} do not cover "
                f"the hash-key space (first gap [{holes[0].start}, {holes[0].end}]); the listing raced a "
                "reshard — retry the shard sync later"
            )

    def _report_existing(self, lease_key: str, why: str) -> None:
        """An item holds the key: a lease another worker created (fine), or an unreadable one (loud)."""
        existing = self._store.read_lease_item(lease_key)
        if isinstance(existing, MalformedLease):
            logger.warning("%s: %s", why, malformed_lease_message(self._store.table_name, existing))
        else:
            logger.debug("%s: lease %s already exists (created by another worker)", why, lease_key)

    def _create_all(self, leases: Sequence[Lease], why: str) -> list[Lease]:
        created: list[Lease] = []
        for lease in leases:
            result = self._store.create_lease_if_not_exists(lease)
            if result is None:
                self._report_existing(lease.lease_key, why)
                continue
            logger.info(
                "%s: created lease %s at %s (parents: %s)",
                why,
                lease.lease_key,
                lease.checkpoint,
                ", ".join(sorted(lease.parent_shard_ids)) or "none",
            )
            created.append(result)
        return created

    def create_child_leases(self, parent: Lease, children: Sequence[ChildShard]) -> list[Lease]:
        """Create the leases of the children of ``parent`` (read to SHARD_END) and record them in the parent's
        ``childShardIds``; return the leases this call created.

        Raises :class:`InvalidStateError` without writing anything if a merge child must wait for the other
        parent's lease (:func:`deferred_merge_children`), or if the parent lease no longer exists when its
        ``childShardIds`` are written; retry later, and do not checkpoint the parent at SHARD_END before this
        succeeds.
        """
        if not children:
            return []
        keys = dict.fromkeys([parent.lease_key, *(c.shard_id for c in children)])
        for child in children:
            keys.update(dict.fromkeys(child.parent_shards))
        snapshot = {key: lease for key in keys if (lease := self._store.get_lease(key)) is not None}
        to_create, deferred = _plan_children(parent, children, snapshot)
        if deferred:
            raise InvalidStateError(
                f"shard {parent.lease_key}: merge child {', '.join(deferred)} waits for the lease of its other "
                "parent, which is not in the lease table yet; retry later"
            )
        created = self._create_all(to_create, f"shard {parent.lease_key} ended")
        child_ids = sorted({c.shard_id for c in children})
        if self._store.update_lease_meta(parent.lease_key, child_shard_ids=child_ids) is None:
            raise InvalidStateError(
                f"could not record child shards {', '.join(child_ids)} on lease {parent.lease_key}: the lease "
                "no longer exists"
            )
        return created

    def clean_up(self, leases: Sequence[Lease] | None = None) -> list[str]:
        """Delete the finished parent leases whose children have started (:func:`leases_to_clean_up`).

        ``leases``: a fresh snapshot of the lease table the caller already read (saves a scan)."""
        deleted: list[str] = []
        for key in leases_to_clean_up(self._store.list_leases() if leases is None else leases):
            self._store.delete_lease(key)
            logger.info("deleted lease %s: its shard is finished and its children have started", key)
            deleted.append(key)
        return deleted

    def audit(self, leases: Sequence[Lease] | None = None) -> bool:
        """One run of the hash-range auditor; runs :meth:`sync` and returns True when it decides a sync is
        needed: at once if the table has no lease, else when the auditor's confidence threshold is reached.

        ``leases``: a fresh snapshot of the lease table the caller already read (saves a scan)."""
        leases = self._store.list_leases() if leases is None else list(leases)
        if not leases:
            logger.info("stream %s: the lease table has no lease; running shard sync", self._source.stream_name)
            self.sync()
            return True
        holes = hash_range_holes(self._with_hash_ranges(leases))
        if not self._auditor.record(holes):
            if holes:
                logger.info(
                    "stream %s: %d hash-range hole(s) in the lease table, seen %d time(s) in a row (sync at %d)",
                    self._source.stream_name,
                    len(holes),
                    self._auditor.consecutive,
                    self._auditor.confidence_threshold,
                )
            return False
        logger.warning(
            "stream %s: hash-range hole(s) %s seen %d times in a row; running shard sync",
            self._source.stream_name,
            ", ".join(f"[{h.start}, {h.end}]" for h in holes[:3]) + (" ..." if len(holes) > 3 else ""),
            self._auditor.consecutive,
        )
        self.sync()
        return True

    def _with_hash_ranges(self, leases: list[Lease]) -> list[Lease]:
        """Fill in the hash ranges of unfinished leases that lack one (tables written by old clients), from
        the stream's shard list, as KCL's auditor does."""
        missing = [lease for lease in leases if lease.hash_key_range is None and not lease.is_complete]
        if not missing:
            return leases
        ranges = {s.shard_id: s.hash_key_range for s in self._source.list_shards()}
        updated = {}
        for lease in missing:
            hash_range = ranges.get(lease.lease_key)
            if hash_range is None:
                continue
            result = self._store.update_lease_meta(lease.lease_key, hash_key_range=hash_range)
            if result is not None:
                logger.info("filled in the hash range of lease %s from the stream", lease.lease_key)
                updated[lease.lease_key] = result
        return [updated.get(lease.lease_key, lease) for lease in leases]
