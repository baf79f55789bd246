"""The bookkeeping both KCL 3.x deciders share: each worker's projected load as the leases move in one run.

A decider (:mod:`shardwise.assignment.variance`, :mod:`shardwise.assignment.lease_count`) starts a
:class:`DeciderRun` on a snapshot, records its moves there and turns it into the
:class:`~shardwise.assignment.utilization.AssignmentDecision`; :class:`Book` is the projection under it. These
are the deciders' internals, shared between their two modules; callers use the deciders and
:func:`project_loads`.

Projection model. A worker's load in a metric is the EMA of its reported values; a worker reporting no
explicit metric gets a synthetic throughput metric ``T`` (100 = the fleet's target throughput per worker).
Moving a lease with throughput ``tp`` adds ``tp × avg / targetAverageThroughput`` (or ``avg /
targetLeasePerWorker`` when no throughput is known; ``tp × 100 / targetAverageThroughput`` for ``T``) to each
metric of the recipient, as KCL does, and — unlike KCL, which never lowers the donor within a run — subtracts
the same amount from the worker losing it (never below 0). :func:`project_loads` applies exactly this
bookkeeping to a sequence of moves.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from shardwise.assignment.model import MISSED, THROUGHPUT, WorkerMetricStats
from shardwise.assignment.utilization import (
    AssignmentConfig,
    AssignmentDecision,
    AssignmentSnapshot,
    Move,
    MoveReason,
    worker_metric_value,
)
from shardwise.leases.model import Lease

__all__ = [
    "IDLE_KBPS",
    "READING_SPREAD",
    "Book",
    "DeciderRun",
    "above",
    "is_graceful",
    "movable_keys",
    "move_reason",
    "project_loads",
    "stays_with_owner",
]

#: Operating-range ceiling of the synthetic throughput metric: 100 % of the target throughput per worker.
_SYNTHETIC_RANGE = 100.0


def _frozen(mapping: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(sorted(mapping.items())))


def _usable(worker: WorkerMetricStats) -> bool:
    """Valid and not failing. ``T`` is the leader's synthetic metric, so a missed ``T`` value does not count."""
    if not worker.is_valid():
        return False
    return not any(values and values[-1] == MISSED for name, values in worker.stats.items() if name != THROUGHPUT)


#: A lease reading less than this (KB/s, about one byte a second) counts as idle: 0. An idle shard's EMA halves
#: every renewal and the workers renew out of phase, so the tiny values of leases decaying to 0 differ between
#: workers by up to 2× (and only by rounding once they are minute); balancing on them would move leases back and
#: forth for nothing. It must stay far below real traffic, however light: at 0.1 KB/s a stream of a few small
#: records a second read as idle, and a worker joining such a fleet was never given a lease (CI: the Java 3.x
#: mixed fleet, 2 records of ~20 B per shard per second).
IDLE_KBPS = 0.001

#: How far apart two workers can read the same lease's throughput on a stream going idle: the EMAs halve every
#: renewal and the workers renew out of phase, up to 2× (see :data:`IDLE_KBPS`). A lease reading below this many
#: times the idle floor may read as idle (0) once another worker holds it.
READING_SPREAD = 2.0


#: Relative slack of "above the average / the operating range": a fleet with exactly equal throughput has
#: synthetic values of 100 ± rounding, which must not read as "above the range of 100".
_LIMIT_TOLERANCE = 1e-9


def above(value: float, limit: float) -> bool:
    """Whether ``value`` is above ``limit`` by more than rounding."""
    return value > limit + abs(limit) * _LIMIT_TOLERANCE


def _effective_throughput(value: float | None) -> float | None:
    """A usable ``throughputKBps``: finite and >= 0 (below :data:`IDLE_KBPS`: 0), else treated as unknown."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return 0.0 if value < IDLE_KBPS else float(value)


def _value_or_zero(values: Sequence[float], alpha: float) -> float:
    value = worker_metric_value(values, alpha)
    return 0.0 if value is None else value


class Book:
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

    def near_idle(self, key: str) -> bool:
        """Whether lease ``key`` carries load too close to the idle floor to be balanced on (see
        :data:`READING_SPREAD`): moving it could turn its load into 0 and back, run after run."""
        return 0 < self.tp[key] < READING_SPREAD * IDLE_KBPS

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


def _candidates(snapshot: AssignmentSnapshot, book: Book) -> list[Lease]:
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


def stays_with_owner(lease: Lease, worker: str, expired: bool) -> bool:
    """KCL: giving a lease to its actual owner is a no-op, except an expired lease stuck in a handoff (3.4.2)."""
    return lease.actual_owner == worker and not (expired and lease.in_handoff)


def move_reason(lease: Lease) -> MoveReason:
    return "unassigned" if lease.actual_owner is None else "expired"


def is_graceful(lease: Lease, snapshot: AssignmentSnapshot, config: AssignmentConfig) -> bool:
    """§6.2 step 8: graceful only for an assigned, unexpired, unfinished lease not already in a handoff."""
    return (
        config.graceful_lease_handoff
        and lease.actual_owner is not None
        and lease.lease_key not in snapshot.expired_keys
        and not lease.is_complete
        and not lease.in_handoff
    )


def movable_keys(book: Book, snapshot: AssignmentSnapshot, worker: str, moved: set[str]) -> list[str]:
    """Leases rebalancing may take from ``worker``: not SHARD_END, not blocked, not moved or spilled this run."""
    return sorted(
        key
        for key in book.members.get(worker, ())
        if key not in moved and key not in snapshot.blocked_keys and not book.leases[key].is_complete
    )


class DeciderRun:
    """One decider run: its book, the projection before any move, and what it has decided so far."""

    def __init__(self, snapshot: AssignmentSnapshot, config: AssignmentConfig) -> None:
        self.snapshot = snapshot
        self.book = Book(snapshot, config)
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


def project_loads(
    snapshot: AssignmentSnapshot, config: AssignmentConfig, moves: Iterable[Move] = ()
) -> dict[str, dict[str, float]]:
    """Worker → metric → projected value after applying ``moves`` in order, with the deciders' bookkeeping.

    With no moves: the values the deciders start from (EMA of the reported values, synthetic ``T`` for
    workers without an explicit metric). Only usable workers (valid, not failing) appear.
    """
    book = Book(snapshot, config)
    for move in moves:
        if move.lease_key not in book.leases:
            raise ValueError(f"move of lease {move.lease_key!r}, which is not in the snapshot")
        book.move(move.lease_key, move.to_worker)
    return {worker: dict(book.values[worker]) for worker in book.worker_ids}
