"""The ``LeaseStore`` port: a table of leases with KCL's conditional operations.

Every mutating operation is *conditional* exactly as KCL's ``DynamoDBLeaseRefresher`` does it
(kcl-protocol.md §2.3). When the condition does not hold — another worker got there first — the operation
returns ``None`` (falsy). Only infrastructure faults raise, as :class:`~shardwise.errors.DependencyError`,
:class:`~shardwise.errors.ThrottlingError` or :class:`~shardwise.errors.InvalidStateError`.

Operations that succeed return the lease as it now is in the table, so callers never guess the new counter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from shardwise.checkpoint.sequence import ExtendedSequenceNumber
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.model import Lease

__all__ = [
    "AssignmentSignals",
    "LeaseScan",
    "LeaseStore",
    "MalformedLease",
    "OwnerIndex",
    "RawLeaseItem",
    "SharedTableScan",
    "repair_hint",
]


def repair_hint(table_name: str, lease_key: str) -> str:
    """The command that rewrites a malformed lease item from its valid fields (named in every report of one)."""
    return f"shardwise leases repair --app {table_name} --shard {lease_key}"


@dataclass(frozen=True, slots=True)
class MalformedLease:
    """A lease item that cannot be read as a lease: its key and what is wrong with it."""

    key: str
    problem: str


@dataclass(frozen=True, slots=True)
class LeaseScan:
    """One scan of a lease table: the valid leases (key order) and the malformed lease items (key order).
    Non-lease items (coordinator, worker metrics) are in neither."""

    leases: list[Lease] = field(default_factory=list)
    malformed: list[MalformedLease] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RawLeaseItem:
    """A lease item as stored, for repair: its key, its attributes under KCL's attribute names (``leaseCounter``,
    ``checkpoint``, ``parentShardId``…) with the values the backend holds (numbers as ``int``/``float``/
    ``Decimal``, string sets as lists, binary as ``bytes``; absent attributes left out), what is wrong with it
    (``None`` if it reads as a valid lease) and an opaque ``version`` the backend compares when replacing it."""

    key: str
    fields: Mapping[str, object]
    problem: str | None
    version: object


@runtime_checkable
class LeaseStore(Protocol):
    """Storage for the leases of one application (one lease table)."""

    @property
    def table_name(self) -> str:
        """Name of the lease table (KCL: the application name unless configured otherwise)."""
        ...

    def create_table_if_not_exists(self) -> bool:
        """Create the lease table if needed and wait until it is usable. True if this call created it."""
        ...

    def table_exists(self) -> bool:
        """Whether the lease table exists and is usable."""
        ...

    def is_empty(self) -> bool:
        """Whether the table holds no lease (non-lease items do not count)."""
        ...

    def list_leases(self) -> list[Lease]:
        """Every lease in the table, in key order.

        Non-lease items (``entityType`` other than ``LEASE``, or the reserved keys ``Leader``,
        ``Migration3.0``, ``TableMigration3.5``) and malformed lease items are skipped with a warning that
        names the key; they never make the listing fail.
        """
        ...

    def get_lease(self, lease_key: str) -> Lease | None:
        """The lease with this key, or ``None`` if there is none (or the item is not a valid lease)."""
        ...

    def scan_leases(self) -> LeaseScan:
        """Every valid lease and every malformed lease item of the table (one scan); nothing is logged."""
        ...

    def read_lease_item(self, lease_key: str) -> Lease | MalformedLease | None:
        """The lease with this key, what is wrong with it if it cannot be read, or ``None`` if there is no
        lease item with this key."""
        ...

    def read_raw_lease(self, lease_key: str) -> RawLeaseItem | None:
        """The lease item with this key as stored (for repair), or ``None`` if there is no lease item."""
        ...

    def replace_raw_lease(self, raw: RawLeaseItem, lease: Lease) -> bool:
        """Replace the item ``raw`` was read from by ``lease``, on condition that the item is unchanged since
        (every attribute as read, none added). False if it changed or is gone."""
        ...

    def create_lease_if_not_exists(self, lease: Lease) -> Lease | None:
        """Write ``lease`` if no item has its key. Condition: ``leaseKey`` does not exist."""
        ...

    def renew_lease(self, lease: Lease, *, throughput_kbps: float | None = None) -> Lease | None:
        """Renew a held lease: ``leaseCounter := c + 1`` (and ``throughputKBps`` if given).

        Condition: ``leaseCounter == lease.lease_counter`` and, unless ``lease`` is itself in handoff
        (``checkpoint_owner`` set), ``checkpointOwner`` does not exist — so a renewal fails as soon as a
        leader has started a graceful handoff, and the renewer can re-read and adopt it.
        """
        ...

    def take_lease(self, lease: Lease, owner: str) -> Lease | None:
        """Take a lease (KCL 2.x taker): ``leaseCounter := c + 1``, ``leaseOwner := owner``, remove
        ``checkpointOwner``, and add 1 to ``ownerSwitchesSinceCheckpoint`` if the owner changes.

        Condition: ``leaseCounter == lease.lease_counter``.
        """
        ...

    def evict_lease(self, lease: Lease) -> Lease | None:
        """Release a lease: remove ``leaseOwner`` (unless in handoff), remove ``checkpointOwner``, add 1 to
        ``leaseCounter``.

        Condition: the item exists and ``leaseOwner`` / ``checkpointOwner`` equal the observed values
        (or are absent where ``lease`` has them as ``None``).
        """
        ...

    def assign_lease(self, lease: Lease, new_owner: str) -> Lease | None:
        """Assign a lease (KCL 3.x leader, or completion of a handoff): ``leaseOwner := new_owner``,
        remove ``checkpointOwner``, add 1 to ``leaseCounter``, and add 1 to ``ownerSwitchesSinceCheckpoint``
        if the owner changes or the checkpoint owner is the new owner.

        Condition: the item exists and ``leaseOwner`` / ``checkpointOwner`` equal the observed values (or
        are absent where ``lease`` has them as ``None``). The counter is not part of the condition.
        """
        ...

    def initiate_graceful_handoff(self, lease: Lease, new_owner: str) -> Lease | None:
        """Start a graceful handoff: ``leaseOwner := new_owner``, ``checkpointOwner := current owner``;
        the counter is not incremented.

        Condition: the item exists, ``leaseOwner == lease.lease_owner`` and ``checkpointOwner`` does not
        exist.
        """
        ...

    def update_lease(self, lease: Lease) -> Lease | None:
        """Write the checkpoint fields of ``lease``: ``checkpoint`` (+ sub-sequence), ``pendingCheckpoint*``
        (removed when ``None``), ``ownerSwitchesSinceCheckpoint``, and ``childShardIds`` / hash range when
        present; ``leaseCounter := c + 1``.

        Condition: ``leaseCounter == lease.lease_counter``.
        """
        ...

    def update_lease_meta(
        self,
        lease_key: str,
        *,
        child_shard_ids: Iterable[str] | None = None,
        hash_key_range: HashKeyRange | None = None,
    ) -> Lease | None:
        """Write ``childShardIds`` and/or the hash range without touching the counter.

        Condition: the item exists.
        """
        ...

    def delete_lease(self, lease_key: str) -> None:
        """Delete the lease item unconditionally (a missing item is not an error)."""
        ...

    def get_checkpoint(self, lease_key: str) -> ExtendedSequenceNumber | None:
        """The lease's checkpoint, or ``None`` if there is no such lease."""
        ...


@runtime_checkable
class OwnerIndex(Protocol):
    """The KCL 3.x owner index (``LeaseOwnerToLeaseKeyIndex``: ``leaseOwner`` HASH, ``leaseKey`` RANGE,
    KEYS_ONLY), through which non-leader workers discover the leases the leader assigned to them."""

    def owner_index_status(self) -> str | None:
        """``"ACTIVE"``, ``"CREATING"``, ``"DELETING"``…, or ``None`` when the index does not exist."""
        ...

    def create_owner_index(self) -> bool:
        """Start creating the index if it does not exist (does not wait). True if this call started it."""
        ...

    def delete_owner_index(self) -> bool:
        """Start deleting the index if it exists (does not wait). True if this call started it."""
        ...

    def list_lease_keys_for_owner(self, owner: str) -> list[str]:
        """Keys of the leases whose ``leaseOwner`` is ``owner`` (eventually consistent, like a GSI query)."""
        ...


@runtime_checkable
class SharedTableScan(Protocol):
    """A lease store whose table also holds other items (KCL 3.5 single-table layout) and can return both
    from one scan, so the leader reads leases and worker metrics at the cost of one scan (as KCL 3.5 does)."""

    def list_leases_and_other_items(self) -> tuple[list[Lease], list[Mapping[str, Any]]]:
        """Every lease (as ``list_leases``) and every raw non-lease item of the table, from one scan."""
        ...

    def last_scan_others(self) -> tuple[int, list[Mapping[str, Any]]]:
        """How many complete scans of the table this store has made so far (by any of its reading methods), and
        the raw non-lease items the last one returned: a worker that scans anyway (the 2.x taker, the 3.x
        leader) reads the coordinator items from it instead of getting them again."""
        ...

    def last_scan_malformed(self) -> tuple[int, list[MalformedLease]]:
        """The number (as counted by :meth:`last_scan_others`) of the last complete scan that read every item as
        a lease or not (0: none yet), and the malformed lease items it met: a worker that scans anyway reports
        them instead of scanning again."""
        ...


@runtime_checkable
class AssignmentSignals(Protocol):
    """A lease store over a table that bills reads (DynamoDB), where the 3.x leader tells a worker it has new
    leases by a write to a lease that worker holds, which the worker's next renewal returns — so workers need
    not poll the owner index (see :mod:`shardwise.backends.aws.lease_signals`)."""

    def signal_assignment(self, lease: Lease) -> bool:
        """Signal ``lease.lease_owner`` on ``lease`` (still owned by it; its counter untouched). True if written."""
        ...

    def assignment_signals_seen(self) -> int:
        """How many changed signals the lease items this store read or wrote have carried so far."""
        ...
