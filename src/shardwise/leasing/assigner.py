"""The leader's lease assignment loop (KCL 3.x ``LeaseAssignmentManager``), as a thin I/O shell.

One run (every ``lease_assignment_interval``, on the leader only):

1. load the snapshot: one scan of the lease table, one of the worker-metrics items (classified as KCL does:
   active workers receive leases, stale entries are deleted);
2. judge liveness on the leader's own monotonic clock with the pure rules of
   :mod:`shardwise.assignment.liveness` (expired leases, handoffs still blocking, whether this run may
   rebalance), folding the scan into what this term has observed so far. A fresh term (after
   :meth:`LeaseAssignmentManager.reset`) declares nothing expired before a failover time has passed; rebalancing
   happens on every ``variance_balancing_frequency``-th run starting with the first — unless ``reset`` was given
   ``skip_rebalance_until_ns`` (a worker switching from the 2.x generation does so, so that the switch itself
   moves no lease);
3. decide with the pure decider (:mod:`shardwise.assignment.variance` or :mod:`shardwise.assignment.lease_count`);
4. apply each move with a conditional write: a graceful handoff (``initiate_graceful_handoff``) for a live
   owned lease, ``assign_lease`` otherwise. A lost race just drops that move; the moves written are remembered,
   so a lease just assigned is not judged expired before its new owner could discover and renew it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from shardwise.assignment.lease_count import decide_lease_count
from shardwise.assignment.liveness import LeaderMemory, LivenessRules, judge, record_assignments
from shardwise.assignment.utilization import AssignmentConfig, AssignmentDecision, AssignmentSnapshot
from shardwise.assignment.variance import decide_variance_based
from shardwise.errors import ShardwiseError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, SharedTableScan
from shardwise.metrics.sink import MetricsSink, NullMetricsSink, timed
from shardwise.tables.items import ItemTable, SharesLeaseTable
from shardwise.worker_metrics import (
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
        self._strategy = strategy
        self._metrics_config = metrics_config or WorkerMetricsConfig()
        self._metrics = metrics or NullMetricsSink()
        self._clock_ns = clock_ns
        self._clock_epoch_s = clock_epoch_s
        self._rng = rng or random.Random()
        self._rules = LivenessRules.for_leader(
            config, failover_time_ms=failover_time_ms, discovery_interval_ms=discovery_interval_ms
        )
        self._memory = LeaderMemory()  # see reset()
        self.last_leases: tuple[int, list[Lease]] | None = None  # (monotonic ns, leases) of the latest run

    @property
    def runs(self) -> int:
        """Runs since this worker last became leader."""
        return self._memory.runs

    def reset(self, *, skip_rebalance_until_ns: int | None = None) -> None:
        """Forget everything observed (call when leadership is lost: a new term starts from scratch).

        ``skip_rebalance_until_ns`` (a ``clock_ns`` time): the first run of the new term, and every run before
        that time, only assigns expired and unassigned leases — no variance rebalancing; afterwards the
        rebalancing cadence (every ``variance_balancing_frequency``-th run) resumes. A worker that has just
        switched from the 2.x generation passes the time by which the whole fleet will have switched, so the
        switch itself moves no lease (a fresh term also declares nothing expired for a failover time).
        """
        self._memory = LeaderMemory(rebalance_hold_ns=skip_rebalance_until_ns)

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
        liveness, self._memory = judge(self._memory, leases, now, self._rules)
        snapshot = AssignmentSnapshot(
            leases=tuple(leases),
            expired_keys=liveness.expired_keys,
            stamps=liveness.stamps,
            workers=tuple(workers.active),
            blocked_keys=liveness.blocked_keys,
        )
        decide = decide_variance_based if self._strategy == "worker-utilization-aware" else decide_lease_count
        decision = decide(snapshot, self._config, rebalance=liveness.rebalance, rng=self._rng)
        applied: list[str] = []
        failed: list[str] = []
        try:
            for move in decision.moves:
                try:
                    if move.graceful:
                        result = self._store.initiate_graceful_handoff(move.lease, move.to_worker)
                    else:
                        result = self._store.assign_lease(move.lease, move.to_worker)
                except ShardwiseError as exc:  # one lease's fault stays with that lease
                    logger.warning(
                        "could not move lease %s to %s: %s: %s",
                        move.lease.lease_key,
                        move.to_worker,
                        type(exc).__name__,
                        exc,
                    )
                    result = None
                except Exception:
                    logger.exception("unexpected error moving lease %s to %s", move.lease.lease_key, move.to_worker)
                    result = None
                (applied if result is not None else failed).append(move.lease.lease_key)
                if result is not None:
                    logger.info(
                        "leader moved lease %s from %s to %s (%s%s)",
                        move.lease.lease_key,
                        move.lease.actual_owner,
                        move.to_worker,
                        move.reason,
                        ", graceful handoff" if move.graceful else "",
                    )
        finally:
            # Even when a write fails unexpectedly, the moves already written are not judged expired next run.
            self._memory = record_assignments(self._memory, applied, now)
        worker_ids = tuple(sorted(w.worker_id for w in workers.active))
        logger.debug(
            "assignment run: %d leases, active workers [%s], %s, %d moves applied, %d failed",
            len(leases),
            ", ".join(worker_ids),
            "rebalancing" if liveness.rebalance else "expired and unassigned leases only",
            len(applied),
            len(failed),
        )
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
