"""The reporter: writes this worker's metrics item every ``reporter_frequency_ms`` (30 s) (kcl-protocol.md §5).

A partial unconditional write of ``lut``, ``sts`` and ``opr`` (KCL's ``ignoreNulls`` update, so
``entityType``/``sup``/``slu`` stay)::

    {wid/leaseKey: <worker id>, lut: <epoch seconds>, sts: {"C": [..10 averages..]}, opr: {"C": [100]}}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from shardwise.assignment.model import WorkerMetricStats, metrics_to_attributes
from shardwise.errors import ConfigurationError
from shardwise.metrics.sink import MetricsSink, NullMetricsSink, timed
from shardwise.tables.items import ItemTable
from shardwise.worker_metrics.collector import WorkerMetricsCollector
from shardwise.worker_metrics.config import WorkerMetricsConfig

__all__ = ["WorkerMetricsReporter"]

logger = logging.getLogger(__name__)


class WorkerMetricsReporter:
    """Writes this worker's metrics item (one partial, unconditional ``upsert`` per report).

    ``clock_epoch_s`` gives wall-clock epoch seconds; ``lut`` is its integer part. Each report is also
    recorded as ``Success``/``Time`` of operation ``WorkerMetricStatsReporter`` on ``metrics``.
    """

    OPERATION = "WorkerMetricStatsReporter"

    def __init__(
        self,
        items: ItemTable,
        worker_id: str,
        collector: WorkerMetricsCollector,
        config: WorkerMetricsConfig | None = None,
        *,
        clock_epoch_s: Callable[[], float] = time.time,
        metrics: MetricsSink | None = None,
    ) -> None:
        if not worker_id:
            raise ConfigurationError("worker_id must be a non-empty string")
        self._items = items
        self._worker_id = worker_id
        self._collector = collector
        self._config = config if config is not None else WorkerMetricsConfig()
        self._clock_epoch_s = clock_epoch_s
        self._metrics: MetricsSink = metrics if metrics is not None else NullMetricsSink()

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def report(self, extra: Mapping[str, Any] | None = None) -> WorkerMetricStats:
        """Close the interval and write the item, with the ``extra`` attributes if given (in the same write);
        returns the metrics written. Errors propagate unchanged."""
        with timed(self._metrics, self.OPERATION):
            stats = WorkerMetricStats(
                self._worker_id,
                lut=int(self._clock_epoch_s()),
                stats=self._collector.report_values(),
                operating_range=self._collector.operating_range(),
            )
            try:
                self._items.upsert(self._worker_id, {**metrics_to_attributes(stats), **(extra or {})})
            except Exception as exc:
                logger.debug(
                    "worker metrics of %s could not be written to %s: %s", self._worker_id, self._items.table_name, exc
                )
                raise
        logger.debug("worker metrics of %s written: sts=%s", self._worker_id, dict(stats.stats))
        return stats
