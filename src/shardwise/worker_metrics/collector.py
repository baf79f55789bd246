"""The collector: raw samples of this worker's CPU source and the per-interval averages reported from them.

Sampled every ``in_memory_capture_frequency_ms`` (1 s) into a raw ring of :data:`RAW_SAMPLES`; each report
averages the samples since the previous report (−1 when there were none) into a ring of
``persisted_values_per_metric`` (10) values per metric — KCL's ``WorkerMetricStatsManager``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from shardwise.assignment.model import MISSED
from shardwise.worker_metrics.config import WorkerMetricsConfig
from shardwise.worker_metrics.cpu import UtilizationSource

__all__ = ["RAW_SAMPLES", "WorkerMetricsCollector"]

logger = logging.getLogger(__name__)

#: Size of the in-memory ring of raw samples (KCL's ``WorkerMetricStatsManager``).
RAW_SAMPLES = 300


class WorkerMetricsCollector:
    """Raw samples of one source and the per-interval averages reported from them. Thread-safe.

    :meth:`capture` runs every capture interval; :meth:`report_values` every reporter interval. A capture whose
    sample is ``None`` or raises is *missed*: it adds nothing, and an interval without any sample is
    reported as −1 (:data:`~shardwise.assignment.model.MISSED`). With ``source=None`` both are no-ops and
    the reported map is empty.
    """

    def __init__(
        self,
        source: UtilizationSource | None,
        config: WorkerMetricsConfig | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._source = source
        self._config = config if config is not None else WorkerMetricsConfig()
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._raw: deque[float] = deque(maxlen=RAW_SAMPLES)
        self._persisted: deque[float] = deque(maxlen=self._config.persisted_values_per_metric)
        self._failure_streak = 0
        self._missed = 0
        self.last_capture_ns: int | None = None
        self.last_report_ns: int | None = None

    @property
    def source(self) -> UtilizationSource | None:
        return self._source

    @property
    def missed_captures(self) -> int:
        """How many captures so far produced no sample."""
        with self._lock:
            return self._missed

    def operating_range(self) -> dict[str, tuple[float, ...]]:
        """``opr``: ``{name: (max_utilization,)}``, or empty without a source."""
        if self._source is None:
            return {}
        return {self._source.name: (float(self._source.max_utilization),)}

    def capture(self) -> float | None:
        """Take one sample; returns it, or ``None`` if missed."""
        if self._source is None:
            return None
        value: float | None
        try:
            value = self._source.sample()
            error: Exception | None = None
        except Exception as exc:  # any failure of a source is a missed sample, never a crash of the loop
            value, error = None, exc
        now = self._clock_ns()
        with self._lock:
            self.last_capture_ns = now
            if value is None:
                self._missed += 1
                self._failure_streak += 1
                streak = self._failure_streak
            else:
                streak, self._failure_streak = self._failure_streak, 0
                self._raw.append(float(value))
        if value is None:
            if streak == 1:
                logger.warning(
                    "worker metric %s: no sample from %r%s", self._source.name, self._source, _describe(error)
                )
            else:
                logger.debug(
                    "worker metric %s: still no sample (%d in a row)%s", self._source.name, streak, _describe(error)
                )
        elif streak:
            logger.info("worker metric %s: sampling again after %d missed captures", self._source.name, streak)
        return value

    def report_values(self) -> dict[str, tuple[float, ...]]:
        """Close the current interval: append its average (6 decimals; −1 if no sample) and return ``sts``."""
        if self._source is None:
            return {}
        with self._lock:
            if self._raw:
                average = round(sum(self._raw) / len(self._raw), 6)
                self._raw.clear()
            else:
                average = MISSED
            self._persisted.append(average)
            self.last_report_ns = self._clock_ns()
            return {self._source.name: tuple(self._persisted)}


def _describe(error: Exception | None) -> str:
    return f": {type(error).__name__}: {error}" if error is not None else ""
