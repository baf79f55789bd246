"""Worker metrics (KCL 3.x): sampling this worker's utilization, reporting it, and reading the fleet's
(kcl-protocol.md §5).

Every KCL 3.x worker keeps one item in the worker-metrics namespace (see :mod:`shardwise.tables.items`)::

    {wid/leaseKey: <worker id>, lut: <epoch seconds>, sts: {"C": [..10 averages..]}, opr: {"C": [100]}}

The pieces, each usable on its own and each in the module named for it:

* :mod:`~shardwise.worker_metrics.cpu` — the **sources** (:class:`UtilizationSource`): :class:`ProcStatCpu`
  (``/proc/stat``), :class:`CgroupV2Cpu` and :class:`CgroupV1Cpu` (container CPU against the container's
  limit); :func:`select_cpu_source` picks one;
* :mod:`~shardwise.worker_metrics.collector` — :class:`WorkerMetricsCollector`: sampled every
  ``in_memory_capture_frequency_ms`` (1 s) into a raw ring of 300; each report averages the samples since the
  previous report (−1 when there were none) into a ring of ``persisted_values_per_metric`` (10) values per
  metric;
* :mod:`~shardwise.worker_metrics.reporter` — :class:`WorkerMetricsReporter`: every ``reporter_frequency_ms``
  (30 s), a partial unconditional write of ``lut``, ``sts`` and ``opr`` (KCL's ``ignoreNulls`` update, so
  ``entityType``/``sup``/``slu`` stay);
* :mod:`~shardwise.worker_metrics.fleet` — :func:`classify_workers` / :func:`active_workers` /
  :func:`clean_up_stale`: the leader's view of the fleet (valid, active, failing, stale entries) and its
  clean-up of entries older than a day;
* :mod:`~shardwise.worker_metrics.throughput` — :class:`LeaseThroughputRecorder`: the per-lease
  ``throughputKBps`` EMA the renewer writes (§6.4);
* :mod:`~shardwise.worker_metrics.config` — :class:`WorkerMetricsConfig`, the settings all of them share.

A worker without a CPU source (``disable_worker_metrics``, no readable ``/proc/stat`` or cgroup files) writes
empty ``sts``/``opr`` maps and is balanced by throughput only, as a Java KCL worker without a platform metric.

Scheduling (the 1 s capture loop, the 30 s report loop with its first report after two capture intervals) is
the caller's: nothing here starts a thread.
"""

from shardwise.worker_metrics.collector import RAW_SAMPLES, WorkerMetricsCollector
from shardwise.worker_metrics.config import WorkerMetricsConfig
from shardwise.worker_metrics.cpu import (
    ECS_ENV_VARS,
    EKS_TOKEN_FILE,
    CgroupV1Cpu,
    CgroupV2Cpu,
    ProcStatCpu,
    UtilizationSource,
    available_processors,
    select_cpu_source,
)
from shardwise.worker_metrics.fleet import (
    WorkerMetricsSnapshot,
    active_workers,
    classify_worker_records,
    classify_workers,
    clean_up_stale,
)
from shardwise.worker_metrics.reporter import WorkerMetricsReporter
from shardwise.worker_metrics.throughput import LeaseThroughputRecorder

__all__ = [
    "ECS_ENV_VARS",
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
    "classify_worker_records",
    "classify_workers",
    "clean_up_stale",
    "select_cpu_source",
]
