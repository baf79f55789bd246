"""``shardwise leases repair``: rewrite a malformed lease item from its valid fields.

:func:`rebuild_lease` is the pure part: given the item as stored (:class:`~shardwise.leases.store.RawLeaseItem`),
it keeps every field that is valid and replaces the others, saying why for each:

* ``leaseOwner`` and ``checkpointOwner``: kept if a non-empty string, else removed;
* ``leaseCounter``: kept if a whole number the backends can increment, else a fresh valid value that differs
  from what is stored, so any worker holding the lease on the old value loses it and takers see it move;
* ``checkpoint``: kept if readable, else the ``checkpoint`` given (``--checkpoint``) or ``TRIM_HORIZON`` — no
  record is lost, some may be processed again; a given checkpoint always wins;
* the pending checkpoint (with its state), ``ownerSwitchesSinceCheckpoint``, parents, children, the hash range
  and ``throughputKBps``: kept if readable, else removed (the switch count reset to 0).

:func:`repair_lease` is the shell: read the item through the store, rebuild it, and replace it on condition
that it is unchanged since it was read (unless ``dry_run``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.hashkeys import HashKeyRange
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, RawLeaseItem

__all__ = ["RepairOutcome", "RepairPlan", "rebuild_lease", "repair_lease"]

#: The largest counter every backend can still increment (SQLite's INTEGER maximum is 2^63-1).
_MAX_COUNTER = 2**63 - 2


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """The item as stored, the lease it is rewritten as, and one note per field that was not kept as is."""

    raw: RawLeaseItem
    lease: Lease
    changes: tuple[str, ...]


def _whole(value: object) -> int | None:
    """A whole number (``int``, or an integral finite ``Decimal``), else ``None``; floats and bools are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return None


def _count(value: object) -> int | None:
    number = _whole(value)
    return number if number is not None and 0 <= number <= _MAX_COUNTER else None


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _sequence(text: object, sub: object) -> ExtendedSequenceNumber | None:
    sub_number = 0 if sub is None else _count(sub)
    if not isinstance(text, str) or sub_number is None:
        return None
    try:
        return ExtendedSequenceNumber(text, sub_number)
    except ValueError:
        return None


def _ids(value: object) -> frozenset[str] | None:
    if isinstance(value, list | tuple | set | frozenset) and all(isinstance(v, str) and v for v in value):
        return frozenset(value)
    return None


def _hash_range(start: object, end: object) -> HashKeyRange | None:
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        return HashKeyRange.from_strings(start, end)
    except ValueError:
        return None


def _throughput(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _fresh_counter(stored: object) -> int:
    """A valid counter that differs from the stored value, whatever its type (1, or 2 if it equals 1)."""
    try:
        same = stored == 1 or float(str(stored)) == 1.0
    except ValueError:
        same = False
    return 2 if same else 1


def rebuild_lease(raw: RawLeaseItem, *, checkpoint: ExtendedSequenceNumber | None = None) -> RepairPlan:
    """The lease ``raw`` is rewritten as: its valid fields kept, the others replaced (see the module)."""
    fields: Mapping[str, object] = raw.fields
    changes: list[str] = []

    def note(name: str, outcome: str) -> None:
        if name in fields:
            changes.append(f"{name}: {fields[name]!r} is not valid; {outcome}")
        else:
            changes.append(f"{name}: missing; {outcome}")

    owner = _string(fields.get("leaseOwner"))
    if owner is None and "leaseOwner" in fields:
        note("leaseOwner", "removed (the lease is unassigned)")
    counter = _count(fields.get("leaseCounter"))
    if counter is None:
        counter = _fresh_counter(fields.get("leaseCounter"))
        note("leaseCounter", f"set to {counter} (any holder of the old value loses the lease)")
    position = _sequence(fields.get("checkpoint"), fields.get("checkpointSubSequenceNumber"))
    if checkpoint is not None:
        if position != checkpoint:
            changes.append(f"checkpoint: {fields.get('checkpoint')!r} replaced by {checkpoint} (--checkpoint)")
        position = checkpoint
    elif position is None:
        position = TRIM_HORIZON
        note("checkpoint", "set to TRIM_HORIZON (no record is lost; records may be processed again)")
    pending = None
    if "pendingCheckpoint" in fields:
        pending = _sequence(fields["pendingCheckpoint"], fields.get("pendingCheckpointSubSequenceNumber"))
        if pending is None:
            note("pendingCheckpoint", "removed")
    state = fields.get("pendingCheckpointState")
    if state is not None and (pending is None or not isinstance(state, bytes)):
        note("pendingCheckpointState", "removed")
        state = None
    switches = _count(fields.get("ownerSwitchesSinceCheckpoint", 0))
    if switches is None:
        note("ownerSwitchesSinceCheckpoint", "reset to 0")
        switches = 0
    id_sets: dict[str, frozenset[str]] = {}
    for name in ("parentShardId", "childShardIds"):
        ids = _ids(fields.get(name, []))
        if ids is None:
            note(name, "removed")
        id_sets[name] = ids or frozenset()
    hash_range = None
    if "startingHashKey" in fields or "endingHashKey" in fields:
        hash_range = _hash_range(fields.get("startingHashKey"), fields.get("endingHashKey"))
        if hash_range is None:
            note("startingHashKey/endingHashKey", "removed (the range is read from the stream again)")
    throughput = _throughput(fields.get("throughputKBps"))
    if throughput is None and "throughputKBps" in fields:
        note("throughputKBps", "removed")
    checkpoint_owner = _string(fields.get("checkpointOwner"))
    if checkpoint_owner is None and "checkpointOwner" in fields:
        note("checkpointOwner", "removed (no handoff in progress)")
    lease = Lease(
        lease_key=raw.key,
        checkpoint=position,
        lease_owner=owner,
        lease_counter=counter,
        pending_checkpoint=pending,
        pending_checkpoint_state=state if isinstance(state, bytes) else None,
        owner_switches_since_checkpoint=switches,
        parent_shard_ids=id_sets["parentShardId"],
        child_shard_ids=id_sets["childShardIds"],
        hash_key_range=hash_range,
        throughput_kbps=throughput,
        checkpoint_owner=checkpoint_owner,
    )
    return RepairPlan(raw, lease, tuple(changes))


@dataclass(frozen=True, slots=True)
class RepairOutcome:
    """What ``repair_lease`` found and did: ``missing`` (no lease item), ``valid`` (nothing to repair),
    ``planned`` (dry run, nothing written), ``repaired``, or ``changed`` (the item changed since it was read:
    nothing written)."""

    status: Literal["missing", "valid", "planned", "repaired", "changed"]
    plan: RepairPlan | None = None


def repair_lease(
    store: LeaseStore,
    lease_key: str,
    *,
    checkpoint: ExtendedSequenceNumber | None = None,
    dry_run: bool = False,
) -> RepairOutcome:
    """Read the lease item ``lease_key``, rebuild it from its valid fields and (unless ``dry_run``) replace it
    if it is unchanged since it was read."""
    raw = store.read_raw_lease(lease_key)
    if raw is None:
        return RepairOutcome("missing")
    if raw.problem is None:
        return RepairOutcome("valid")
    plan = rebuild_lease(raw, checkpoint=checkpoint)
    if dry_run:
        return RepairOutcome("planned", plan)
    return RepairOutcome("repaired" if store.replace_raw_lease(raw, plan.lease) else "changed", plan)
