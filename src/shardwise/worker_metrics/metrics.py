"""Worker metrics: sampling this worker's utilization, reporting it, and reading the fleet's (kcl-protocol.md §5).

Every KCL 3.x worker keeps one item in the worker-metrics namespace (see :mod:`shardwise.tables.items`)::

    {wid/leaseKey: <worker id>, lut: <epoch seconds>, sts: {"C": [..10 averages..]}, opr: {"C": [100]}}

The pieces, each usable on its own:

* **sources** (:class:`UtilizationSource`): :class:`ProcStatCpu` (``/proc/stat``), :class:`CgroupV2Cpu` and
  :class:`CgroupV1Cpu` (container CPU against the container's limit); :func:`select_cpu_source` picks one;
* :class:`WorkerMetricsCollector`: sampled every ``in_memory_capture_frequency_ms`` (1 s) into a raw ring of
  300; each report averages the samples since the previous report (−1 when there were none) into a ring of
  ``persisted_values_per_metric`` (10) values per metric;
* :class:`WorkerMetricsReporter`: every ``reporter_frequency_ms`` (30 s), a partial unconditional write of
  ``lut``, ``sts`` and ``opr`` (KCL's ``ignoreNulls`` update, so ``entityType``/``sup``/``slu`` stay);
* :func:`classify_workers` / :func:`active_workers` / :func:`clean_up_stale`: the leader's view of the fleet
  (valid, active, failing, stale entries) and its clean-up of entries older than a day;
* :class:`LeaseThroughputRecorder`: the per-lease ``throughputKBps`` EMA the renewer writes (§6.4).

A worker without a CPU source (``disable_worker_metrics``, no readable ``/proc/stat`` or cgroup files) writes
empty ``sts``/``opr`` maps and is balanced by throughput only, as a Java KCL worker without a platform metric.

Scheduling (the 1 s capture loop, the 30 s report loop with its first report after two capture intervals) is
the caller's: nothing here starts a thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from shardwise.assignment.model import (
    CPU,
    MISSED,
    WorkerMetricStats,
    metrics_from_attributes,
    metrics_to_attributes,
)
from shardwise.errors import ConfigurationError, MalformedItemError, ShardwiseError
from shardwise.metrics.sink import MetricsSink, NullMetricsSink, timed
from shardwise.tables.items import ItemRecord, ItemTable

__all__ = [
    "EKS_TOKEN_FILE",
    "RAW_SAMPLES",
    "CgroupV1Cpu",
    "CgroupV2Cpu",
    "LeaseThroughputRecorder",
    "ProcStatCpu",
    "UtilizationSource",
    "WorkerMetricsCollector",
    "WorkerMetricsConfig",
    "WorkerMetricsReporter",
    "WorkerMetricsSnapshot",
    "active_workers",
    "available_processors",
    "classify_workers",
    "clean_up_stale",
    "select_cpu_source",
]

logger = logging.getLogger(__name__)

#: Size of the in-memory ring of raw samples (KCL's ``WorkerMetricStatsManager``).
RAW_SAMPLES = 300

#: KCL's sign of running on EKS (relative to the filesystem root).
EKS_TOKEN_FILE = "var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path, never read)

#: Environment variables telling KCL it runs in an ECS task.
ECS_ENV_VARS = ("ECS_CONTAINER_METADATA_URI_V4", "ECS_CONTAINER_METADATA_URI")

_CGROUP = "sys/fs/cgroup"
_JAVA_INT_MAX = 2**31 - 1
_NS_PER_US = 1_000


def available_processors() -> int:
    """The CPUs this process may run on (its affinity set), else ``os.cpu_count()``; at least 1.

    The counterpart of Java's ``Runtime.availableProcessors()`` for a cgroup without a quota.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, count)


# -- sources ----------------------------------------------------------------------------------------------


@runtime_checkable
class UtilizationSource(Protocol):
    """One utilization metric of this worker, sampled in percent (0–100)."""

    @property
    def name(self) -> str:
        """The short metric name written in ``sts``/``opr`` (``"C"`` for CPU)."""
        ...

    @property
    def max_utilization(self) -> float:
        """The upper end of the operating range, written as ``opr[name] = [max_utilization]``."""
        ...

    def sample(self) -> float | None:
        """The utilization since the previous sample, in percent; ``None`` (or an exception) when unavailable."""
        ...


def _read_text(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def _read_int(path: Path) -> int:
    return int(_read_text(path))


def _first_existing(root: Path, candidates: Iterable[str]) -> Path:
    paths = [root / candidate for candidate in candidates]
    for path in paths:
        if path.exists():
            return path
    raise FileNotFoundError(f"none of {', '.join(str(p) for p in paths)} exists")


def _count_cpu_list(text: str) -> int | None:
    """Count the CPUs of a cpuset list such as ``0-3,8,10-11``; ``None`` if empty or unreadable."""
    count = 0
    for raw in text.strip().split(","):
        part = raw.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            count += int(high) - int(low) + 1 if sep else 1
        except ValueError:
            return None
    return count or None


class _CpuCounters:
    """A CPU metric computed from the change of cumulative counters since the previous sample."""

    def __init__(self, max_utilization: float) -> None:
        self._max = float(max_utilization)
        self._lock = threading.Lock()
        self._last: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return CPU

    @property
    def max_utilization(self) -> float:
        return self._max

    def _previous(self, reading: tuple[int, int]) -> tuple[int, int] | None:
        """Keep ``reading`` for the next sample; the one kept before it (``None`` at the first sample)."""
        with self._lock:
            last, self._last = self._last, reading
        return last


class ProcStatCpu(_CpuCounters):
    """Host CPU from the first line of ``/proc/stat`` (KCL's ``LinuxCpuWorkerMetric``).

    busy = user + nice + system; total = busy + idle + iowait (irq, softirq and steal are ignored, as in
    KCL); value = (Δtotal − Δidle) / Δtotal × 100. The first sample, which has no previous one to compare
    with, returns 0. The counters are their own time base, so no clock is needed. If the counters did not
    move (Δtotal ≤ 0) the sample is ``None`` and the next one measures from the new reading.
    """

    def __init__(self, root: str | os.PathLike[str] = "/", *, max_utilization: float = 100.0) -> None:
        super().__init__(max_utilization)
        self._path = Path(root) / "proc/stat"

    @property
    def path(self) -> Path:
        return self._path

    def read_counters(self) -> tuple[int, int]:
        """``(total, idle)`` jiffies of the ``cpu`` line; raises ``OSError``/``ValueError`` when unreadable."""
        with self._path.open(encoding="ascii") as file:
            first = file.readline().split()
        if len(first) < 6 or first[0] != "cpu":
            raise ValueError(f"{self._path}: first line is not an aggregate 'cpu' line: {' '.join(first)!r}")
        user, nice, system, idle, iowait = (int(v) for v in first[1:6])
        busy = user + nice + system
        return busy + idle + iowait, idle

    def sample(self) -> float | None:
        total, idle = self.read_counters()
        last = self._previous((total, idle))
        if last is None:
            return 0.0
        d_total, d_idle = total - last[0], idle - last[1]
        if d_total <= 0:
            return None
        return (d_total - d_idle) / d_total * 100

    def __repr__(self) -> str:
        return f"ProcStatCpu({str(self._path)!r})"


def _quota_cores(quota: int, period: int) -> float | None:
    """A CFS quota as a number of CPUs; ``None`` (no limit) unless both the quota and the period are > 0."""
    if quota <= 0 or period <= 0:
        return None
    return quota / period


class _CgroupCpu(_CpuCounters):
    """Shared delta logic: CPU time used by the cgroup over wall time, against the cgroup's CPU limit.

    ``root`` is the file-system root the cgroup files are read under (``<root>/sys/fs/cgroup``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        cpu_count: Callable[[], int | None] = available_processors,
        max_utilization: float = 100.0,
    ) -> None:
        super().__init__(max_utilization)
        self._root = Path(root)
        self._dir = self._root / _CGROUP
        self._clock_ns = clock_ns
        self._cpu_count = cpu_count

    def usage_ns(self) -> int:
        """Cumulative CPU time of the cgroup, in nanoseconds."""
        raise NotImplementedError

    def limit_cores(self) -> float:
        """The number of CPUs the cgroup may use."""
        raise NotImplementedError

    def _fallback_cores(self) -> float:
        return float(max(1, self._cpu_count() or 1))

    def sample(self) -> float | None:
        usage = self.usage_ns()
        now = self._clock_ns()
        last = self._previous((usage, now))
        if last is None:
            return 0.0
        d_usage, d_wall = usage - last[0], now - last[1]
        if d_wall <= 0 or d_usage < 0:
            return None
        cores_used = d_usage / d_wall
        return min(100.0, cores_used / self.limit_cores() * 100)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._dir)!r})"


class CgroupV2Cpu(_CgroupCpu):
    """Container CPU on cgroup v2 (KCL's ``Cgroupv2CpuWorkerMetric``).

    Δ``usage_usec`` of ``/sys/fs/cgroup/cpu.stat`` over Δwall time = CPUs used; divided by the limit, which is
    ``cpu.max`` quota/period, or — when the quota is ``max`` or ``cpu.max`` is absent — the number of CPUs in
    ``cpuset.cpus.effective`` (``cpu_count()``, by default :func:`available_processors`, if that is absent
    too); × 100, capped at 100. The first sample returns 0.
    """

    def usage_ns(self) -> int:
        path = self._dir / "cpu.stat"
        for line in path.read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * _NS_PER_US
        raise ValueError(f"{path}: no usage_usec line")

    def quota_cores(self) -> float | None:
        """``quota / period`` from ``cpu.max``; ``None`` when unlimited (``max``) or absent."""
        try:
            fields = _read_text(self._dir / "cpu.max").split()
        except FileNotFoundError:
            return None
        if not fields or fields[0] == "max":
            return None
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
        return _quota_cores(quota, period)

    def cpuset_cores(self) -> int | None:
        """The number of CPUs in ``cpuset.cpus.effective``; ``None`` when absent or empty."""
        try:
            return _count_cpu_list(_read_text(self._dir / "cpuset.cpus.effective"))
        except FileNotFoundError:
            return None

    def limit_cores(self) -> float:
        quota = self.quota_cores()
        if quota is not None:
            return quota
        cpuset = self.cpuset_cores()
        return float(cpuset) if cpuset is not None else self._fallback_cores()


class CgroupV1Cpu(_CgroupCpu):
    """Container CPU on cgroup v1 (KCL's ``Cgroupv1CpuWorkerMetric``).

    Δ``cpuacct.usage`` (ns) over Δwall time = CPUs used; divided by ``cpu.cfs_quota_us / cpu.cfs_period_us``,
    or by ``cpu_count()`` (the available processors) when the quota is −1; × 100, capped at 100. The first
    sample returns 0.

    KCL reads ``/sys/fs/cgroup/cpu/cpuacct.usage``, which exists where ``cpu`` and ``cpuacct`` are co-mounted
    (``cpu,cpuacct`` with ``cpu`` and ``cpuacct`` links, the usual Docker layout); where they are mounted
    separately the usage is read from ``cpuacct/cpuacct.usage`` instead.
    """

    USAGE_FILES = ("cpu/cpuacct.usage", "cpuacct/cpuacct.usage", "cpu,cpuacct/cpuacct.usage")
    CPU_DIRS = ("cpu", "cpu,cpuacct")

    def usage_ns(self) -> int:
        return _read_int(_first_existing(self._dir, self.USAGE_FILES))

    def quota_cores(self) -> float | None:
        """``cfs_quota_us / cfs_period_us``; ``None`` when the quota is −1 (unlimited) or the files are absent."""
        try:
            quota = _read_int(_first_existing(self._dir, (f"{d}/cpu.cfs_quota_us" for d in self.CPU_DIRS)))
            period = _read_int(_first_existing(self._dir, (f"{d}/cpu.cfs_period_us" for d in self.CPU_DIRS)))
        except FileNotFoundError:
            return None
        return _quota_cores(quota, period)

    def limit_cores(self) -> float:
        quota = self.quota_cores()
        return quota if quota is not None else self._fallback_cores()


def _usable(source: ProcStatCpu | _CgroupCpu) -> bool:
    """Whether the source's counters can be read (without taking a sample)."""
    try:
        if isinstance(source, ProcStatCpu):
            source.read_counters()
        else:
            source.usage_ns()
            source.limit_cores()
    except (OSError, ValueError) as exc:
        logger.debug("CPU source %r unusable: %s", source, exc)
        return False
    return True


def _v2_limited(source: CgroupV2Cpu, host_cpus: int | None) -> bool:
    try:
        if source.quota_cores() is not None:
            return True
        cpuset = source.cpuset_cores()
    except (OSError, ValueError):
        return False
    return cpuset is not None and host_cpus is not None and cpuset < host_cpus


def _v1_limited(source: CgroupV1Cpu) -> bool:
    try:
        return source.quota_cores() is not None
    except (OSError, ValueError):
        return False


def select_cpu_source(
    root: str | os.PathLike[str] = "/",
    env: Mapping[str, str] = os.environ,
    *,
    config: WorkerMetricsConfig | None = None,
    clock_ns: Callable[[], int] = time.monotonic_ns,
    cpu_count: Callable[[], int | None] = available_processors,
    host_cpu_count: Callable[[], int | None] = os.cpu_count,
) -> UtilizationSource | None:
    """Pick this worker's CPU source, or ``None`` for a throughput-only worker.

    KCL (``WorkerMetricsSelector``) picks by platform; shardwise follows it where it can and also runs
    outside AWS:

    1. ``config.disable_worker_metrics`` → ``None``.
    2. ECS (``ECS_CONTAINER_METADATA_URI[_V4]`` set): KCL reads the ECS task-metadata endpoint. shardwise
       makes no network calls to measure CPU, so it falls through to the container rules below (the
       container's cgroup shows the same limit the task metadata would).
    3. EKS (the service-account token file exists): cgroup v2 if ``/sys/fs/cgroup/cgroup.controllers``
       exists, else cgroup v1 — as KCL, whether or not a limit is set — provided its files can be read.
    4. Anywhere else: the cgroup source when the cgroup files show a limit — v2 ``cpu.max`` with a quota or
       a ``cpuset.cpus.effective`` smaller than the host (``host_cpu_count()``), v1 a positive
       ``cpu.cfs_quota_us`` — so that a container's limit is respected; else ``None`` (throughput only).
       KCL reads the host-wide ``/proc/stat`` only on EC2, which it detects through the instance-metadata
       service: one worker per instance. shardwise never calls that service, and on a host running several
       workers the host-wide figure is the same for all of them and cannot tell them apart, so it uses
       ``/proc/stat`` only when ``config.cpu_source == "proc-stat"`` says there is one worker per host.

    ``config.cpu_source`` other than ``"auto"`` forces a source: ``"proc-stat"``, ``"cgroup"`` (v2 when
    ``cgroup.controllers`` exists, else v1) or ``"none"``.

    ``root`` is the filesystem root the paths are relative to (tests pass a fake tree).
    """
    choice = "auto" if config is None else config.cpu_source
    if (config is not None and config.disable_worker_metrics) or choice == "none":
        logger.info("worker metrics disabled: this worker reports throughput only")
        return None
    root_path = Path(root)
    cgroup = root_path / _CGROUP
    v2 = CgroupV2Cpu(root_path, clock_ns=clock_ns, cpu_count=cpu_count)
    v1 = CgroupV1Cpu(root_path, clock_ns=clock_ns, cpu_count=cpu_count)
    is_v2 = (cgroup / "cgroup.controllers").exists()
    if choice == "proc-stat":
        return ProcStatCpu(root_path)
    if choice == "cgroup":
        return v2 if is_v2 else v1

    if any(env.get(name) for name in ECS_ENV_VARS):
        logger.info(
            "running on ECS: the task-metadata endpoint KCL uses is not queried; measuring CPU from the "
            "container's cgroup instead, or balancing on throughput"
        )
    if (root_path / EKS_TOKEN_FILE).exists():
        eks_source: CgroupV2Cpu | CgroupV1Cpu = v2 if is_v2 else v1
        if _usable(eks_source):
            logger.info("running on EKS: CPU from %r", eks_source)
            return eks_source
        logger.warning("running on EKS but %r cannot be read; trying the other CPU sources", eks_source)

    if is_v2 and _v2_limited(v2, host_cpu_count()) and _usable(v2):
        logger.info("CPU from %r (container limit %.3g CPUs)", v2, v2.limit_cores())
        return v2
    if not is_v2 and _v1_limited(v1) and _usable(v1):
        logger.info("CPU from %r (container limit %.3g CPUs)", v1, v1.limit_cores())
        return v1
    logger.info(
        "no container CPU limit: this worker balances on throughput (set worker_metrics.cpu_source = "
        '"proc-stat" when each host runs a single worker)'
    )
    return None


# -- configuration ----------------------------------------------------------------------------------------


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
    * ``cpu_source``: ``"auto"`` (a container's cgroup when it has a CPU limit, else throughput only),
      ``"proc-stat"`` (host-wide CPU: one worker per host), ``"cgroup"`` or ``"none"``; see
      :func:`select_cpu_source`.
    """

    in_memory_capture_frequency_ms: int = 1_000
    reporter_frequency_ms: int = 30_000
    persisted_values_per_metric: int = 10
    stale_entry_cleanup_ms: int = 86_400_000
    disable_worker_metrics: bool = False
    ema_alpha: float = 0.5
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
        alpha: object = self.ema_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
            raise ConfigurationError(f"ema_alpha must be a number in (0, 1], got {alpha!r}")

    @property
    def active_window_s(self) -> float:
        """A worker whose ``lut`` is at most this old is active (2 × the reporter period, 60 s by default)."""
        return 2 * self.reporter_frequency_ms / 1000

    @property
    def stale_after_s(self) -> float:
        return self.stale_entry_cleanup_ms / 1000


# -- collection and reporting -----------------------------------------------------------------------------


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

    def report(self) -> WorkerMetricStats:
        """Close the interval and write the item; returns what was written. Errors propagate unchanged."""
        with timed(self._metrics, self.OPERATION):
            stats = WorkerMetricStats(
                self._worker_id,
                lut=int(self._clock_epoch_s()),
                stats=self._collector.report_values(),
                operating_range=self._collector.operating_range(),
            )
            try:
                self._items.upsert(self._worker_id, metrics_to_attributes(stats))
            except Exception as exc:
                logger.debug(
                    "worker metrics of %s could not be written to %s: %s", self._worker_id, self._items.table_name, exc
                )
                raise
        logger.debug("worker metrics of %s written: sts=%s", self._worker_id, dict(stats.stats))
        return stats


# -- the fleet's view -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerMetricsSnapshot:
    """Every worker-metrics entry of the namespace, classified (kcl-protocol.md §5.3, §6.2).

    Each parsed entry is in exactly one of the lists, checked in this order:

    * ``stale``: ``lut`` set and older than the clean-up duration (1 day) — to be deleted;
    * ``invalid``: no ``lut``, or an explicit metric without ``opr`` or with ``opr[0] == 0`` — ignored;
    * ``inactive``: ``lut`` older than 2 × the reporter period — the worker receives no leases;
    * ``failing``: active, but the last value of some metric is −1 — excluded from new assignments;
    * ``active``: valid, active and not failing — the workers leases are assigned to.

    ``malformed`` holds the keys of items that could not be parsed at all.
    """

    active: tuple[WorkerMetricStats, ...] = ()
    failing: tuple[WorkerMetricStats, ...] = ()
    inactive: tuple[WorkerMetricStats, ...] = ()
    invalid: tuple[WorkerMetricStats, ...] = ()
    stale: tuple[WorkerMetricStats, ...] = ()
    malformed: tuple[str, ...] = ()


def classify_workers(
    items: ItemTable, now_epoch_s: float, config: WorkerMetricsConfig | None = None
) -> WorkerMetricsSnapshot:
    """Scan the worker-metrics namespace and classify every entry (see :class:`WorkerMetricsSnapshot`)."""
    return classify_worker_records(items.scan(), now_epoch_s, config, table_name=items.table_name)


def classify_worker_records(
    records: Iterable[ItemRecord],
    now_epoch_s: float,
    config: WorkerMetricsConfig | None = None,
    *,
    table_name: str = "",
) -> WorkerMetricsSnapshot:
    """Classify worker-metrics records already read (see :class:`WorkerMetricsSnapshot`)."""
    config = config if config is not None else WorkerMetricsConfig()
    buckets: dict[str, list[WorkerMetricStats]] = {
        "active": [],
        "failing": [],
        "inactive": [],
        "invalid": [],
        "stale": [],
    }
    malformed: list[str] = []
    for record in records:
        try:
            stats = metrics_from_attributes(record.key, record.attributes)
        except MalformedItemError as exc:
            logger.warning(
                "worker-metrics entry of worker %r in %s is malformed and is ignored: %s",
                record.key,
                table_name,
                exc.problem,
            )
            malformed.append(record.key)
            continue
        if stats.lut > 0 and now_epoch_s - stats.lut > config.stale_after_s:
            bucket = "stale"
        elif not stats.is_valid():
            bucket = "invalid"
        elif not stats.is_active(now_epoch_s, config.reporter_frequency_ms):
            bucket = "inactive"
        elif stats.is_failing():
            bucket = "failing"
        else:
            bucket = "active"
        buckets[bucket].append(stats)
    return WorkerMetricsSnapshot(
        active=tuple(buckets["active"]),
        failing=tuple(buckets["failing"]),
        inactive=tuple(buckets["inactive"]),
        invalid=tuple(buckets["invalid"]),
        stale=tuple(buckets["stale"]),
        malformed=tuple(malformed),
    )


def active_workers(
    items: ItemTable, now_epoch_s: float, config: WorkerMetricsConfig | None = None
) -> tuple[list[WorkerMetricStats], list[str]]:
    """The workers leases may be assigned to (valid, active, not failing) and the ids of stale entries.

    Use :func:`classify_workers` for the full picture (and for the stale entries :func:`clean_up_stale`
    needs).
    """
    snapshot = classify_workers(items, now_epoch_s, config)
    return list(snapshot.active), [stats.worker_id for stats in snapshot.stale]


def clean_up_stale(items: ItemTable, stale: Iterable[WorkerMetricStats]) -> int:
    """Delete stale entries, each only if its ``lut`` is unchanged since it was read; returns how many.

    An entry rewritten meanwhile (its worker came back) or already gone is left alone; a backend error on one
    entry is logged and the others are still tried.
    """
    deleted = 0
    for stats in stale:
        try:
            if items.delete(stats.worker_id, expect={"lut": stats.lut}):
                deleted += 1
                logger.info("deleted the stale worker-metrics entry of %r (lut %d)", stats.worker_id, stats.lut)
            else:
                logger.debug("stale worker-metrics entry of %r changed or vanished; kept", stats.worker_id)
        except ShardwiseError as exc:
            logger.warning("could not delete the stale worker-metrics entry of %r: %s", stats.worker_id, exc)
    return deleted


# -- per-lease throughput ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _LeaseThroughput:
    since_ns: int
    pending_bytes: int = 0
    kbps: float | None = None


class LeaseThroughputRecorder:
    """Per-lease throughput in KB/s as an EMA, written by the renewer as ``throughputKBps`` (§6.4). Thread-safe.

    The consumer calls :meth:`record` with the bytes of each batch delivered to the processor; the renewer
    calls :meth:`throughput_kbps` once per renewal interval: the KB (bytes ÷ 1024) recorded since the previous
    call, divided by the interval, folded into the previous value as ``alpha × current + (1 − alpha) ×
    previous`` (the first value is taken as is), rounded to 6 decimals.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns, *, alpha: float = 0.5) -> None:
        given: object = alpha
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 < given <= 1:
            raise ConfigurationError(f"alpha must be a number in (0, 1], got {alpha!r}")
        self._clock_ns = clock_ns
        self._alpha = float(alpha)
        self._lock = threading.Lock()
        self._leases: dict[str, _LeaseThroughput] = {}

    def _entry(self, lease_key: str) -> _LeaseThroughput:
        entry = self._leases.get(lease_key)
        if entry is None:
            entry = self._leases[lease_key] = _LeaseThroughput(since_ns=self._clock_ns())
        return entry

    def record(self, lease_key: str, num_bytes: int) -> None:
        """Count the bytes of one batch delivered for this lease."""
        if num_bytes < 0:
            raise ValueError(f"num_bytes must be >= 0, got {num_bytes}")
        with self._lock:
            self._entry(lease_key).pending_bytes += num_bytes

    def seed(self, lease_key: str, kbps: float | None) -> None:
        """Start from a stored ``throughputKBps`` (a new owner of the lease); ``None`` leaves no previous value."""
        with self._lock:
            self._entry(lease_key).kbps = None if kbps is None else float(kbps)

    def forget(self, lease_key: str) -> None:
        """Drop the lease (lost, released or ended)."""
        with self._lock:
            self._leases.pop(lease_key, None)

    def lease_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._leases)

    def current_kbps(self, lease_key: str) -> float | None:
        """The last computed (or seeded) value, without closing an interval."""
        with self._lock:
            entry = self._leases.get(lease_key)
            return None if entry is None else entry.kbps

    def throughput_kbps(self, lease_key: str, interval_s: float | None = None) -> float | None:
        """Close the interval of this lease and return the new EMA; ``None`` for a lease never recorded or seeded.

        ``interval_s`` is the renewer's interval (3.308 s by default, as KCL divides by it); ``None`` measures
        the time since the previous call (or since the lease was first recorded) on the clock. When that is
        not positive, the current value is returned and the bytes stay for the next interval.
        """
        if interval_s is not None and not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        now = self._clock_ns()
        with self._lock:
            entry = self._leases.get(lease_key)
            if entry is None:
                return None
            seconds = interval_s if interval_s is not None else (now - entry.since_ns) / 1e9
            if seconds <= 0:
                return entry.kbps
            current = entry.pending_bytes / 1024 / seconds
            previous = entry.kbps
            value = current if previous is None else self._alpha * current + (1 - self._alpha) * previous
            entry.kbps = round(value, 6)
            entry.pending_bytes = 0
            entry.since_ns = now
            return entry.kbps
