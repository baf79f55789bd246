"""KCL 3.x assignment's settings and the values its deciders read and return (kcl-protocol.md §6.2, §6.3, §6.6).

In KCL 3.x one worker, the leader, assigns every lease: each run of its ``LeaseAssignmentManager`` scans the
lease table and the workers' metrics, gives the expired and unassigned leases to the workers with the most
headroom and, every ``variance_balancing_frequency`` runs, moves leases from the hottest workers to the coolest
ones. The pure half of such a run is split by what each part owns:

* this module: the settings (:class:`AssignmentConfig`), what a decider reads (:class:`AssignmentSnapshot`) and
  returns (:class:`AssignmentDecision` of :class:`Move` values), and KCL's EMA of a worker metric
  (:func:`worker_metric_value`);
* :mod:`shardwise.assignment.liveness`: the leader's liveness rules — which leases are expired or blocked by a
  handoff on the leader's clock, and whether a run may rebalance;
* :mod:`shardwise.assignment.projection`: the bookkeeping both deciders share (each worker's projected load as
  leases move) and :func:`~shardwise.assignment.projection.project_loads`;
* :mod:`shardwise.assignment.variance`: KCL's default ``VarianceBasedLeaseAssignmentDecider`` (§6.3), with the
  projections it balances on (``projected_loads``, ``metrics_out_of_balance``);
* :mod:`shardwise.assignment.lease_count`: KCL's ``LeaseCountBasedLeaseAssignmentDecider`` (§6.3, last bullet).

The caller does everything that needs a clock or a table (reading the snapshot, filtering the workers' metrics,
keeping the liveness observations) and hands the result over as an :class:`AssignmentSnapshot`; it then
applies the returned :class:`Move` values with conditional writes. Randomness comes from an injected
:class:`random.Random` and every input is sorted (by lease key, by worker id) before it is shuffled, so a
decision depends only on the snapshot, the configuration and the generator's state.

Where the deciders depart from KCL (each a documented choice, see the functions): a recipient must fit both
caps *after* taking the lease; a lease moves at most once per run; a rebalancing move must lower the projected
variance of the balanced metric; ``AssignmentConfig.rebalance_past_average`` (with the variance decider's
settling moves and exchanges, :mod:`shardwise.assignment.settle`); leases whose load is within 2× of the idle
floor are not rebalanced; ties are broken by lease count and worker id instead of hash order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from shardwise.assignment.model import MISSED, WorkerMetricStats
from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease

__all__ = [
    "AssignmentConfig",
    "AssignmentDecision",
    "AssignmentSnapshot",
    "Move",
    "MoveReason",
    "worker_metric_value",
]

_JAVA_INT_MAX = 2**31 - 1

MoveReason = Literal["unassigned", "expired", "rebalance"]


def _check_int(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; a flag passed for a count is a mistake worth reporting.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _is_number(value: object) -> bool:
    """An int or float (not a bool) that is not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a bool (True or False), got {value!r}")


@dataclass(frozen=True, slots=True)
class AssignmentConfig:
    """Settings of KCL 3.x lease assignment, with KCL's defaults (kcl-protocol.md §6.6).

    * ``rebalance_threshold_percentage`` (``reBalanceThresholdPercentage``): a worker more than this many
      percent above or below the fleet average of a metric triggers a rebalance.
    * ``dampening_percentage`` (``dampeningPercentage``): share of a donor's excess that one rebalance moves.
    * ``variance_balancing_frequency`` (``varianceBalancingFrequency``): rebalance every this many runs,
      starting with the first run as leader (see :meth:`is_rebalance_run`).
    * ``max_throughput_per_host_kbps`` (``maxThroughputPerHostKBps``): no worker is given a lease that would
      take its assigned throughput above this (KB/s).
    * ``allow_throughput_overshoot`` (``allowThroughputOvershoot``): a donor none of whose leases fits the
      amount to move gives its smallest lease instead.
    * ``max_leases_for_worker`` (``maxLeasesForWorker``): no worker is given more leases than this.
    * ``worker_metrics_ema_alpha`` (``workerMetricsEMAAlpha``): smoothing of the reported metric values.
    * ``graceful_lease_handoff`` (``isGracefulLeaseHandoffEnabled``) and
      ``graceful_lease_handoff_timeout_ms`` (``gracefulLeaseHandoffTimeoutMillis``): rebalanced leases are
      handed over gracefully (the old owner checkpoints first); the caller uses the timeout to decide which
      handoffs are still blocking (:attr:`AssignmentSnapshot.blocked_keys`).
    * ``rebalance_past_average`` (shardwise, not in KCL): when the first lease a donor gives in a run would take
      the best recipient above the fleet average, KCL gives nothing; with this flag the lease still moves if
      that strictly lowers the variance of the balanced metric and keeps the recipient's explicit metrics
      within their operating ranges; and a donor still above ``average × (1 + threshold)`` after KCL's fill
      makes one settling move or exchange (:mod:`shardwise.assignment.settle`: it must lower the higher of the
      two workers by half the threshold, so it cannot be undone the next run). Without it, leases much larger
      than the imbalance (one 100 KB/s shard among 10 KB/s ones) can leave a worker far above the average
      forever. ``False`` = KCL's rules (the idle floor aside, which applies either way).
    """

    rebalance_threshold_percentage: int = 10
    dampening_percentage: int = 60
    variance_balancing_frequency: int = 3
    max_throughput_per_host_kbps: float = math.inf
    allow_throughput_overshoot: bool = True
    max_leases_for_worker: int = _JAVA_INT_MAX
    worker_metrics_ema_alpha: float = 0.5
    graceful_lease_handoff: bool = True
    graceful_lease_handoff_timeout_ms: int = 30_000
    rebalance_past_average: bool = True

    def __post_init__(self) -> None:
        _check_int("rebalance_threshold_percentage", self.rebalance_threshold_percentage, 0, 10_000)
        _check_int("dampening_percentage", self.dampening_percentage, 1, 100)
        _check_int("variance_balancing_frequency", self.variance_balancing_frequency, 1, _JAVA_INT_MAX)
        _check_int("max_leases_for_worker", self.max_leases_for_worker, 1, _JAVA_INT_MAX)
        _check_int("graceful_lease_handoff_timeout_ms", self.graceful_lease_handoff_timeout_ms, 0, 2**63 // 10**6)
        _check_bool("allow_throughput_overshoot", self.allow_throughput_overshoot)
        _check_bool("graceful_lease_handoff", self.graceful_lease_handoff)
        _check_bool("rebalance_past_average", self.rebalance_past_average)
        if not _is_number(self.max_throughput_per_host_kbps) or not self.max_throughput_per_host_kbps > 0:
            raise ConfigurationError(
                "max_throughput_per_host_kbps must be a number > 0 (math.inf for no limit), "
                f"got {self.max_throughput_per_host_kbps!r}"
            )
        if not _is_number(self.worker_metrics_ema_alpha) or not 0 < self.worker_metrics_ema_alpha <= 1:
            raise ConfigurationError(
                f"worker_metrics_ema_alpha must be a number in (0, 1], got {self.worker_metrics_ema_alpha!r}"
            )

    def is_rebalance_run(self, run_index: int) -> bool:
        """Whether run ``run_index`` (0 = first run since this worker became leader) rebalances (§6.2 step 6)."""
        return run_index % self.variance_balancing_frequency == 0


def worker_metric_value(values: Sequence[float], alpha: float) -> float | None:
    """KCL's value of one worker metric: EMA over the reported values, oldest first, skipping ``-1``.

    The first kept value seeds the average; each later one gives ``alpha × value + (1 − alpha) × average``.
    ``None`` when no value was kept (the deciders then use 0, as KCL does).
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    average: float | None = None
    for value in values:
        if value == MISSED:
            continue
        average = value if average is None else alpha * value + (1 - alpha) * average
    return average


@dataclass(frozen=True, slots=True)
class AssignmentSnapshot:
    """Everything one leader run decides on.

    * ``leases``: the whole lease table (every lease, SHARD_END ones included: they count in the averages).
    * ``expired_keys``: leases whose ``leaseCounter`` has not moved for the failover time on the leader's
      clock (§6.2 step 2). Together with the unassigned leases (no actual owner) they are reassigned first.
    * ``stamps``: leader-local stamp of each lease's last counter change; expired leases are reassigned oldest
      stamp first. Unassigned leases always count as 0, missing stamps too.
    * ``workers``: the active workers' metrics (valid, reported recently, not failing — §5.3). The deciders
      drop invalid and failing entries again (they cannot be used), so passing them is harmless.
    * ``blocked_keys``: leases in a graceful handoff that has not timed out; never moved.
    """

    leases: tuple[Lease, ...]
    expired_keys: frozenset[str] = frozenset()
    stamps: Mapping[str, int] = field(default_factory=dict)
    workers: tuple[WorkerMetricStats, ...] = ()
    blocked_keys: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "leases", tuple(self.leases))
        object.__setattr__(self, "workers", tuple(self.workers))
        object.__setattr__(self, "expired_keys", frozenset(self.expired_keys))
        object.__setattr__(self, "blocked_keys", frozenset(self.blocked_keys))
        keys = [lease.lease_key for lease in self.leases]
        if len(set(keys)) != len(keys):
            raise ValueError("AssignmentSnapshot.leases holds two leases with the same key")
        ids = [worker.worker_id for worker in self.workers]
        if len(set(ids)) != len(ids):
            raise ValueError("AssignmentSnapshot.workers holds two entries for the same worker")


@dataclass(frozen=True, slots=True)
class Move:
    """Give ``lease`` (the snapshot value, for the conditional write) to ``to_worker``.

    ``graceful``: hand over with ``initiate_graceful_handoff`` (the current owner checkpoints and releases);
    otherwise ``assign_lease``. Only rebalancing moves of assigned, unexpired, unfinished leases that are not
    already in a handoff are graceful, and only when the configuration enables it (§6.2 step 8).
    """

    lease: Lease
    to_worker: str
    reason: MoveReason
    graceful: bool

    @property
    def lease_key(self) -> str:
        return self.lease.lease_key

    @property
    def from_worker(self) -> str | None:
        """The worker processing the lease now (its actual owner), ``None`` for an unassigned lease."""
        return self.lease.actual_owner


def _empty_map() -> Mapping[str, float]:
    return MappingProxyType({})


def _empty_counts() -> Mapping[str, int]:
    return MappingProxyType({})


def _empty_loads() -> Mapping[str, Mapping[str, float]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AssignmentDecision:
    """The outcome of one decider run, with what the leader needs for its metrics and logs.

    * ``moves``: assignments of expired/unassigned leases first (in decision order), then rebalancing moves.
      A lease appears at most once.
    * ``spillover`` (KCL's ``LeaseSpillover`` metric) and ``spillover_keys``: expired or unassigned leases no
      worker could take (no candidate worker left, none under the caps or, for the lease-count decider,
      none below the target).
    * ``kept_keys``: expired leases whose best worker already is their actual owner: KCL leaves them alone.
    * ``expired_or_unassigned``: how many leases were up for reassignment (KCL's ``ExpiredLeases`` metric).
    * ``rebalanced``: the rebalancing pass ran (asked for, and some worker was available).
      ``rebalance_metric``: the metric it balanced (``None`` when every metric was within the threshold, and
      always for the lease-count decider); ``donors``: ``(worker, KB/s to move)`` in the order processed.
    * ``average_lease_throughput_kbps`` (``avgLeaseTp``), ``target_average_throughput_kbps``
      (``targetAverageThroughput``), ``target_leases_per_worker`` (variance decider: ``max(#leases //
      #workers, 1)``; lease-count decider: its capped target) and ``fleet_averages`` (metric → average).
    * ``loads_before`` / ``loads_after``: worker → metric → projected value, before any move and after all
      of them; ``throughput_*_kbps`` and ``lease_counts_*``: per active worker, by actual owner.
    """

    moves: tuple[Move, ...]
    spillover: int
    rebalanced: bool
    spillover_keys: tuple[str, ...] = ()
    kept_keys: tuple[str, ...] = ()
    expired_or_unassigned: int = 0
    rebalance_metric: str | None = None
    donors: tuple[tuple[str, float], ...] = ()
    num_workers: int = 0
    total_leases: int = 0
    average_lease_throughput_kbps: float = 0.0
    target_average_throughput_kbps: float = 0.0
    target_leases_per_worker: int = 0
    fleet_averages: Mapping[str, float] = field(default_factory=_empty_map)
    loads_before: Mapping[str, Mapping[str, float]] = field(default_factory=_empty_loads)
    loads_after: Mapping[str, Mapping[str, float]] = field(default_factory=_empty_loads)
    throughput_before_kbps: Mapping[str, float] = field(default_factory=_empty_map)
    throughput_after_kbps: Mapping[str, float] = field(default_factory=_empty_map)
    lease_counts_before: Mapping[str, int] = field(default_factory=_empty_counts)
    lease_counts_after: Mapping[str, int] = field(default_factory=_empty_counts)

    @property
    def assignment_moves(self) -> tuple[Move, ...]:
        """Moves of expired or unassigned leases."""
        return tuple(move for move in self.moves if move.reason != "rebalance")

    @property
    def rebalance_moves(self) -> tuple[Move, ...]:
        """Moves made by rebalancing (KCL's ``NumOfLeasesReassignment`` counts these)."""
        return tuple(move for move in self.moves if move.reason == "rebalance")
