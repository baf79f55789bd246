"""The application's KCL 3.x items as one worker opens them: the coordinator namespace (``Migration3.0``,
the leader lock, the features record) and the worker-metrics namespace, in the application's layout, with this
worker's metrics reporter. Opened on first use and once (a 2.x-only worker never touches them)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shardwise.backends import BackendBound, CoordinatorTables, open_coordinator_tables
from shardwise.leases.store import LeaseStore
from shardwise.metrics.sink import MetricsSink
from shardwise.tables.items import Layout
from shardwise.versions.migration_state import MIGRATION_KEY
from shardwise.worker.config import WorkerConfig
from shardwise.worker_metrics import WorkerMetricsCollector, WorkerMetricsReporter

__all__ = ["CoordinatorItems", "kcl_2x_peers"]

logger = logging.getLogger(__name__)


def kcl_2x_peers(store: LeaseStore) -> bool:
    """Whether KCL 2.x workers may share this lease table (assumed for a store that does not name its
    backend)."""
    return not isinstance(store, BackendBound) or store.backend.capabilities.kcl_2x_peers


class CoordinatorItems:
    """Opens the coordinator and worker-metrics items and the metrics reporter (once; no waiting)."""

    def __init__(
        self,
        config: WorkerConfig,
        store: LeaseStore,
        *,
        collector: WorkerMetricsCollector,
        metrics: MetricsSink,
        clock_epoch_s: Callable[[], float],
    ) -> None:
        self._config = config
        self._worker_id = config.worker_id
        self._store = store
        self._collector = collector
        self._metrics = metrics
        self._clock_epoch_s = clock_epoch_s
        self._lock = threading.Lock()
        self.tables: CoordinatorTables | None = None
        self.reporter: WorkerMetricsReporter | None = None

    @property
    def layout(self) -> Layout | None:
        return None if self.tables is None else self.tables.layout

    def open(self) -> CoordinatorTables:
        with self._lock:
            if self.tables is not None:
                return self.tables
            coordination = self._config.coordination
            tables = open_coordinator_tables(
                self._store,
                self._config.application_name,
                layout=None if coordination.layout == "auto" else coordination.layout,
                coordinator_table_name=coordination.coordinator_table_name,
                worker_metrics_table_name=coordination.worker_metrics_table_name,
            )
            if self._needs_legacy_layout(tables):
                logger.info(
                    "worker %s: compatible-with-2x on an application without coordinator items: using the legacy "
                    "layout, so that no non-lease item enters the lease table KCL 2.x workers may still read",
                    self._worker_id,
                )
                tables = open_coordinator_tables(
                    self._store,
                    self._config.application_name,
                    layout="legacy",
                    coordinator_table_name=coordination.coordinator_table_name,
                    worker_metrics_table_name=coordination.worker_metrics_table_name,
                )
            self.reporter = WorkerMetricsReporter(
                tables.worker_metrics,
                self._worker_id,
                self._collector,
                self._config.worker_metrics,
                clock_epoch_s=self._clock_epoch_s,
                metrics=self._metrics,
            )
            self.tables = tables
            logger.info(
                "worker %s: KCL 3.x coordination items in the %s layout (%s)",
                self._worker_id,
                tables.layout,
                tables.coordinator.table_name,
            )
            return tables

    def _needs_legacy_layout(self, tables: CoordinatorTables) -> bool:
        """KCL 2.x workers cannot parse non-lease items in their lease table. A worker in ``compatible-with-2x``
        (the mode a fleet of KCL 2.x workers is migrated in) on DynamoDB, with the layout left on ``auto``, therefore
        starts a new application's coordination in the legacy tables, as KCL 3.0-3.4 does; an application whose
        ``Migration3.0`` item is already in the lease table keeps the single-table layout."""
        if (
            self._config.coordination.layout != "auto"
            or self._config.client_version_config != "compatible-with-2x"
            or tables.layout != "single-table"
        ):
            return False
        if not kcl_2x_peers(self._store):
            return False
        return tables.coordinator.get(MIGRATION_KEY) is None
