"""Metrics: the :class:`MetricsSink` port, its sinks and the :func:`timed` helper (see :mod:`.sink`)."""

from __future__ import annotations

from shardwise.metrics.sink import (
    COUNT,
    MILLISECONDS,
    NONE,
    PERCENT,
    InMemoryMetricsSink,
    LogMetricsSink,
    MetricDatum,
    MetricsSink,
    NullMetricsSink,
    timed,
)

__all__ = [
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
