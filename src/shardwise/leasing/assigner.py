"""The leader's lease assignment loop (KCL 3.x ``LeaseAssignmentManager``), as a thin I/O shell.

One run (every ``lease_assignment_interval``, on the leader only):

1. load the snapshot: one scan of the lease table, one of the worker-metrics items (classified as KCL does:
   active workers receive leases, stale entries are deleted);
2. judge lease liveness on the leader's own monotonic clock: a lease seen for the first time (or after this
   worker became leader) counts as renewed now if owned, never if unowned; afterwards it is stamped whenever
   its counter moved. A lease is expired when its stamp is older than the failover time — so a new leader
   declares nothing expired before a failover time has passed;
3. decide with the pure decider (:mod:`shardwise.assignment.utilization`), rebalancing on every
   ``variance_balancing_frequency``-th run starting with the first — unless :meth:`LeaseAssignmentManager.reset`
   was given ``skip_rebalance_until_ns`` (a worker switching from the 2.x generation does so, so that the
   switch itself moves no lease);
4. apply each move with a conditional write: a graceful handoff (``initiate_graceful_handoff``) for a live
   owned lease, ``assign_lease`` otherwise. A lost race just drops that move.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from shardwise.assignment.lease_count import decide_lease_count
from shardwise.assignment.utilization import AssignmentConfig, AssignmentDecision, AssignmentSnapshot
from shardwise.assignment.variance import decide_variance_based
from shardwise.errors import DependencyError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, SharedTableScan
from shardwise.metrics.sink import MetricsSink, NullMetricsSink, timed
from shardwise.tables.items import ItemTable, SharesLeaseTable
from shardwise.worker_metrics.metrics import (
    WorkerMetricsConfig,
    WorkerMetricsSnapshot,
    classify_worker_records,
    classify_workers,
    clean_up_stale,
)

__all__ = ["AssignmentRun", "LeaseAssignmentManager"]

logger = logging.getLogger(__name__)

OPERATION = "LeaseAssignmentManager"
Strategy = Literal["worker-utilization-aware", "lease-count"]


@dataclass(frozen=True, slots=True)
class AssignmentRun:
    decision: AssignmentDecision
    applied: tuple[str, ...]
    failed: tuple[str, ...]
    workers: tuple[str, ...]


class LeaseAssignmentManager:
    def __init__(
        self,
        store: LeaseStore,
        worker_metrics: ItemTable,
        *,
        config: AssignmentConfig,
        failover_time_ms: int,
        strategy: Strategy = "worker-utilization-aware",
        metrics_config: WorkerMetricsConfig | None = None,
        metrics: MetricsSink | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        clock_epoch_s: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        discovery_interval_ms: int = 0,
    ) -> None:
        self._store = store
        self._items = worker_metrics
        self._config = config
        self._failover_ns = failover_time_ms * 1_000_000
        self._handoff_grace_ns = (config.graceful_lease_handoff_timeout_ms + failover_time_ms) * 1_000_000
        self._strategy = strategy
        self._metrics_config = metrics_config or WorkerMetricsConfig()
        self._metrics = metrics or NullMetricsSink()
        self._clock_ns = clock_ns
        self._clock_epoch_s = clock_epoch_s
        self._rng = rng or random.Random()
        self._stamps: dict[str, tuple[int, int]] = {}  # lease key -> (counter, last change ns; 0 = never)
        self._handoff_seen: dict[str, int] = {}  # lease key -> ns when its handoff was first seen
        self._runs = 0
        self._assignment_grace_ns = (discovery_interval_ms + failover_time_ms) * 1_000_000
        self._assigned_at: dict[str, int] = {}  # lease key -> ns when this leader assigned or handed it off
        self._rebalance_hold_ns: int | None = None  # see reset(skip_rebalance_until_ns=...)
        self.last_leases: tuple[int, list[Lease]] | None = None  # (monotonic ns, leases) of the latest run

    @property
    def runs(self) -> int:
        """Runs since this worker last became leader."""
        return self._runs

    def reset(self, *, skip_rebalance_until_ns: int | None = None) -> None:
        """Forget everything observed (call when leadership is lost: a new term starts from scratch).

        ``skip_rebalance_until_ns`` (a ``clock_ns`` time): the first run of the new term, and every run before
        that time, only assigns expired and unassigned leases — no variance rebalancing; afterwards the
        rebalancing cadence (every ``variance_balancing_frequency``-th run) resumes. A worker that has just
        switched from the 2.x generation passes the time by which the whole fleet will have switched, so the
        switch itself moves no lease (a fresh term also declares nothing expired for a failover time).
        """
        self._assigned_at.clear()
        self._stamps.clear()
        self._handoff_seen.clear()
        self._runs = 0
        self._rebalance_hold_ns = skip_rebalance_until_ns

    def _observe(self, leases: list[Lease], now: int) -> dict[str, int]:
        stamps: dict[str, tuple[int, int]] = {}
        for lease in leases:
            previous = self._stamps.get(lease.lease_key)
            if previous is None:
                stamps[lease.lease_key] = (lease.lease_counter, now if lease.lease_owner is not None else 0)
            elif previous[0] != lease.lease_counter:
                stamps[lease.lease_key] = (lease.lease_counter, now)
            else:
                stamps[lease.lease_key] = previous
        self._stamps = stamps
        return {key: stamp for key, (_, stamp) in stamps.items()}

    def _blocked(self, leases: list[Lease], now: int) -> frozenset[str]:
        seen: dict[str, int] = {}
        blocked: set[str] = set()
        for lease in leases:
            if lease.checkpoint_owner is None:
                continue
            first = self._handoff_seen.get(lease.lease_key, now)
            seen[lease.lease_key] = first
            if now - first <= self._handoff_grace_ns:
                blocked.add(lease.lease_key)
        self._handoff_seen = seen
        return frozenset(blocked)

    def run_once(self) -> AssignmentRun:
        with timed(self._metrics, OPERATION):
            return self._run()

    def _load(self) -> tuple[list[Lease], WorkerMetricsSnapshot]:
        """Leases and classified worker metrics: one scan of the lease table when the worker-metrics items live
        in it (single-table layout, as KCL 3.5 reads them), else a scan of each table."""
        now_epoch = self._clock_epoch_s()
        items = self._items
        if (
            isinstance(self._store, SharedTableScan)
            and isinstance(items, SharesLeaseTable)
            and items.shares_lease_table
        ):
            leases, others = self._store.list_leases_and_other_items()
            records = items.records_from(others)
            return leases, classify_worker_records(
                records, now_epoch, self._metrics_config, table_name=items.table_name
            )
        return self._store.list_leases(), classify_workers(items, now_epoch, self._metrics_config)

    def _run(self) -> AssignmentRun:
        leases, workers = self._load()
        if workers.stale:
            clean_up_stale(self._items, workers.stale)
        now = self._clock_ns()
        self.last_leases = (now, leases)
        stamps = self._observe(leases, now)
        # A lease this leader just assigned is not expired until its new owner could have discovered it (its
        # discovery interval may have backed off) and then renewed it: else it would be moved again and again.
        self._assigned_at = {k: t for k, t in self._assigned_at.items() if now - t <= self._assignment_grace_ns}
        expired = frozenset(
            lease.lease_key
            for lease in leases
            if lease.lease_owner is not None
            and not lease.is_complete
            and now - stamps[lease.lease_key] > self._failover_ns
            and lease.lease_key not in self._assigned_at
        )
        snapshot = AssignmentSnapshot(
            leases=tuple(leases),
            expired_keys=expired,
            stamps=stamps,
            workers=tuple(workers.active),
            # An expired handoff is available again (KCL 3.5.0, #1765): the old owner died mid-handoff.
            blocked_keys=self._blocked(leases, now) - expired,
        )
        rebalance = self._runs % self._config.variance_balancing_frequency == 0
        if self._rebalance_hold_ns is not None:
            if self._runs == 0 or now < self._rebalance_hold_ns:
                rebalance = False
            else:
                self._rebalance_hold_ns = None
        self._runs += 1
        decide = decide_variance_based if self._strategy == "worker-utilization-aware" else decide_lease_count
        decision = decide(snapshot, self._config, rebalance=rebalance, rng=self._rng)
        applied: list[str] = []
        failed: list[str] = []
        for move in decision.moves:
            try:
                if move.graceful:
                    result = self._store.initiate_graceful_handoff(move.lease, move.to_worker)
                else:
                    result = self._store.assign_lease(move.lease, move.to_worker)
            except DependencyError as exc:
                logger.warning("could not move lease %s to %s: %s", move.lease.lease_key, move.to_worker, exc)
                result = None
            (applied if result is not None else failed).append(move.lease.lease_key)
            if result is not None:
                self._assigned_at[move.lease.lease_key] = now
                logger.info(
                    "leader moved lease %s from %s to %s (%s%s)",
                    move.lease.lease_key,
                    move.lease.actual_owner,
                    move.to_worker,
                    move.reason,
                    ", graceful handoff" if move.graceful else "",
                )
        worker_ids = tuple(sorted(w.worker_id for w in workers.active))
        for name, value in (
            ("TotalLeases", len(leases)),
            ("NumWorkers", len(worker_ids)),
            ("ExpiredLeases", decision.expired_or_unassigned),
            ("LeaseSpillover", decision.spillover),
            ("NumOfLeasesReassignment", sum(1 for m in decision.rebalance_moves if m.lease.lease_key in applied)),
            ("FailedAssignmentCount", len(failed)),
            ("NumWorkersWithInvalidEntry", len(workers.invalid)),
            ("NumWorkersWithFailingWorkerMetric", len(workers.failing)),
        ):
            self._metrics.put(OPERATION, name, value)
        return AssignmentRun(decision, tuple(applied), tuple(failed), worker_ids)
