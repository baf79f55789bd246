"""KCL 2.x lease taking as pure decisions (reference: kcl-protocol.md §7).

Every worker periodically scans the whole lease table and decides, on its own, which leases to take: the
unowned ones, the expired ones, and — when nothing is free — one stolen from the most loaded worker. There is
no timestamp in a lease; a lease is alive while its ``leaseCounter`` keeps moving, as measured on the
*observer's* monotonic clock. This module holds the two pure halves of a taker run:

* :func:`observe` folds a fresh scan into the observer's memory (:class:`LeaseObservation` per lease: the lease
  and the monotonic time at which this observer last saw its counter change), exactly as KCL's
  ``DynamoDBLeaseTaker.updateAllLeases`` does;
* :func:`decide` computes the leases to take or steal from those observations (KCL's
  ``computeLeasesToTake`` / ``chooseLeasesToSteal``).

Time is passed in as integer monotonic nanoseconds and randomness as a :class:`random.Random`; inputs are sorted
by lease key before shuffling, so a decision depends only on the snapshot and the generator's state. Nothing
here performs I/O or logs: :class:`shardwise.leasing.taker.LeaseTaker` is the shell that applies decisions
with conditional writes and logs them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease, default_expiry_margin_ms

__all__ = [
    "NEVER",
    "LeaseObservation",
    "TakeDecision",
    "TakerConfig",
    "decide",
    "is_available",
    "is_expired",
    "is_very_old",
    "observe",
    "steal_count",
]

#: ``last_counter_change_ns`` of a lease this observer has never seen renewed (first seen unowned, unchanged
#: since). Such a lease is always expired and very old, whatever the clock reads.
NEVER = 0

_JAVA_INT_MAX = 2**31 - 1
_NS_PER_MS = 1_000_000


def _check_int(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; a flag passed for a count is a mistake worth reporting.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True)
class TakerConfig:
    """Settings of the KCL 2.x lease taker, with KCL's defaults (``LeaseManagementConfig``).

    * ``failover_time_ms`` (``failoverTimeMillis``): a lease whose counter has not moved for longer than this,
      on the observer's clock, is expired and may be taken.
    * ``epsilon_ms`` (``epsilonMillis``): slack subtracted from the renewal interval.
    * ``max_leases_for_worker`` (``maxLeasesForWorker``): this worker never aims for more leases.
    * ``max_leases_to_steal_at_one_time`` (``maxLeasesToStealAtOneTime``).
    * ``enable_priority_lease_assignment`` (``enablePriorityLeaseAssignment``): take "very old" leases first,
      ignoring the target.
    * ``very_old_lease_duration_multiplier`` (``veryOldLeaseDurationNanosMultiplier``): a lease is very old
      when its counter has not moved for longer than this many failover times (or was never seen moving).
    * ``local_expiry_margin_ms`` (shardwise's own): this worker stops treating a lease as held once it has not
      renewed it for ``failover_time_ms - local_expiry_margin_ms`` on its own clock (no records delivered,
      checkpoints refused, the processor gets ``lease_lost``). ``None``: a tenth of the failover time
      (:func:`shardwise.leases.model.default_expiry_margin_ms` says why). It must leave the local expiry
      longer than the renewal interval, or leases would expire between two renewals.
    """

    failover_time_ms: int = 10_000
    epsilon_ms: int = 25
    max_leases_for_worker: int = _JAVA_INT_MAX
    max_leases_to_steal_at_one_time: int = 1
    enable_priority_lease_assignment: bool = True
    very_old_lease_duration_multiplier: int = 3
    local_expiry_margin_ms: int | None = None

    def __post_init__(self) -> None:
        _check_int("failover_time_ms", self.failover_time_ms, 1, 2**63 // _NS_PER_MS)
        _check_int("epsilon_ms", self.epsilon_ms, 0, 2**63 // _NS_PER_MS)
        _check_int("max_leases_for_worker", self.max_leases_for_worker, 1, _JAVA_INT_MAX)
        _check_int("max_leases_to_steal_at_one_time", self.max_leases_to_steal_at_one_time, 1, _JAVA_INT_MAX)
        _check_int("very_old_lease_duration_multiplier", self.very_old_lease_duration_multiplier, 1, 1_000_000)
        if not isinstance(self.enable_priority_lease_assignment, bool):
            raise ConfigurationError(
                "enable_priority_lease_assignment must be a bool (True or False), "
                f"got {self.enable_priority_lease_assignment!r}"
            )
        if self.renewal_interval_ms < 1:
            raise ConfigurationError(
                "failover_time_ms / 3 - epsilon_ms (the renewal interval) must be >= 1 ms; got "
                f"failover_time_ms={self.failover_time_ms}, epsilon_ms={self.epsilon_ms}: use a failover time "
                f"of at least {3 * (self.epsilon_ms + 1)} ms or a smaller epsilon"
            )
        if self.local_expiry_margin_ms is not None:
            _check_int("local_expiry_margin_ms", self.local_expiry_margin_ms, 0, self.failover_time_ms)
        if self.local_expiry_ms <= self.renewal_interval_ms:
            raise ConfigurationError(
                f"failover_time_ms - local_expiry_margin_ms (the local expiry, {self.local_expiry_ms} ms) must be "
                f"longer than the renewal interval ({self.renewal_interval_ms} ms), or held leases would expire "
                "between two renewals: use a smaller local_expiry_margin_ms (unset: a tenth of the failover time)"
            )

    @property
    def renewal_interval_ms(self) -> int:
        """How often the renewer runs: ``failover / 3 - epsilon`` (3 308 ms by default), integer arithmetic."""
        return self.failover_time_ms // 3 - self.epsilon_ms

    @property
    def taker_interval_ms(self) -> int:
        """Delay between taker runs: ``2 * (failover + epsilon)`` (20 050 ms by default)."""
        return 2 * (self.failover_time_ms + self.epsilon_ms)

    @property
    def local_expiry_ms(self) -> int:
        """How long a lease stays held on this worker without a renewal: failover time minus the margin."""
        margin = self.local_expiry_margin_ms
        return self.failover_time_ms - (default_expiry_margin_ms(self.failover_time_ms) if margin is None else margin)

    @property
    def failover_time_ns(self) -> int:
        return self.failover_time_ms * _NS_PER_MS

    @property
    def very_old_age_ns(self) -> int:
        """Age past which a lease is very old: ``multiplier * failover``."""
        return self.very_old_lease_duration_multiplier * self.failover_time_ns


@dataclass(frozen=True, slots=True)
class LeaseObservation:
    """What one observer knows about one lease: its last scanned value and when its counter last moved.

    ``last_counter_change_ns`` is the observer's monotonic time (ns) of the scan at which it last saw the
    counter change (or at which it first saw the lease owned, or took it); :data:`NEVER` (0) if it first saw
    the lease unowned and the counter has not moved since.
    """

    lease: Lease
    last_counter_change_ns: int

    @property
    def never_renewed(self) -> bool:
        return self.last_counter_change_ns == NEVER


def observe(
    previous: Mapping[str, LeaseObservation],
    leases: Iterable[Lease],
    scan_time_ns: int,
    worker_id: str,
) -> dict[str, LeaseObservation]:
    """Fold a full scan taken at ``scan_time_ns`` into the previous observations (KCL ``updateAllLeases``).

    * a lease seen for the first time: stamped with the scan time if owned, :data:`NEVER` if unowned;
    * a known lease whose counter changed: stamped with the scan time;
    * a known lease whose counter did not change: keeps its stamp (with the newly scanned value);
    * a known lease missing from the scan: forgotten.

    ``worker_id`` is not used by the rule; it is accepted so every taker step has the same shape. The result
    is a new dict in key order; ``previous`` is not modified.
    """
    del worker_id  # KCL's stamping rule does not depend on who observes.
    fresh: dict[str, LeaseObservation] = {}
    for lease in sorted(leases, key=lambda item: item.lease_key):
        old = previous.get(lease.lease_key)
        if old is not None:
            counter_moved = old.lease.lease_counter != lease.lease_counter
            stamp = scan_time_ns if counter_moved else old.last_counter_change_ns
        elif lease.lease_owner is None:
            stamp = NEVER
        else:
            stamp = scan_time_ns
        fresh[lease.lease_key] = LeaseObservation(lease, stamp)
    return fresh


def is_expired(obs: LeaseObservation, now_ns: int, config: TakerConfig) -> bool:
    """The counter has not moved for longer than the failover time (strictly), or was never seen moving."""
    if obs.never_renewed:
        return True
    return now_ns - obs.last_counter_change_ns > config.failover_time_ns


def is_available(obs: LeaseObservation, now_ns: int, config: TakerConfig) -> bool:
    """Unowned or expired: a lease any worker may take without stealing it (KCL ``Lease.isAvailable``)."""
    return obs.lease.lease_owner is None or is_expired(obs, now_ns, config)


def is_very_old(obs: LeaseObservation, now_ns: int, config: TakerConfig) -> bool:
    """The counter has not moved for longer than ``multiplier * failover``, or was never seen moving."""
    if obs.never_renewed:
        return True
    return now_ns - obs.last_counter_change_ns > config.very_old_age_ns


@dataclass(frozen=True, slots=True)
class TakeDecision:
    """The outcome of one :func:`decide`, with everything the shell needs to log and report metrics.

    * ``to_take``: leases picked among the available ones (or the very old ones on the priority path);
      ``to_steal``: leases picked from ``steal_from``, the most loaded worker.
    * ``target``: leases this worker aims for (after clamping to ``max_leases_for_worker``; 0 if the table
      is empty); ``spillover``: how much the clamp cut off; ``needed``: ``max(0, target - my_count)``.
    * ``num_workers``: distinct owners of non-available leases, this worker included.
    * ``lease_counts``: ``(worker, count)`` over non-available leases (this worker included), by worker id.
    * ``available_keys``: unowned or expired leases (KCL's ``ExpiredLeases`` metric counts these);
      ``expired_keys``: leases whose counter has not moved for longer than the failover time (owned or not);
      ``very_old_keys``: leases past ``multiplier * failover`` (including never-renewed unowned ones).
    * ``priority``: the very-old priority path decided (``to_take`` then holds very old leases).
    """

    worker_id: str
    to_take: tuple[Lease, ...]
    to_steal: tuple[Lease, ...]
    target: int
    num_workers: int
    total_leases: int
    my_count: int
    needed: int
    spillover: int
    lease_counts: tuple[tuple[str, int], ...]
    available_keys: tuple[str, ...]
    expired_keys: tuple[str, ...]
    very_old_keys: tuple[str, ...]
    priority: bool = False
    steal_from: str | None = None
    most_loaded: tuple[str, int] | None = None

    @property
    def leases(self) -> tuple[Lease, ...]:
        """Every lease to try to take, available ones first."""
        return self.to_take + self.to_steal

    @property
    def very_old_taken(self) -> int:
        """KCL's ``VeryOldLeases`` metric: very old leases chosen on the priority path."""
        return len(self.to_take) if self.priority else 0


def steal_count(most_loaded_count: int, needed: int, target: int, max_steal: int) -> int:
    """KCL ``chooseLeasesToSteal``: how many leases to steal from the most loaded worker.

    Nothing unless it holds at least ``target`` and I need some; then ``min(needed, its - target)``, but 1
    if that is 0 and I need more than one; never more than ``max_steal``.
    """
    if most_loaded_count < target or needed <= 0:
        return 0
    count = min(needed, most_loaded_count - target)
    if count == 0 and needed > 1:
        # Quirk kept from KCL: the most loaded worker sits exactly at target and I need more than one.
        count = 1
    return min(count, max_steal)


def decide(
    worker_id: str,
    observations: Mapping[str, LeaseObservation],
    now_ns: int,
    config: TakerConfig,
    rng: random.Random,
) -> TakeDecision:
    """Choose the leases ``worker_id`` should take now (kcl-protocol.md §7, steps 2–7).

    ``now_ns`` is the observer's monotonic time, normally the time of the scan that produced
    ``observations``; it is used both for expiry and for the very-old threshold.
    """
    snapshot = [observations[key] for key in sorted(observations)]
    total = len(snapshot)

    # Step 2: available = unowned or expired.
    available = [obs.lease for obs in snapshot if is_available(obs, now_ns, config)]
    available_keys = frozenset(lease.lease_key for lease in available)
    expired_keys = tuple(obs.lease.lease_key for obs in snapshot if is_expired(obs, now_ns, config))
    very_old = [obs.lease for obs in snapshot if is_very_old(obs, now_ns, config)]
    very_old_keys = tuple(lease.lease_key for lease in very_old)

    # Step 3: counts per owner over non-available leases, myself included with 0.
    counts: dict[str, int] = {}
    for obs in snapshot:
        owner = obs.lease.lease_owner
        if obs.lease.lease_key not in available_keys and owner is not None:
            counts[owner] = counts.get(owner, 0) + 1
    counts.setdefault(worker_id, 0)
    num_workers = len(counts)
    mine = counts[worker_id]

    def decision(
        *,
        target: int = 0,
        spillover: int = 0,
        to_take: Iterable[Lease] = (),
        to_steal: Iterable[Lease] = (),
        priority: bool = False,
        steal_from: str | None = None,
        most_loaded: tuple[str, int] | None = None,
    ) -> TakeDecision:
        return TakeDecision(
            worker_id=worker_id,
            to_take=tuple(to_take),
            to_steal=tuple(to_steal),
            target=target,
            num_workers=num_workers,
            total_leases=total,
            my_count=mine,
            needed=max(0, target - mine),
            spillover=spillover,
            lease_counts=tuple(sorted(counts.items())),
            available_keys=tuple(sorted(available_keys)),
            expired_keys=expired_keys,
            very_old_keys=very_old_keys,
            priority=priority,
            steal_from=steal_from,
            most_loaded=most_loaded,
        )

    if total == 0:
        return decision()

    # Step 4: target, clamped to max_leases_for_worker.
    spillover = 0
    if num_workers >= total:
        target = 1
    else:
        target = -(-total // num_workers)
        spillover = max(0, target - config.max_leases_for_worker)
        target = min(target, config.max_leases_for_worker)

    # Step 5: very old leases first, ignoring the target but not max_leases_for_worker.
    if config.enable_priority_lease_assignment and very_old:
        rng.shuffle(very_old)
        count = max(0, min(config.max_leases_for_worker - mine, len(very_old)))
        return decision(target=target, spillover=spillover, to_take=very_old[:count], priority=True)

    # Step 6: take available leases up to the need.
    needed = target - mine
    if needed <= 0:
        return decision(target=target, spillover=spillover)
    if available:
        rng.shuffle(available)
        return decision(target=target, spillover=spillover, to_take=available[:needed])

    # Step 7: nothing available: steal from the most loaded worker (ties: smallest worker id).
    victim, victim_count = min(counts.items(), key=lambda item: (-item[1], item[0]))
    steal = steal_count(victim_count, needed, target, config.max_leases_to_steal_at_one_time)
    if steal <= 0 or victim == worker_id:
        return decision(target=target, spillover=spillover, most_loaded=(victim, victim_count))
    candidates = [obs.lease for obs in snapshot if obs.lease.lease_owner == victim]
    rng.shuffle(candidates)
    return decision(
        target=target,
        spillover=spillover,
        to_steal=candidates[:steal],
        steal_from=victim,
        most_loaded=(victim, victim_count),
    )
