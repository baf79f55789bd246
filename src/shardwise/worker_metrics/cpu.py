"""This worker's CPU, sampled in percent: the sources and the choice between them (kcl-protocol.md §5).

:class:`ProcStatCpu` reads the host's ``/proc/stat``; :class:`CgroupV2Cpu` and :class:`CgroupV1Cpu` read the
container's cgroup and measure against its CPU limit; :func:`select_cpu_source` picks one by platform, as KCL's
``WorkerMetricsSelector`` does, or none (a worker balanced on throughput only). Any other
:class:`UtilizationSource` may be passed to :class:`~shardwise.worker_metrics.collector.WorkerMetricsCollector`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from shardwise.assignment.model import CPU
from shardwise.worker_metrics.config import WorkerMetricsConfig

__all__ = [
    "ECS_ENV_VARS",
    "EKS_TOKEN_FILE",
    "CgroupV1Cpu",
    "CgroupV2Cpu",
    "ProcStatCpu",
    "UtilizationSource",
    "available_processors",
    "select_cpu_source",
]

logger = logging.getLogger(__name__)

#: KCL's sign of running on EKS (relative to the filesystem root).
EKS_TOKEN_FILE = "var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path, never read)

#: Environment variables telling KCL it runs in an ECS task.
ECS_ENV_VARS = ("ECS_CONTAINER_METADATA_URI_V4", "ECS_CONTAINER_METADATA_URI")

_CGROUP = "sys/fs/cgroup"
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
