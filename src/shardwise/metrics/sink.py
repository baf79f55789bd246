"""The ``MetricsSink`` port: where shardwise reports its operational metrics, named as KCL names them.

A datum is ``(operation, name, value, unit, dimensions)``. ``operation`` is KCL's CloudWatch *operation*
(``RenewAllLeases``, ``TakeLeases``, ``LeaseAssignmentManager``, ``LeaseDiscovery``, ``Migration``,
``WorkerMetricStatsReporter``, …) and ``name`` the metric within it (``CurrentLeases``, ``LostLeases``,
``TakenLeases``, ``ExpiredLeases``, ``LeaseSpillover``, ``NumWorkers``, ``NumOfLeasesReassignment``,
``LeaseDeserializationFailureCount`` (malformed lease items, reported by every worker),
``Success``, ``Time``, …); see kcl-protocol.md §9. ``unit`` is a CloudWatch unit name (:data:`COUNT`,
:data:`MILLISECONDS`, …).

A sink must never raise into the code that reports: metrics are an observation of the work, not part of it.

Implementations here:

* :class:`NullMetricsSink` drops everything (the default);
* :class:`LogMetricsSink` writes one log line per datum;
* :class:`InMemoryMetricsSink` keeps the data, thread-safely, for tests and ``shardwise leases``.

:func:`timed` wraps an operation and records its ``Time`` (milliseconds) and ``Success`` (1 or 0), as KCL's
``MetricsUtil.addSuccessAndLatency`` does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "BYTES",
    "COUNT",
    "MILLISECONDS",
    "NONE",
    "PERCENT",
    "InMemoryMetricsSink",
    "LogMetricsSink",
    "MetricDatum",
    "MetricsSink",
    "NullMetricsSink",
    "timed",
]

#: CloudWatch unit names used by KCL's metrics.
COUNT = "Count"
BYTES = "Bytes"
MILLISECONDS = "Milliseconds"
PERCENT = "Percent"
NONE = "None"


@runtime_checkable
class MetricsSink(Protocol):
    """Receives metric data; implementations must be thread-safe and must not raise."""

    def put(
        self,
        operation: str,
        name: str,
        value: float,
        unit: str = COUNT,
        *,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        """Record one datum of metric ``name`` of ``operation``."""
        ...


class NullMetricsSink:
    """Drops every datum."""

    def put(
        self,
        operation: str,
        name: str,
        value: float,
        unit: str = COUNT,
        *,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        del operation, name, value, unit, dimensions

    def __repr__(self) -> str:
        return "NullMetricsSink()"


class LogMetricsSink:
    """Logs one line per datum, e.g. ``metric RenewAllLeases CurrentLeases=3 Count``.

    Dimensions, when given, follow in ``key=value`` form, sorted by key.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self._logger = logger if logger is not None else logging.getLogger("shardwise.metrics")
        self._level = level

    def put(
        self,
        operation: str,
        name: str,
        value: float,
        unit: str = COUNT,
        *,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        if not self._logger.isEnabledFor(self._level):
            return
        dims = "".join(f" {key}={dimensions[key]}" for key in sorted(dimensions)) if dimensions else ""
        self._logger.log(self._level, "metric %s %s=%s %s%s", operation, name, _format(value), unit, dims)

    def __repr__(self) -> str:
        return f"LogMetricsSink(logger={self._logger.name!r}, level={logging.getLevelName(self._level)})"


def _format(value: float) -> str:
    """``3`` rather than ``3.0`` for integral values; ``repr`` precision otherwise."""
    if float(value).is_integer():
        return str(int(value))
    return repr(value)


@dataclass(frozen=True, slots=True)
class MetricDatum:
    """One datum recorded by :class:`InMemoryMetricsSink`."""

    operation: str
    name: str
    value: float
    unit: str = COUNT
    dimensions: Mapping[str, str] = field(default_factory=dict)


class InMemoryMetricsSink:
    """Keeps the data in memory; thread-safe.

    At most ``max_per_metric`` data are retained per ``(operation, name)``, oldest dropped first, so that a
    long-running worker reporting into it stays bounded; :meth:`total` and :meth:`values` see the retained
    data only.
    """

    def __init__(self, max_per_metric: int = 10_000) -> None:
        if max_per_metric < 1:
            raise ValueError(f"max_per_metric must be >= 1, got {max_per_metric}")
        self._max = max_per_metric
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], deque[MetricDatum]] = {}

    def put(
        self,
        operation: str,
        name: str,
        value: float,
        unit: str = COUNT,
        *,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        datum = MetricDatum(operation, name, float(value), unit, dict(dimensions) if dimensions else {})
        with self._lock:
            series = self._data.get((operation, name))
            if series is None:
                series = self._data[(operation, name)] = deque(maxlen=self._max)
            series.append(datum)

    def data(self, operation: str | None = None, name: str | None = None) -> list[MetricDatum]:
        """The retained data, optionally of one operation and/or metric, in recording order per metric."""
        with self._lock:
            return [
                datum
                for (op, metric), series in self._data.items()
                if (operation is None or op == operation) and (name is None or metric == name)
                for datum in series
            ]

    def values(self, operation: str, name: str, *, dimensions: Mapping[str, str] | None = None) -> list[float]:
        """The values of one metric, oldest first; only data with exactly these dimensions when given."""
        with self._lock:
            series = list(self._data.get((operation, name), ()))
        return [d.value for d in series if dimensions is None or d.dimensions == dimensions]

    def last(self, operation: str, name: str, *, dimensions: Mapping[str, str] | None = None) -> float | None:
        """The newest value of one metric, or ``None`` if none was recorded."""
        values = self.values(operation, name, dimensions=dimensions)
        return values[-1] if values else None

    def total(self, operation: str, name: str, *, dimensions: Mapping[str, str] | None = None) -> float:
        """The sum of the values of one metric (0 if none was recorded)."""
        return sum(self.values(operation, name, dimensions=dimensions), 0.0)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __repr__(self) -> str:
        with self._lock:
            count = sum(len(series) for series in self._data.values())
        return f"InMemoryMetricsSink({count} data)"


@contextmanager
def timed(
    sink: MetricsSink,
    operation: str,
    *,
    dimensions: Mapping[str, str] | None = None,
    clock_ns: Callable[[], int] = time.monotonic_ns,
) -> Iterator[None]:
    """Record ``Time`` (milliseconds, float) and ``Success`` (1, or 0 if the block raised) of ``operation``.

    The exception, if any, propagates unchanged::

        with timed(sink, "LeaseDiscovery"):
            discover()
    """
    start = clock_ns()
    success = False
    try:
        yield
        success = True
    finally:
        elapsed_ms = (clock_ns() - start) / 1_000_000
        sink.put(operation, "Time", elapsed_ms, MILLISECONDS, dimensions=dimensions)
        sink.put(operation, "Success", 1.0 if success else 0.0, COUNT, dimensions=dimensions)
