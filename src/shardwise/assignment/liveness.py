"""The KCL 3.x leader's liveness rules as pure functions (reference: kcl-protocol.md §6.2 steps 1–2, 6 and 8).

A lease carries no timestamp: the leader judges it alive while its ``leaseCounter`` keeps moving, measured on
the leader's *own* monotonic clock — the rule of the 2.x taker (:func:`shardwise.assignment.taker.observe`),
applied by one worker for the fleet. Across the runs of one leadership term the leader remembers
(:class:`LeaderMemory`):

* counter stamps (:func:`observe_counters`): per lease, its counter and the time of the run at which the leader
  last saw it move. A lease first seen owned counts as renewed at that run, one first seen unowned as never
  (:data:`NEVER`). A new term starts with no stamps, so a new leader declares nothing expired before a failover
  time has passed;
* its own assignments (:func:`recent_assignments`): a lease this leader just assigned or handed off is not
  expired until its new owner could have discovered it (its discovery interval may have backed off) and then
  renewed it — else it would be moved again and again;
* graceful handoffs (:func:`observe_handoffs`): when it first saw each one. A handoff blocks its lease for
  ``graceful_lease_handoff_timeout + failover``; an expired handoff is available again (KCL 3.5.0, #1765: the
  old owner died mid-handoff);
* the rebalancing cadence (:func:`rebalance_due`): every ``variance_balancing_frequency``-th run starting with
  the first, unless a hold is set (a worker that has just switched from the 2.x generation sets one, so that the
  switch itself moves no lease).

:func:`judge` folds one scan into the memory and returns what the decider's
:class:`~shardwise.assignment.utilization.AssignmentSnapshot` takes (:class:`Liveness`) with the next memory;
:func:`record_assignments` adds the moves the leader then wrote. Clock values come in as integer monotonic
nanoseconds; nothing here reads a clock, logs or performs I/O, and no input is modified:
:class:`shardwise.leasing.assigner.LeaseAssignmentManager` is the shell that keeps the memory between runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from shardwise.assignment.taker import NEVER
from shardwise.assignment.utilization import AssignmentConfig
from shardwise.leases.model import Lease

__all__ = [
    "NEVER",
    "CounterStamp",
    "LeaderMemory",
    "Liveness",
    "LivenessRules",
    "expired_keys",
    "judge",
    "observe_counters",
    "observe_handoffs",
    "rebalance_due",
    "recent_assignments",
    "record_assignments",
]

_NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class LivenessRules:
    """The leader's liveness timings, in nanoseconds of its monotonic clock.

    * ``failover_ns``: a lease whose counter has not moved for longer than this (strictly) is expired.
    * ``handoff_grace_ns``: a graceful handoff blocks its lease this long after the leader first saw it
      (``graceful_lease_handoff_timeout + failover``: the old owner's last chance to checkpoint and release,
      then the new owner's to renew).
    * ``assignment_grace_ns``: a lease this leader assigned is not expired this long after the write
      (``discovery interval + failover``).
    * ``rebalance_every``: ``variance_balancing_frequency``.
    """

    failover_ns: int
    handoff_grace_ns: int
    assignment_grace_ns: int
    rebalance_every: int

    @classmethod
    def for_leader(
        cls, config: AssignmentConfig, *, failover_time_ms: int, discovery_interval_ms: int = 0
    ) -> LivenessRules:
        """The rules of a leader with these settings (``discovery_interval_ms``: the workers' lease discovery)."""
        return cls(
            failover_ns=failover_time_ms * _NS_PER_MS,
            handoff_grace_ns=(config.graceful_lease_handoff_timeout_ms + failover_time_ms) * _NS_PER_MS,
            assignment_grace_ns=(discovery_interval_ms + failover_time_ms) * _NS_PER_MS,
            rebalance_every=config.variance_balancing_frequency,
        )


@dataclass(frozen=True, slots=True)
class CounterStamp:
    """A lease's ``leaseCounter`` as last scanned, and the leader's time of the scan at which it last moved.

    ``changed_ns`` is :data:`NEVER` (0) for a lease first seen unowned whose counter has not moved since.
    """

    counter: int
    changed_ns: int


def _no_stamps() -> Mapping[str, CounterStamp]:
    return MappingProxyType({})


def _no_times() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LeaderMemory:
    """What the leader carries from one run of its term to the next (a new term starts from ``LeaderMemory()``).

    * ``stamps``: lease key → :class:`CounterStamp`, for the leases of the latest scan.
    * ``handoffs_seen``: lease key → time the leader first saw its current graceful handoff.
    * ``assigned_at``: lease key → time this leader assigned or handed it off (recent ones only).
    * ``runs``: runs in this term so far.
    * ``rebalance_hold_ns``: no rebalancing on the term's first run nor before this time; ``None`` once over
      (or when there is none).

    The mappings are never modified; every function returns new ones.
    """

    stamps: Mapping[str, CounterStamp] = field(default_factory=_no_stamps)
    handoffs_seen: Mapping[str, int] = field(default_factory=_no_times)
    assigned_at: Mapping[str, int] = field(default_factory=_no_times)
    runs: int = 0
    rebalance_hold_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Liveness:
    """The leader's judgement of one scan, in the shape the decider's snapshot takes.

    * ``stamps``: lease key → time its counter last moved (:data:`NEVER` if never seen moving).
    * ``expired_keys``: see :func:`expired_keys`.
    * ``blocked_keys``: leases in a graceful handoff still within its grace and not expired: never moved.
    * ``rebalance``: whether this run may rebalance.
    """

    stamps: Mapping[str, int]
    expired_keys: frozenset[str]
    blocked_keys: frozenset[str]
    rebalance: bool


def observe_counters(
    previous: Mapping[str, CounterStamp], leases: Iterable[Lease], now_ns: int
) -> dict[str, CounterStamp]:
    """Fold a full scan taken at ``now_ns`` into the previous stamps (the 2.x taker's rule, ``updateAllLeases``).

    * a lease seen for the first time: stamped ``now_ns`` if owned, :data:`NEVER` if unowned;
    * a known lease whose counter changed: stamped ``now_ns``;
    * a known lease whose counter did not change: keeps its stamp;
    * a known lease missing from the scan: forgotten.
    """
    stamps: dict[str, CounterStamp] = {}
    for lease in leases:
        old = previous.get(lease.lease_key)
        if old is None:
            stamps[lease.lease_key] = CounterStamp(
                lease.lease_counter, now_ns if lease.lease_owner is not None else NEVER
            )
        elif old.counter != lease.lease_counter:
            stamps[lease.lease_key] = CounterStamp(lease.lease_counter, now_ns)
        else:
            stamps[lease.lease_key] = old
    return stamps


def recent_assignments(assigned_at: Mapping[str, int], now_ns: int, grace_ns: int) -> dict[str, int]:
    """The assignments still within their grace at ``now_ns`` (at most ``grace_ns`` old)."""
    return {key: at for key, at in assigned_at.items() if now_ns - at <= grace_ns}


def expired_keys(
    leases: Iterable[Lease],
    stamps: Mapping[str, CounterStamp],
    recently_assigned: Container[str],
    now_ns: int,
    failover_ns: int,
) -> frozenset[str]:
    """The expired leases: owned, unfinished, counter unmoved for longer than ``failover_ns`` (strictly).

    Measured back from ``now_ns``; the leases this leader assigned recently (``recently_assigned``) are not
    expired whatever their stamp. ``stamps`` must hold every lease of ``leases`` (:func:`observe_counters` of
    the same scan). An unowned lease is never expired: it is unassigned, which the deciders handle on their own;
    a SHARD_END lease is never reassigned.
    """
    return frozenset(
        lease.lease_key
        for lease in leases
        if lease.lease_owner is not None
        and not lease.is_complete
        and now_ns - stamps[lease.lease_key].changed_ns > failover_ns
        and lease.lease_key not in recently_assigned
    )


def observe_handoffs(
    previous_seen: Mapping[str, int], leases: Iterable[Lease], now_ns: int, grace_ns: int
) -> tuple[dict[str, int], frozenset[str]]:
    """Fold a scan into the first-seen times of graceful handoffs; also return the handoffs still in grace.

    A lease is in a handoff while it has a ``checkpointOwner``. Its first-seen time is kept from ``previous_seen``
    or, for a handoff seen for the first time, is ``now_ns``; handoffs missing from the scan (finished) are
    forgotten. A handoff is in grace while at most ``grace_ns`` has passed since it was first seen.
    """
    seen: dict[str, int] = {}
    in_grace: set[str] = set()
    for lease in leases:
        if lease.checkpoint_owner is None:
            continue
        first = previous_seen.get(lease.lease_key, now_ns)
        seen[lease.lease_key] = first
        if now_ns - first <= grace_ns:
            in_grace.add(lease.lease_key)
    return seen, frozenset(in_grace)


def rebalance_due(runs: int, hold_ns: int | None, now_ns: int, every: int) -> tuple[bool, int | None]:
    """Whether run ``runs`` (0 = the term's first) may rebalance, and the hold that remains after it.

    Without a hold: every ``every``-th run, starting with the first (KCL's cadence). With a hold: never on the
    term's first run nor while ``now_ns`` is before the hold; the first later run lifts the hold and follows the
    cadence (the hold does not shift it).
    """
    rebalance = runs % every == 0
    if hold_ns is not None:
        if runs == 0 or now_ns < hold_ns:
            return False, hold_ns
        return rebalance, None
    return rebalance, None


def judge(
    memory: LeaderMemory, leases: Sequence[Lease], now_ns: int, rules: LivenessRules
) -> tuple[Liveness, LeaderMemory]:
    """One run's liveness: fold the scan ``leases`` taken at ``now_ns`` into ``memory``.

    Returns the judgement (expired leases, blocked handoffs — an expired handoff is not blocked, #1765 — and
    whether to rebalance) and the memory for the next run (``runs`` counts this one).
    """
    stamps = observe_counters(memory.stamps, leases, now_ns)
    assigned = recent_assignments(memory.assigned_at, now_ns, rules.assignment_grace_ns)
    expired = expired_keys(leases, stamps, assigned, now_ns, rules.failover_ns)
    seen, in_grace = observe_handoffs(memory.handoffs_seen, leases, now_ns, rules.handoff_grace_ns)
    rebalance, hold = rebalance_due(memory.runs, memory.rebalance_hold_ns, now_ns, rules.rebalance_every)
    liveness = Liveness(
        stamps={key: stamp.changed_ns for key, stamp in stamps.items()},
        expired_keys=expired,
        blocked_keys=in_grace - expired,
        rebalance=rebalance,
    )
    return liveness, LeaderMemory(stamps, seen, assigned, memory.runs + 1, hold)


def record_assignments(memory: LeaderMemory, keys: Iterable[str], now_ns: int) -> LeaderMemory:
    """The memory once the leader has assigned or handed off the leases ``keys`` at ``now_ns``."""
    assigned = dict(memory.assigned_at)
    assigned.update(dict.fromkeys(keys, now_ns))
    return dataclasses.replace(memory, assigned_at=assigned)
