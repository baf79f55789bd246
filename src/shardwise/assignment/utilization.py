"""KCL 3.x lease assignment as pure decisions (reference: kcl-protocol.md §6.2, §6.3, §6.6).

In KCL 3.x one worker, the leader, assigns every lease: each run of its ``LeaseAssignmentManager`` scans the
lease table and the workers' metrics, gives the expired and unassigned leases to the workers with the most
headroom and, every ``variance_balancing_frequency`` runs, moves leases from the hottest workers to the coolest
ones. This module holds the decision half of such a run:

* :func:`decide_variance_based`: KCL's default ``VarianceBasedLeaseAssignmentDecider`` (§6.3);
* :func:`decide_lease_count`: KCL's ``LeaseCountBasedLeaseAssignmentDecider`` (§6.3, last bullet);
* :func:`projected_loads`, :func:`project_loads`, :func:`metrics_out_of_balance`: the same projections the
  deciders work with, for the leader's metrics and logs and for tests.

The caller does everything that needs a clock or a table (leader-local liveness, filtering the workers'
metrics, the graceful-handoff deadlines) and hands the result over as an :class:`AssignmentSnapshot`; it then
applies the returned :class:`Move` values with conditional writes. Randomness comes from an injected
:class:`random.Random` and every input is sorted (by lease key, by worker id) before it is shuffled, so a
decision depends only on the snapshot, the configuration and the generator's state.

Projection model. A worker's load in a metric is the EMA of its reported values; a worker reporting no
explicit metric gets a synthetic throughput metric ``T`` (100 = the fleet's target throughput per worker).
Moving a lease with throughput ``tp`` adds ``tp × avg / targetAverageThroughput`` (or ``avg /
targetLeasePerWorker`` when no throughput is known; ``tp × 100 / targetAverageThroughput`` for ``T``) to each
metric of the recipient, as KCL does, and — unlike KCL, which never lowers the donor within a run — subtracts
the same amount from the worker losing it (never below 0). :func:`project_loads` applies exactly this
bookkeeping to a sequence of moves.

Where this module departs from KCL (each a documented choice, see the functions): a recipient must fit both
caps *after* taking the lease; a lease moves at most once per run; a rebalancing move must lower the projected
variance of the balanced metric; ``AssignmentConfig.rebalance_past_average``; ties are broken by lease count
and worker id instead of hash order.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from shardwise.assignment.model import MISSED, THROUGHPUT, WorkerMetricStats
from shardwise.errors import ConfigurationError
from shardwise.leases.model import Lease

__all__ = [
    "AssignmentConfig",
    "AssignmentDecision",
    "AssignmentSnapshot",
    "Move",
    "MoveReason",
    "decide_lease_count",
    "decide_variance_based",
    "metrics_out_of_balance",
    "project_loads",
    "projected_loads",
    "worker_metric_value",
]

_JAVA_INT_MAX = 2**31 - 1
#: Operating-range ceiling of the synthetic throughput metric: 100 % of the target throughput per worker.
_SYNTHETIC_RANGE = 100.0

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
      within their operating ranges. Without it, leases much larger than the imbalance (one 100 KB/s shard
      among 10 KB/s ones) can leave a worker far above the average forever. ``False`` = KCL's rule exactly.
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


def _frozen(mapping: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(sorted(mapping.items())))


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


# -- the projection shared by both deciders and project_loads ------------------------------------------------


def _usable(worker: WorkerMetricStats) -> bool:
    """Valid and not failing. ``T`` is the leader's synthetic metric, so a missed ``T`` value does not count."""
    if not worker.is_valid():
        return False
    return not any(values and values[-1] == MISSED for name, values in worker.stats.items() if name != THROUGHPUT)


def _effective_throughput(value: float | None) -> float | None:
    """A usable ``throughputKBps``: finite and >= 0, else treated as unknown."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _value_or_zero(values: Sequence[float], alpha: float) -> float:
    value = worker_metric_value(values, alpha)
    return 0.0 if value is None else value


class _Book:
    """Mutable projection of one run: who holds which lease, each worker's throughput and metric values."""

    def __init__(self, snapshot: AssignmentSnapshot, config: AssignmentConfig) -> None:
        self.config = config
        ordered = sorted(snapshot.leases, key=lambda item: item.lease_key)
        self.leases: dict[str, Lease] = {lease.lease_key: lease for lease in ordered}
        reported = (_effective_throughput(lease.throughput_kbps) for lease in ordered)
        known = [tp for tp in reported if tp is not None]
        # §6.2 step 3: avgLeaseTp over the leases that report a throughput; the others count as average.
        self.avg_lease_tp = math.fsum(known) / len(known) if known else 0.0
        self.tp: dict[str, float] = {}
        self.owner: dict[str, str | None] = {}
        self.members: dict[str | None, set[str]] = {}
        for key, lease in self.leases.items():
            tp = _effective_throughput(lease.throughput_kbps)
            self.tp[key] = self.avg_lease_tp if tp is None else tp
            self.owner[key] = lease.actual_owner
            self.members.setdefault(lease.actual_owner, set()).add(key)

        workers = sorted((w for w in snapshot.workers if _usable(w)), key=lambda w: w.worker_id)
        self.worker_ids: list[str] = [w.worker_id for w in workers]
        self.target_tp = self.avg_lease_tp * len(self.leases) / max(1, len(workers))
        self.target_leases_per_worker = max(len(self.leases) // max(len(workers), 1), 1)

        # §6.2 step 4 and §6.3: metric values (EMA) and operating ranges; a synthetic T for workers without an
        # explicit metric. A reported T is always replaced: T is the leader's own measure.
        self.values: dict[str, dict[str, float]] = {}
        self.limits: dict[str, dict[str, float]] = {}
        alpha = config.worker_metrics_ema_alpha
        for worker in workers:
            explicit = sorted(name for name in worker.stats if name != THROUGHPUT)
            if explicit:
                self.values[worker.worker_id] = {name: _value_or_zero(worker.stats[name], alpha) for name in explicit}
                self.limits[worker.worker_id] = {name: float(worker.operating_range[name][0]) for name in explicit}
            else:
                ratio = self.assigned_tp(worker.worker_id) / self.target_tp if self.target_tp > 0 else 0.0
                self.values[worker.worker_id] = {THROUGHPUT: 100.0 * ratio}
                self.limits[worker.worker_id] = {THROUGHPUT: _SYNTHETIC_RANGE}

        names = sorted({name for per_worker in self.values.values() for name in per_worker})
        self.fleet_avg: dict[str, float] = {}
        for name in names:
            values = [per_worker[name] for per_worker in self.values.values() if name in per_worker]
            self.fleet_avg[name] = math.fsum(values) / len(values)

        # Candidate queue: workers under both caps, best headroom first (lazy deletion by version).
        self._heap: list[tuple[float, int, str, int]] = []
        self._version: dict[str, int] = dict.fromkeys(self.worker_ids, 0)
        self.queued: set[str] = set()
        for worker_id in self.worker_ids:
            if self.under_caps(worker_id):
                self.enqueue(worker_id)

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def count(self, worker: str | None) -> int:
        return len(self.members.get(worker, ()))

    def assigned_tp(self, worker: str | None, extra: float | None = None) -> float:
        parts = [self.tp[key] for key in self.members.get(worker, ())]
        if extra is not None:
            parts.append(extra)
        return math.fsum(parts)

    def contribution(self, metric: str, tp: float) -> float:
        """How much holding one more lease of throughput ``tp`` adds to a worker's value of ``metric``.

        KCL: ``tp × avg / targetAverageThroughput`` (a worker holding the target throughput sits at the average),
        or ``avg / targetLeasePerWorker`` while no throughput is known. For the synthetic ``T`` the scale is its
        definition, 100 per target throughput, which is what the metric will read on the next run (KCL uses the
        fleet average of ``T``, the same value while every lease sits on a worker reporting ``T``).
        """
        if self.target_tp > 0:
            scale = _SYNTHETIC_RANGE if metric == THROUGHPUT else self.fleet_avg[metric]
            return tp * scale / self.target_tp
        return self.fleet_avg[metric] / self.target_leases_per_worker

    def move(self, key: str, to_worker: str) -> None:
        """Record that ``to_worker`` now holds lease ``key`` (its previous holder loses it)."""
        source = self.owner[key]
        if source == to_worker:
            return
        tp = self.tp[key]
        self.members[source].discard(key)
        self.members.setdefault(to_worker, set()).add(key)
        self.owner[key] = to_worker
        if source is not None and source in self.values:
            per_metric = self.values[source]
            for name in per_metric:
                per_metric[name] = max(0.0, per_metric[name] - self.contribution(name, tp))
            if source in self.queued:
                self.enqueue(source)  # its headroom grew: refresh its place in the queue
        if to_worker in self.values:
            per_metric = self.values[to_worker]
            for name in per_metric:
                per_metric[name] += self.contribution(name, tp)

    # -- candidate queue -------------------------------------------------------------------------------------

    def headroom(self, worker: str) -> float:
        """KCL ``computePercentageToReachAverage``: min over metrics of ``(avg − v) / v`` (1 when v is 0)."""
        ratios = [
            1.0 if value == 0 else (self.fleet_avg[name] - value) / value for name, value in self.values[worker].items()
        ]
        return min(ratios)

    def under_caps(self, worker: str) -> bool:
        """KCL's queue condition: throughput <= max_throughput_per_host_kbps and lease count < max leases."""
        if self.count(worker) >= self.config.max_leases_for_worker:
            return False
        max_tp = self.config.max_throughput_per_host_kbps
        return math.isinf(max_tp) or self.assigned_tp(worker) <= max_tp

    def fits(self, worker: str, key: str) -> bool:
        """Whether ``worker`` may take lease ``key`` without going over either cap (its own lease always fits)."""
        if self.owner[key] == worker:
            return True
        if self.count(worker) + 1 > self.config.max_leases_for_worker:
            return False
        max_tp = self.config.max_throughput_per_host_kbps
        return math.isinf(max_tp) or self.assigned_tp(worker, self.tp[key]) <= max_tp

    def enqueue(self, worker: str) -> None:
        self._version[worker] += 1
        self.queued.add(worker)
        # Ties (e.g. every worker at 0 before any throughput is known): fewer leases first, then worker id.
        heapq.heappush(self._heap, (-self.headroom(worker), self.count(worker), worker, self._version[worker]))

    def dequeue(self, worker: str) -> None:
        self.queued.discard(worker)
        self._version[worker] += 1

    def _pop(self) -> str | None:
        while self._heap:
            _, _, worker, version = heapq.heappop(self._heap)
            if worker in self.queued and version == self._version[worker]:
                self.dequeue(worker)
                return worker
        return None

    def pop_recipient(self, key: str) -> str | None:
        """Pop the best queued worker that can take lease ``key``; the ones skipped go back into the queue."""
        skipped: list[str] = []
        found: str | None = None
        while (worker := self._pop()) is not None:
            if self.fits(worker, key):
                found = worker
                break
            skipped.append(worker)
        for worker in skipped:
            self.enqueue(worker)
        return found

    def requeue_after_move(self, worker: str) -> None:
        """KCL: a worker that took a lease goes back into the queue only while still under both caps."""
        if self.under_caps(worker):
            self.enqueue(worker)

    # -- reporting -------------------------------------------------------------------------------------------

    def loads(self) -> Mapping[str, Mapping[str, float]]:
        return MappingProxyType({worker: _frozen(self.values[worker]) for worker in self.worker_ids})

    def throughputs(self) -> Mapping[str, float]:
        return MappingProxyType({worker: self.assigned_tp(worker) for worker in self.worker_ids})

    def counts(self) -> Mapping[str, int]:
        return MappingProxyType({worker: self.count(worker) for worker in self.worker_ids})


def _candidates(snapshot: AssignmentSnapshot, book: _Book) -> list[Lease]:
    """Expired or unassigned leases not blocked by a handoff, oldest stamp first (unassigned = 0), then key."""
    chosen = [
        lease
        for key, lease in book.leases.items()
        if key not in snapshot.blocked_keys and (key in snapshot.expired_keys or lease.actual_owner is None)
    ]

    def stamp(lease: Lease) -> tuple[int, str]:
        if lease.actual_owner is None:
            return (0, lease.lease_key)
        return (snapshot.stamps.get(lease.lease_key, 0), lease.lease_key)

    return sorted(chosen, key=stamp)


def _stays_with_owner(lease: Lease, worker: str, expired: bool) -> bool:
    """KCL: giving a lease to its actual owner is a no-op, except an expired lease stuck in a handoff (3.4.2)."""
    return lease.actual_owner == worker and not (expired and lease.in_handoff)


def _reason(lease: Lease) -> MoveReason:
    return "unassigned" if lease.actual_owner is None else "expired"


def _graceful(lease: Lease, snapshot: AssignmentSnapshot, config: AssignmentConfig) -> bool:
    """§6.2 step 8: graceful only for an assigned, unexpired, unfinished lease not already in a handoff."""
    return (
        config.graceful_lease_handoff
        and lease.actual_owner is not None
        and lease.lease_key not in snapshot.expired_keys
        and not lease.is_complete
        and not lease.in_handoff
    )


def _movable(book: _Book, snapshot: AssignmentSnapshot, worker: str, moved: set[str]) -> list[str]:
    """Leases rebalancing may take from ``worker``: not SHARD_END, not blocked, not moved or spilled this run."""
    return sorted(
        key
        for key in book.members.get(worker, ())
        if key not in moved and key not in snapshot.blocked_keys and not book.leases[key].is_complete
    )


def _population_variance(values: Iterable[float]) -> float:
    items = list(values)
    if not items:
        return 0.0
    mean = math.fsum(items) / len(items)
    return math.fsum((value - mean) ** 2 for value in items) / len(items)


class _Run:
    """One decider run: its book, the projection before any move, and what it has decided so far."""

    def __init__(self, snapshot: AssignmentSnapshot, config: AssignmentConfig) -> None:
        self.snapshot = snapshot
        self.book = _Book(snapshot, config)
        self.before = (self.book.loads(), self.book.throughputs(), self.book.counts())
        self.moves: list[Move] = []
        self.moved: set[str] = set()
        self.spilled: list[str] = []
        self.kept: list[str] = []
        self.candidates = _candidates(snapshot, self.book)

    def record(self, lease: Lease, worker: str, reason: MoveReason, *, graceful: bool) -> None:
        """Decide to give ``lease`` to ``worker``, and project it."""
        self.moves.append(Move(lease, worker, reason, graceful=graceful))
        self.moved.add(lease.lease_key)
        self.book.move(lease.lease_key, worker)

    def decision(
        self,
        *,
        rebalanced: bool,
        rebalance_metric: str | None = None,
        donors: tuple[tuple[str, float], ...] = (),
        target_leases_per_worker: int | None = None,
    ) -> AssignmentDecision:
        book = self.book
        loads_before, tp_before, counts_before = self.before
        return AssignmentDecision(
            moves=tuple(self.moves),
            spillover=len(self.spilled),
            rebalanced=rebalanced,
            spillover_keys=tuple(self.spilled),
            kept_keys=tuple(self.kept),
            expired_or_unassigned=len(self.candidates),
            rebalance_metric=rebalance_metric,
            donors=donors,
            num_workers=len(book.worker_ids),
            total_leases=len(book.leases),
            average_lease_throughput_kbps=book.avg_lease_tp,
            target_average_throughput_kbps=book.target_tp,
            target_leases_per_worker=(
                book.target_leases_per_worker if target_leases_per_worker is None else target_leases_per_worker
            ),
            fleet_averages=_frozen(book.fleet_avg),
            loads_before=loads_before,
            loads_after=book.loads(),
            throughput_before_kbps=tp_before,
            throughput_after_kbps=book.throughputs(),
            lease_counts_before=counts_before,
            lease_counts_after=book.counts(),
        )


# -- variance-based decider ----------------------------------------------------------------------------------

#: Relative slack of "above the average / the operating range": a fleet with exactly equal throughput has
#: synthetic values of 100 ± rounding, which must not read as "above the range of 100".
_LIMIT_TOLERANCE = 1e-9


def _above(value: float, limit: float) -> bool:
    return value > limit + abs(limit) * _LIMIT_TOLERANCE


def _donors_for(book: _Book, metric: str) -> list[str]:
    """KCL ``getWorkersToTakeLeasesFromIfRequired`` for one metric, over the workers reporting it.

    Rebalance is triggered when some worker is strictly outside ``avg × (1 ± threshold)`` or above its
    operating range; the donors are then the workers at or above the upper limit or above their range, or, if
    there is none, the single most loaded worker (the first by worker id among equals).
    """
    avg = book.fleet_avg[metric]
    threshold = book.config.rebalance_threshold_percentage / 100
    upper = avg * (1 + threshold)
    lower = avg * (1 - threshold)
    triggered = False
    donors: list[str] = []
    most_loaded: str | None = None
    for worker in book.worker_ids:
        per_metric = book.values[worker]
        if metric not in per_metric:
            continue
        value = per_metric[metric]
        above_range = _above(value, book.limits[worker][metric])
        if value > upper or value < lower or above_range:
            triggered = True
        if value >= upper or above_range:
            donors.append(worker)
        if most_loaded is None or book.values[most_loaded][metric] < value:
            most_loaded = worker
    if not triggered:
        return []
    if not donors and most_loaded is not None:
        donors.append(most_loaded)
    return donors


def _throughput_to_take(book: _Book, worker: str, metric: str) -> float:
    """KCL: ``assignedTp × (v − avg) / v × dampening``; 0 for a worker whose value is 0."""
    value = book.values[worker][metric]
    if value <= 0:
        return 0.0
    share = (value - book.fleet_avg[metric]) / value * book.config.dampening_percentage / 100
    return book.assigned_tp(worker) * share


def _choose_metric(book: _Book) -> tuple[str | None, list[tuple[str, float]]]:
    """The metric to rebalance and its donors with their throughput to take, largest take first.

    KCL picks the metric with the largest total throughput to take; a metric nobody is out of balance in
    cannot win over one that is (KCL's choice among equal totals depends on hash-map order).
    """
    best: tuple[float, str, list[tuple[str, float]]] | None = None
    for metric in sorted(book.fleet_avg):
        donors = _donors_for(book, metric)
        if not donors:
            continue
        takes = [(worker, _throughput_to_take(book, worker, metric)) for worker in donors]
        total = math.fsum(take for _, take in takes)
        if best is None or total > best[0]:
            best = (total, metric, takes)
    if best is None:
        return None, []
    _, metric, takes = best
    return metric, sorted(takes, key=lambda item: (-item[1], item[0]))


def _leases_to_take(
    book: _Book, snapshot: AssignmentSnapshot, donor: str, take: float, *, moved: set[str], rng: random.Random
) -> list[str]:
    """KCL ``getLeasesToTake``: one arbitrary lease from a donor without throughput, else a greedy fill.

    The donor's movable leases are shuffled and every lease that keeps the remaining amount above 0 is taken;
    if none is, and overshoot is allowed, the smallest lease is taken instead.
    """
    if not book.members.get(donor):
        return []
    movable = _movable(book, snapshot, donor, moved)
    if not movable:
        return []
    if book.assigned_tp(donor) == 0:
        return [rng.choice(movable)]
    rng.shuffle(movable)
    picked: list[str] = []
    remaining = take
    for key in movable:
        tp = book.tp[key]
        if remaining - tp <= 0:
            continue
        remaining -= tp
        picked.append(key)
    if not picked and book.config.allow_throughput_overshoot:
        picked.append(min(movable, key=lambda key: book.tp[key]))
    return picked


def _values_after_taking(book: _Book, worker: str, key: str) -> Iterator[tuple[str, float]]:
    """Each metric of ``worker`` with its projected value once it holds lease ``key`` as well."""
    tp = book.tp[key]
    for name, value in book.values[worker].items():
        yield name, value + book.contribution(name, tp)


def _above_average_or_range(book: _Book, worker: str, name: str, value: float) -> bool:
    return _above(value, book.fleet_avg[name]) or _above(value, book.limits[worker][name])


def _would_exceed_average(book: _Book, worker: str, key: str) -> bool:
    """KCL ``willAnyMetricStatsGoAboveAverageUtilizationOrOperatingRange`` for the recipient of ``key``."""
    return any(
        _above_average_or_range(book, worker, name, after) for name, after in _values_after_taking(book, worker, key)
    )


#: A move must lower the projected variance by more than this fraction to count as lowering it (rounding noise
#: must not let two workers swap their loads back and forth).
_VARIANCE_EPSILON = 1e-9


def _lowers_variance(book: _Book, metric: str, key: str, recipient: str) -> bool:
    """Whether moving lease ``key`` to ``recipient`` strictly lowers the projected variance of ``metric``."""
    delta = book.contribution(metric, book.tp[key])
    source = book.owner[key]
    if delta == 0 or source == recipient:
        return False
    current = {worker: values[metric] for worker, values in book.values.items() if metric in values}
    after = dict(current)
    if source is not None and source in after:
        after[source] = max(0.0, after[source] - delta)
    if recipient in after:
        after[recipient] += delta
    before = _population_variance(current.values())
    return _population_variance(after.values()) < before * (1 - _VARIANCE_EPSILON)


def _reduces_variance(book: _Book, metric: str, key: str, recipient: str) -> bool:
    """Whether the move lowers the variance of ``metric`` (or leaves it, for a lease adding nothing).

    Not in KCL, which never lowers a donor's projected value within a run, so it cannot notice a donor drained
    to the fleet average; here such a move stops the donor.
    """
    if book.contribution(metric, book.tp[key]) == 0:
        return True
    return _lowers_variance(book, metric, key, recipient)


def _may_pass_average(book: _Book, metric: str, key: str, recipient: str) -> bool:
    """The ``rebalance_past_average`` exception to KCL's recipient rule (see :class:`AssignmentConfig`).

    The recipient reports ``metric`` and may end above its fleet average (and, for the synthetic ``T``, above
    its nominal range of 100, which is that same average), as long as the move strictly lowers the variance
    of ``metric``; its other metrics still obey KCL's rule and an explicit metric never exceeds its range.
    """
    if metric not in book.values[recipient] or book.owner[key] == recipient:
        return False
    for name, after in _values_after_taking(book, recipient, key):
        if name == metric:
            if name != THROUGHPUT and _above(after, book.limits[recipient][name]):
                return False
        elif _above_average_or_range(book, recipient, name, after):
            return False
    return _lowers_variance(book, metric, key, recipient)


def decide_variance_based(
    snapshot: AssignmentSnapshot,
    config: AssignmentConfig,
    *,
    rebalance: bool,
    rng: random.Random,
) -> AssignmentDecision:
    """KCL's ``VarianceBasedLeaseAssignmentDecider`` (kcl-protocol.md §6.2 steps 3–6, §6.3).

    A. Every expired or unassigned lease (not blocked), oldest stamp first, goes to the queued worker with the
       most headroom that can take it under both caps; that worker's projected load rises and it is queued
       again while under both caps. A worker that already is the lease's actual owner keeps it (no move),
       unless the lease is expired in a handoff. When the queue runs dry, the rest is spillover.
    B. If ``rebalance``: for the metric with the largest total throughput to take, each donor (largest take
       first) gives the leases picked by the greedy fill, each to the best queued worker that can take it;
       once that worker would go above the fleet average or its operating range, the donor stops (and that
       worker leaves the queue) — except for the donor's first lease under ``rebalance_past_average``. A move
       that would not lower the projected variance of the metric also stops the donor. SHARD_END and blocked
       leases, and leases moved or spilled in A, are never rebalanced.
    """
    run = _Run(snapshot, config)
    book = run.book
    candidates = run.candidates
    for index, lease in enumerate(candidates):
        if not book.queued:
            run.spilled.extend(item.lease_key for item in candidates[index:])
            break
        key = lease.lease_key
        worker = book.pop_recipient(key)
        if worker is None:
            run.spilled.append(key)
            continue
        if _stays_with_owner(lease, worker, key in snapshot.expired_keys):
            book.enqueue(worker)
            run.kept.append(key)
            continue
        run.record(lease, worker, _reason(lease), graceful=False)
        book.requeue_after_move(worker)

    if not rebalance or not book.worker_ids:
        return run.decision(rebalanced=False)

    run.moved.update(run.spilled)  # a lease no worker could take under the caps is not rebalanced either
    metric, donors = _choose_metric(book)
    if metric is not None:
        for donor, take in donors:
            given = 0
            for key in _leases_to_take(book, snapshot, donor, take, moved=run.moved, rng=rng):
                if not book.queued:
                    break
                worker = book.pop_recipient(key)
                if worker is None:
                    continue  # nobody can take this lease under the caps; a smaller one may still fit
                if _would_exceed_average(book, worker, key) and not (
                    given == 0 and config.rebalance_past_average and _may_pass_average(book, metric, key, worker)
                ):
                    break  # KCL: stop taking from this donor; the worker is not queued again
                lease = book.leases[key]
                if _stays_with_owner(lease, worker, key in snapshot.expired_keys):
                    book.enqueue(worker)
                    continue
                if not _reduces_variance(book, metric, key, worker):
                    book.enqueue(worker)
                    break
                run.record(lease, worker, "rebalance", graceful=_graceful(lease, snapshot, config))
                book.requeue_after_move(worker)
                given += 1

    return run.decision(rebalanced=True, rebalance_metric=metric, donors=tuple(donors))


# -- lease-count decider -------------------------------------------------------------------------------------


def _lease_count_target(total_leases: int, workers: int, max_leases: int) -> int:
    """KCL: 1 when there are at least as many workers as leases, else ``ceil(leases / workers)``, capped."""
    if workers == 0:
        return 0
    if workers >= total_leases:
        return 1
    return min(-(-total_leases // workers), max_leases)


class _CountQueue:
    """Workers below the lease-count target, fewest leases first (ties: worker id), with lazy updates."""

    def __init__(self, book: _Book, target: int) -> None:
        self.book = book
        self.target = target
        self.heap = [(book.count(worker), worker) for worker in book.worker_ids]
        heapq.heapify(self.heap)

    def changed(self, worker: str) -> None:
        heapq.heappush(self.heap, (self.book.count(worker), worker))

    def best_for(self, key: str) -> str | None:
        """The least loaded worker below the target that can take lease ``key`` under the throughput cap."""
        skipped: list[tuple[int, str]] = []
        found: str | None = None
        while self.heap:
            count, worker = heapq.heappop(self.heap)
            if count != self.book.count(worker):
                continue  # stale entry: a fresher one was pushed when the count changed
            if count >= self.target:
                skipped.append((count, worker))
                break
            skipped.append((count, worker))
            if self.book.fits(worker, key):
                found = worker
                break
        for entry in skipped:
            heapq.heappush(self.heap, entry)
        return found


def decide_lease_count(
    snapshot: AssignmentSnapshot,
    config: AssignmentConfig,
    *,
    rebalance: bool,
    rng: random.Random,
) -> AssignmentDecision:
    """KCL's ``LeaseCountBasedLeaseAssignmentDecider`` (``LEASE_COUNT_BASED``, kcl-protocol.md §6.3).

    The target is ``ceil(#leases / #workers)`` capped by ``max_leases_for_worker``. Expired and unassigned
    leases, oldest first, each go to the worker with the fewest leases still under the target (and the
    throughput cap); rebalancing then moves one lease at a time — never a SHARD_END, blocked or in-handoff
    one — from the most loaded worker above the target to the least loaded one below it, until no worker is
    above the target or nothing more can move.
    """
    run = _Run(snapshot, config)
    book = run.book
    target = _lease_count_target(len(book.leases), len(book.worker_ids), config.max_leases_for_worker)
    least_loaded = _CountQueue(book, target)
    for lease in run.candidates:
        key = lease.lease_key
        options = [least_loaded.best_for(key)]
        if book.owner[key] in book.values:  # an active owner may keep its lease even above the target
            options.append(book.owner[key])
        eligible = [worker for worker in options if worker is not None]
        if not eligible:
            run.spilled.append(key)
            continue
        worker = min(eligible, key=lambda item: (book.count(item), item))
        if _stays_with_owner(lease, worker, key in snapshot.expired_keys):
            run.kept.append(key)
            continue
        source = book.owner[key]
        run.record(lease, worker, _reason(lease), graceful=False)
        least_loaded.changed(worker)
        if source is not None and source in book.values:
            least_loaded.changed(source)

    if not rebalance or not book.worker_ids:
        return run.decision(rebalanced=False, target_leases_per_worker=target)

    run.moved.update(run.spilled)
    # Leases only leave workers above the target and only reach workers below it, so each worker's pool of
    # movable leases is drawn up (and shuffled) once.
    pools = {
        worker: [key for key in _movable(book, snapshot, worker, run.moved) if not book.leases[key].in_handoff]
        for worker in book.worker_ids
    }
    for pool in pools.values():
        rng.shuffle(pool)
    while (step := _lease_count_step(book, target, pools)) is not None:
        key, worker = step
        lease = book.leases[key]
        run.record(lease, worker, "rebalance", graceful=_graceful(lease, snapshot, config))

    return run.decision(rebalanced=True, target_leases_per_worker=target)


def _lease_count_step(book: _Book, target: int, pools: dict[str, list[str]]) -> tuple[str, str] | None:
    """One rebalancing move of the lease-count decider: ``(lease key, recipient)`` or ``None`` when done.

    From the most loaded worker above the target (ties: largest id) to the least loaded one below it (ties:
    smallest id) that can take one of its leases under the throughput cap.
    """
    by_load = sorted(book.worker_ids, key=lambda worker: (book.count(worker), worker))
    under = [worker for worker in by_load if book.count(worker) < target]
    over = [worker for worker in reversed(by_load) if book.count(worker) > target]
    for donor in over:
        pool = pools[donor]
        for recipient in under:
            for index, key in enumerate(pool):
                if book.fits(recipient, key):
                    del pool[index]
                    return key, recipient
    return None


# -- projections for reporting and tests ---------------------------------------------------------------------


def project_loads(
    snapshot: AssignmentSnapshot, config: AssignmentConfig, moves: Iterable[Move] = ()
) -> dict[str, dict[str, float]]:
    """Worker → metric → projected value after applying ``moves`` in order, with the deciders' bookkeeping.

    With no moves: the values the deciders start from (EMA of the reported values, synthetic ``T`` for
    workers without an explicit metric). Only usable workers (valid, not failing) appear.
    """
    book = _Book(snapshot, config)
    for move in moves:
        if move.lease_key not in book.leases:
            raise ValueError(f"move of lease {move.lease_key!r}, which is not in the snapshot")
        book.move(move.lease_key, move.to_worker)
    return {worker: dict(book.values[worker]) for worker in book.worker_ids}


def metrics_out_of_balance(snapshot: AssignmentSnapshot, config: AssignmentConfig) -> tuple[str, ...]:
    """The metrics in which some worker is outside ``avg × (1 ± threshold)`` or above its operating range."""
    book = _Book(snapshot, config)
    return tuple(metric for metric in sorted(book.fleet_avg) if _donors_for(book, metric))


def projected_loads(
    snapshot: AssignmentSnapshot, config: AssignmentConfig, metric: str | None = None
) -> dict[str, float]:
    """Per worker, the value of ``metric`` the deciders start from, for the workers reporting it.

    Without ``metric``: the one a rebalance would choose now, or, when every metric is in balance, the one
    reported by the most workers (ties: by name). Empty when there is no usable worker.
    """
    book = _Book(snapshot, config)
    if metric is None:
        metric, _ = _choose_metric(book)
    if metric is None:
        reporters = {name: sum(name in book.values[w] for w in book.worker_ids) for name in book.fleet_avg}
        if not reporters:
            return {}
        metric = min(reporters, key=lambda name: (-reporters[name], name))
    return {worker: book.values[worker][metric] for worker in book.worker_ids if metric in book.values[worker]}
