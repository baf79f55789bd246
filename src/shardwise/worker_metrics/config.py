"""Worker-metrics settings (KCL's ``WorkerUtilizationAwareAssignmentConfig``), shared by the CPU source
selection, the collector, the reporter and the leader's view of the fleet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shardwise.errors import ConfigurationError

__all__ = ["WorkerMetricsConfig"]

_JAVA_INT_MAX = 2**31 - 1


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True)
class WorkerMetricsConfig:
    """Worker-metrics settings, with KCL's defaults (``WorkerUtilizationAwareAssignmentConfig``).

    * ``in_memory_capture_frequency_ms`` (``inMemoryWorkerMetricsCaptureFrequencyMillis``): sampling period.
    * ``reporter_frequency_ms`` (``workerMetricsReporterFreqInMillis``): reporting period; a worker is
      active while its ``lut`` is at most twice this old.
    * ``persisted_values_per_metric`` (``noOfPersistedMetricsPerWorkerMetrics``): length of each ``sts`` list.
    * ``stale_entry_cleanup_ms`` (``staleWorkerMetricsEntryCleanupDuration``): entries older than this are
      deleted by the leader.
    * ``disable_worker_metrics`` (``disableWorkerMetrics``): report no CPU; balance on throughput only.
    * ``ema_alpha`` (``workerMetricsEMAAlpha``): smoothing of a worker's ``sts`` values by the assignment
      decider.
    * ``lease_throughput_ema_alpha``: smoothing of each lease's ``throughputKBps`` from one renewal interval to
      the next. KCL's is a fixed 0.5; **0.2** here (not a KCL setting): with batches read every 1.5 s and an
      interval of 3.3 s, each interval holds two or three batches, and 0.5 leaves about ±8.5 % of that
      quantization on every lease — enough, summed over a worker's leases, to put an evenly loaded worker above
      the rebalance threshold now and then and move a lease for nothing (``bench/RESULTS.md``, "Lease-assignment
      generations"). 0.2 keeps about ±3.4 % and still follows a change of load within ~10 intervals (33 s), less
      than the leader's 60 s between rebalancing runs. Java workers keep writing theirs with 0.5: both estimate
      the same rate.
    * ``cpu_source``: ``"auto"`` (a container's cgroup when it has a CPU limit, else throughput only),
      ``"proc-stat"`` (host-wide CPU: one worker per host), ``"cgroup"`` or ``"none"``; see
      :func:`~shardwise.worker_metrics.cpu.select_cpu_source`.
    """

    in_memory_capture_frequency_ms: int = 1_000
    reporter_frequency_ms: int = 30_000
    persisted_values_per_metric: int = 10
    stale_entry_cleanup_ms: int = 86_400_000
    disable_worker_metrics: bool = False
    ema_alpha: float = 0.5
    lease_throughput_ema_alpha: float = 0.2
    cpu_source: Literal["auto", "proc-stat", "cgroup", "none"] = "auto"

    def __post_init__(self) -> None:
        _check_int("in_memory_capture_frequency_ms", self.in_memory_capture_frequency_ms, 1, _JAVA_INT_MAX)
        _check_int("reporter_frequency_ms", self.reporter_frequency_ms, 1, _JAVA_INT_MAX)
        _check_int("persisted_values_per_metric", self.persisted_values_per_metric, 1, 10_000)
        _check_int("stale_entry_cleanup_ms", self.stale_entry_cleanup_ms, 1, 2**63 - 1)
        if self.cpu_source not in ("auto", "proc-stat", "cgroup", "none"):
            raise ConfigurationError(
                f"cpu_source must be 'auto', 'proc-stat', 'cgroup' or 'none', got {self.cpu_source!r}"
            )
        if not isinstance(self.disable_worker_metrics, bool):
            raise ConfigurationError(
                f"disable_worker_metrics must be a bool (True or False), got {self.disable_worker_metrics!r}"
            )
        for name in ("ema_alpha", "lease_throughput_ema_alpha"):
            alpha: object = getattr(self, name)
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
                raise ConfigurationError(f"{name} must be a number in (0, 1], got {alpha!r}")

    @property
    def active_window_s(self) -> float:
        """A worker whose ``lut`` is at most this old is active (2 × the reporter period, 60 s by default)."""
        return 2 * self.reporter_frequency_ms / 1000

    @property
    def stale_after_s(self) -> float:
        return self.stale_entry_cleanup_ms / 1000
