"""Metrics: the MetricsSink port and its sinks."""
