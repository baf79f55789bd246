"""The lease: which worker processes which shard, and how far it has got.

A :class:`Lease` carries every attribute a KCL 3.x lease item has (reference: kcl-protocol.md §2.2). It is a
frozen value: operations on a lease store return the new value instead of mutating the old one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.hashkeys import HashKeyRange

__all__ = ["RESERVED_KEYS", "HeldLease", "Lease", "default_expiry_margin_ms", "expired_locally"]

#: Keys of coordinator items that may share a lease table with leases (KCL 3.5 single-table layout and the
#: lock client). Items with these keys are never leases, whatever attributes they carry.
RESERVED_KEYS = frozenset({"Leader", "Migration3.0", "TableMigration3.5"})


@dataclass(frozen=True, slots=True)
class Lease:
    """One lease item.

    Attribute names on the right are the DynamoDB attribute names KCL uses.

    * ``lease_key`` (``leaseKey``): the shard id.
    * ``lease_owner`` (``leaseOwner``): worker id, or ``None`` when unassigned (the attribute is omitted).
    * ``lease_counter`` (``leaseCounter``): optimistic-lock counter, bumped by every renewal and ownership
      change; liveness is "this counter moved recently" as seen on the observer's monotonic clock.
    * ``checkpoint`` (``checkpoint`` + ``checkpointSubSequenceNumber``).
    * ``pending_checkpoint`` (``pendingCheckpoint`` + ``pendingCheckpointSubSequenceNumber``) and
      ``pending_checkpoint_state`` (``pendingCheckpointState``): a prepared, not yet committed checkpoint.
    * ``owner_switches_since_checkpoint`` (``ownerSwitchesSinceCheckpoint``).
    * ``parent_shard_ids`` / ``child_shard_ids`` (``parentShardId`` / ``childShardIds``, string sets).
    * ``hash_key_range`` (``startingHashKey`` / ``endingHashKey``, decimal strings).
    * ``throughput_kbps`` (``throughputKBps``): EMA of KB/s delivered, written by the owner on renewal.
    * ``checkpoint_owner`` (``checkpointOwner``): during a graceful handoff, the old owner still allowed to
      checkpoint while ``lease_owner`` already names the new one.
    """

    lease_key: str
    checkpoint: ExtendedSequenceNumber
    lease_owner: str | None = None
    lease_counter: int = 0
    pending_checkpoint: ExtendedSequenceNumber | None = None
    pending_checkpoint_state: bytes | None = None
    owner_switches_since_checkpoint: int = 0
    parent_shard_ids: frozenset[str] = field(default_factory=frozenset)
    child_shard_ids: frozenset[str] = field(default_factory=frozenset)
    hash_key_range: HashKeyRange | None = None
    throughput_kbps: float | None = None
    checkpoint_owner: str | None = None

    def __post_init__(self) -> None:
        if not self.lease_key:
            raise ValueError("lease_key must not be empty")
        if self.lease_counter < 0:
            raise ValueError(f"lease_counter must be >= 0, got {self.lease_counter}")
        if self.owner_switches_since_checkpoint < 0:
            raise ValueError("owner_switches_since_checkpoint must be >= 0")
        if self.pending_checkpoint_state is not None and self.pending_checkpoint is None:
            raise ValueError("pending_checkpoint_state needs a pending_checkpoint")

    @property
    def is_unassigned(self) -> bool:
        return self.lease_owner is None

    @property
    def in_handoff(self) -> bool:
        """True while a graceful handoff is in progress (``checkpointOwner`` set)."""
        return self.checkpoint_owner is not None

    @property
    def actual_owner(self) -> str | None:
        """The worker actually processing the shard: the checkpoint owner during a handoff, else the owner."""
        return self.checkpoint_owner if self.checkpoint_owner is not None else self.lease_owner

    @property
    def is_complete(self) -> bool:
        """The shard is closed and fully processed (checkpoint ``SHARD_END``)."""
        return self.checkpoint.is_shard_end

    def counts_as_owner_switch(self, new_owner: str) -> bool:
        """Whether giving this (observed) lease to ``new_owner`` adds 1 to ``ownerSwitchesSinceCheckpoint``.

        KCL's rule for take and assign, judged on the caller's observed lease: the previous owner exists and
        differs, or the lease goes back to the worker that still held it as checkpoint owner in a handoff.
        Taking an unowned lease is not a switch.
        """
        changed_owner = self.lease_owner is not None and self.lease_owner != new_owner
        return changed_owner or self.checkpoint_owner == new_owner

    def with_changes(self, **changes: object) -> Lease:
        """A copy with the given fields replaced (``dataclasses.replace``, validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease as this worker holds it: the lease, the acquisition's token (a random id per acquisition, never
    persisted) and when this worker last renewed it (its own monotonic clock, nanoseconds)."""

    lease: Lease
    token: str
    last_renewal_ns: int

    def expired(self, now_ns: int, local_expiry_ns: int) -> bool:
        """Whether this worker must stop treating the lease as held (see :func:`expired_locally`)."""
        return expired_locally(self.last_renewal_ns, now_ns, local_expiry_ns)


def default_expiry_margin_ms(failover_time_ms: int) -> int:
    """The safety margin subtracted from the failover time for local expiry, by default: a tenth of it.

    Another worker takes a lease once its counter has not moved for ``failover_time`` on *its* clock, counted
    from when it first read that counter — never before our renewal was written, and we stamp a renewal before
    sending it. So a lease this worker stops using at ``failover_time`` after its last renewal stamp is never
    used by two workers at once, except for what happens after our last look: the consumer checks right before
    it delivers a batch, so the margin has to cover handing that batch to the processor, thread scheduling and
    the (ppm-sized) rate difference of two monotonic clocks. A tenth of the failover time (1 s by default) is
    far more than those, and leaves the lease two full renewal intervals (``failover / 3``) to be renewed in.
    """
    return failover_time_ms // 10


def expired_locally(last_renewal_ns: int, now_ns: int, local_expiry_ns: int) -> bool:
    """The local expiry rule: a lease not renewed for longer than ``local_expiry_ns`` (the failover time minus
    the safety margin) on this worker's own monotonic clock is no longer held, whatever the renewal is doing."""
    return now_ns - last_renewal_ns > local_expiry_ns
