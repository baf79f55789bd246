"""The worker's side of the fleet migration (kcl-protocol.md §4): it builds the
:class:`~shardwise.versions.migration.MigrationCoordinator` for its application's items and runs it on one
thread — the change watcher and the readiness monitor on their cadence — applying every
:class:`~shardwise.versions.migration.MigrationStep` the coordinator returns, then confirming it."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from shardwise.leases.store import LeaseStore, OwnerIndex
from shardwise.metrics.sink import MetricsSink
from shardwise.tables.items import CoordinatorTables
from shardwise.versions.migration import TRANSITION_RETRY_NS, MigrationCoordinator, ReadinessProbe
from shardwise.versions.migration_rules import ClientVersionConfig, MigrationStep
from shardwise.versions.migration_state import MigrationStore
from shardwise.worker.config import WorkerConfig
from shardwise.worker.loops import LoopFaults, TaskFaults

__all__ = ["MigrationRunner", "open_migration"]

logger = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000


def open_migration(
    config: WorkerConfig,
    client_version_config: ClientVersionConfig,
    store: LeaseStore,
    tables: CoordinatorTables,
    *,
    is_leader: Callable[[], bool],
    metrics: MetricsSink,
    clock_ns: Callable[[], int],
    clock_epoch_s: Callable[[], float],
    rng: random.Random,
) -> MigrationCoordinator:
    """The coordinator of ``Migration3.0`` in the application's coordinator namespace, with a readiness probe on
    its lease table and worker-metrics items."""
    probe = ReadinessProbe(
        store,
        tables.worker_metrics,
        store if isinstance(store, OwnerIndex) else None,
        taker_config=config.leases,
        metrics_config=config.worker_metrics,
        clock_ns=clock_ns,
        clock_epoch_s=clock_epoch_s,
    )
    return MigrationCoordinator(
        config.worker_id,
        MigrationStore(tables.coordinator, clock_ms=lambda: int(clock_epoch_s() * 1000)),
        config.migration,
        client_version_config,
        is_leader=is_leader,
        probe=probe,
        metrics=metrics,
        clock_ns=clock_ns,
        rng=rng,
    )


class MigrationRunner:
    """Runs a coordinator for its worker: each step it returns is applied (``apply``: the worker switches its
    generation, worker-metrics reporting and owner index) and then confirmed with
    :meth:`MigrationCoordinator.entered`. A step that fails to apply is not confirmed, so the coordinator
    returns it again at its next poll.

    The thread (:meth:`start`) runs the change watcher every ``client_version_poll_interval_ms`` — the first
    poll after that plus a random 0 – ``client_version_poll_jitter_ms`` — and the readiness monitor every
    ``readiness_check_interval_ms`` while the state has one (1 s after a failed flip write), and ends once the
    client version is final. A failed run is logged by its fault (``faults``: one line, a traceback only for a
    bug and at most once a minute; a permanent error reported to the worker as the loops' are).
    """

    def __init__(
        self,
        coordinator: MigrationCoordinator,
        apply: Callable[[MigrationStep], None],
        *,
        clock_ns: Callable[[], int],
        rng: random.Random | None = None,
        faults: LoopFaults | None = None,
    ) -> None:
        self._coordinator = coordinator
        self._apply = apply
        self._clock_ns = clock_ns
        self._rng = rng if rng is not None else random.Random()
        self._watcher_faults = TaskFaults("client version watcher", faults)
        self._monitor_faults = TaskFaults("readiness monitor", faults)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def coordinator(self) -> MigrationCoordinator:
        return self._coordinator

    def run_step(self, step: MigrationStep | None) -> None:
        """Apply ``step`` (if any) and confirm it to the coordinator; a failure propagates unconfirmed."""
        if step is None:
            return
        self._apply(step)
        self._coordinator.entered(step)

    def initialize(self) -> None:
        """Settle the start state and run it."""
        self.run_step(self._coordinator.initialize())

    def start(self) -> None:
        """:meth:`initialize` if not done yet, then start the watcher/monitor thread (once)."""
        if self._coordinator.version is None:
            self.initialize()
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"migration-{self._coordinator.worker_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        coordinator = self._coordinator
        worker_id = coordinator.worker_id
        config = coordinator.config
        poll_ns = config.client_version_poll_interval_ms * _NS_PER_MS
        readiness_ns = config.readiness_check_interval_ms * _NS_PER_MS
        start = self._clock_ns()
        next_poll = start + poll_ns + int(self._rng.uniform(0, config.client_version_poll_jitter_ms) * _NS_PER_MS)
        next_readiness = start + readiness_ns
        while not self._stop.is_set():
            chosen = coordinator.behaviour
            if chosen is None or (not chosen.watch and not chosen.readiness_monitor):
                logger.info(
                    "worker %s: client version %s is final; the migration watcher stops",
                    worker_id,
                    None if coordinator.version is None else coordinator.version.value,
                )
                return
            now = self._clock_ns()
            if chosen.watch and now >= next_poll:
                try:
                    self.run_step(coordinator.poll_once())
                    self._watcher_faults.succeeded()
                except Exception as exc:
                    self._watcher_faults.failed(exc, poll_ns / 1e9)  # it polls again at its cadence
                next_poll = self._clock_ns() + poll_ns
            chosen = coordinator.behaviour
            if chosen is not None and chosen.readiness_monitor and now >= next_readiness:
                try:
                    self.run_step(coordinator.check_readiness_once())
                    self._monitor_faults.succeeded()
                except Exception as exc:
                    self._monitor_faults.failed(exc, readiness_ns / 1e9)  # it runs again at its cadence
                delay = TRANSITION_RETRY_NS if coordinator.transition_failed else readiness_ns
                next_readiness = self._clock_ns() + delay
            chosen = coordinator.behaviour
            due = [next_poll] if chosen is not None and chosen.watch else []
            if chosen is not None and chosen.readiness_monitor:
                due.append(next_readiness)
            if not due:
                continue
            wait_ns = max(0, min(due) - self._clock_ns())
            self._stop.wait(wait_ns / 1e9)
