"""Value types the deciders read: a worker's metrics item (KCL 3.x ``WorkerMetricStats``) and its codec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shardwise.errors import MalformedItemError

__all__ = [
    "CPU",
    "METRIC_NAMES",
    "MISSED",
    "THROUGHPUT",
    "WorkerMetricStats",
    "metrics_from_attributes",
    "metrics_to_attributes",
]

#: Short metric names of KCL's ``WorkerMetricType``.
CPU = "C"
THROUGHPUT = "T"
METRIC_NAMES = {"C": "CPU", "M": "MEMORY", "NI": "NETWORK_IN", "NO": "NETWORK_OUT", "T": "THROUGHPUT"}

#: Value recorded for a reporting interval in which no sample was taken.
MISSED = -1.0


@dataclass(frozen=True, slots=True)
class WorkerMetricStats:
    """One worker's metrics item (kcl-protocol.md §5.1).

    * ``lut``: last update, epoch **seconds**.
    * ``stats`` (``sts``): short metric name → per-interval averages, oldest first, at most 10, ``-1`` for an
      interval without a sample.
    * ``operating_range`` (``opr``): short metric name → ``[max utilization]`` (100 for CPU).
    """

    worker_id: str
    lut: int
    stats: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    operating_range: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def is_active(self, now_epoch_s: float, reporter_interval_ms: int = 30_000) -> bool:
        """KCL: active while ``now − lut ≤ 2 × reporter interval``."""
        return now_epoch_s - self.lut <= 2 * reporter_interval_ms / 1000

    def is_valid(self) -> bool:
        """KCL ignores entries without ``lut``, and explicit metrics lacking ``opr`` or with ``opr[0] == 0``."""
        if self.lut <= 0:
            return False
        for name in self.stats:
            if name == THROUGHPUT:
                continue
            limits = self.operating_range.get(name)
            if not limits or limits[0] == 0:
                return False
        return True

    def is_failing(self) -> bool:
        """KCL excludes workers whose **last** value of some metric is ``-1`` from new assignments."""
        return any(values and values[-1] == MISSED for values in self.stats.values())


def metrics_to_attributes(stats: WorkerMetricStats) -> dict[str, object]:
    """The attributes KCL writes for a worker-metrics item (besides its key and ``entityType``)."""
    return {
        "lut": stats.lut,
        "sts": {name: list(values) for name, values in stats.stats.items()},
        "opr": {name: list(values) for name, values in stats.operating_range.items()},
    }


def metrics_from_attributes(worker_id: str, attributes: Mapping[str, object]) -> WorkerMetricStats:
    """Parse a worker-metrics item; raises ``MalformedItemError`` naming the worker for a broken one."""

    def metric_map(name: str) -> dict[str, tuple[float, ...]]:
        raw = attributes.get(name, {})
        if not isinstance(raw, Mapping):
            raise MalformedItemError(worker_id, f"{name} must be a map of metric name to list of numbers")
        result: dict[str, tuple[float, ...]] = {}
        for metric, values in raw.items():
            if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
            ):
                raise MalformedItemError(worker_id, f"{name}.{metric} must be a list of numbers, got {values!r}")
            result[str(metric)] = tuple(float(v) for v in values)
        return result

    lut = attributes.get("lut", 0)
    if not isinstance(lut, (int, float)) or isinstance(lut, bool):
        raise MalformedItemError(worker_id, f"lut must be a number (epoch seconds), got {lut!r}")
    return WorkerMetricStats(worker_id, int(lut), metric_map("sts"), metric_map("opr"))
