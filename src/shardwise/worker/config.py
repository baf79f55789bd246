"""What one worker is configured with (:class:`WorkerConfig`, :class:`CoordinationConfig`) and the counters it
keeps for its caller (:class:`WorkerStats`). Durations carry their unit in the name; defaults are KCL's."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from shardwise.assignment.taker import TakerConfig
from shardwise.assignment.utilization import AssignmentConfig
from shardwise.errors import ConfigurationError
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.lifecycle.consumer import ConsumerConfig
from shardwise.lifecycle.stateful import StateSettings
from shardwise.versions.features import FeaturesConfig
from shardwise.versions.migration_rules import CLIENT_VERSION_CONFIGS, ClientVersionConfig, MigrationConfig
from shardwise.worker_metrics import WorkerMetricsConfig

__all__ = [
    "AssignmentMode",
    "CoordinationConfig",
    "WorkerConfig",
    "WorkerStats",
    "default_worker_id",
]

AssignmentMode = Literal["lease-count-2x", "utilization-3x"]
_EPSILON_MS = 25


def default_worker_id() -> str:
    """``<host>:<pid>:<random>`` — unique per process, readable in the lease table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class CoordinationConfig:
    """KCL 3.x coordination settings (kcl-protocol.md §6.1, §6.6) and where its items live."""

    strategy: Literal["worker-utilization-aware", "lease-count"] = "worker-utilization-aware"
    lease_assignment_interval_ms: int | None = None  # default: 2 × failover time
    leader_lease_duration_ms: int = 120_000
    leader_heartbeat_period_ms: int = 30_000
    layout: Literal["auto", "single-table", "legacy"] = "auto"
    coordinator_table_name: str | None = None
    worker_metrics_table_name: str | None = None
    owner_index_timeout_ms: int = 3_600_000
    max_lease_discovery_interval_ms: int | None = 60_000

    def __post_init__(self) -> None:
        if self.strategy not in ("worker-utilization-aware", "lease-count"):
            raise ConfigurationError("coordination.strategy must be 'worker-utilization-aware' or 'lease-count'")
        if self.layout not in ("auto", "single-table", "legacy"):
            raise ConfigurationError("coordination.layout must be 'auto', 'single-table' or 'legacy'")
        if self.lease_assignment_interval_ms is not None and self.lease_assignment_interval_ms <= 0:
            raise ConfigurationError("coordination.lease_assignment_interval_ms must be > 0")
        if self.max_lease_discovery_interval_ms is not None and self.max_lease_discovery_interval_ms <= 0:
            raise ConfigurationError(
                "coordination.max_lease_discovery_interval_ms must be > 0 (set it to lease_assignment_interval_ms / 2 "
                "for KCL's fixed interval)"
            )
        if not 0 < self.leader_heartbeat_period_ms < self.leader_lease_duration_ms:
            raise ConfigurationError(
                "coordination.leader_heartbeat_period_ms must be > 0 and shorter than leader_lease_duration_ms "
                "(KCL: 30000 and 120000)"
            )


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything one worker needs to know. Durations carry their unit in the name; defaults are KCL's."""

    application_name: str
    stream_name: str
    worker_id: str = field(default_factory=default_worker_id)
    lease_table_name: str | None = None
    initial_position: InitialPosition = field(default_factory=InitialPosition.latest)
    assignment: AssignmentMode = "lease-count-2x"
    leases: TakerConfig = field(default_factory=TakerConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)
    utilization: AssignmentConfig = field(default_factory=AssignmentConfig)
    worker_metrics: WorkerMetricsConfig = field(default_factory=WorkerMetricsConfig)
    coordination: CoordinationConfig = field(default_factory=CoordinationConfig)
    # None: no migration state machine, ``assignment`` rules (pure KCL 2.x or pure 3.x semantics). Set: the
    # ``Migration3.0`` item decides the generation and the worker switches at runtime (kcl-protocol.md §4).
    client_version_config: ClientVersionConfig | None = None
    migration: MigrationConfig = field(default_factory=MigrationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    state: StateSettings = field(default_factory=StateSettings)  # used only by stateful processors
    shard_sync_interval_ms: int = 60_000
    max_consumer_threads: int = 16
    # The longest the dispatcher sleeps when nothing wakes it (a finished step, a new lease, a handoff and a consumer
    # coming due wake it at once): how soon it sees a shutdown request or an overdue handoff.
    dispatch_poll_interval_ms: int = 250
    shutdown_timeout_ms: int = 30_000
    # How often every worker scans the lease table for malformed lease items (and repeats its warning per item).
    malformed_lease_report_interval_ms: int = 60_000
    # Faults (shardwise.errors.classify): initialization is tried up to max_initialization_attempts times (KCL's
    # maxInitializationAttempts) while its errors are transient or "not ready", with a back-off from
    # initialization_backoff_ms doubling up to initialization_max_backoff_ms (with jitter); a loop retries a
    # failed run after retry_backoff_ms, doubling up to its interval; a permanent error seen
    # permanent_error_limit times in a row by one loop or shard consumer stops the worker.
    max_initialization_attempts: int = 20
    initialization_backoff_ms: int = 1_000
    initialization_max_backoff_ms: int = 5_000
    retry_backoff_ms: int = 1_000
    permanent_error_limit: int = 5

    def __post_init__(self) -> None:
        if not self.application_name:
            raise ConfigurationError("application_name must not be empty (it names the lease table)")
        if not self.stream_name:
            raise ConfigurationError("stream_name must not be empty")
        if not self.worker_id:
            raise ConfigurationError("worker_id must not be empty")
        if self.assignment not in ("lease-count-2x", "utilization-3x"):
            raise ConfigurationError(
                f"assignment must be 'lease-count-2x' or 'utilization-3x', got {self.assignment!r}"
            )
        if self.client_version_config is not None and self.client_version_config not in CLIENT_VERSION_CONFIGS:
            raise ConfigurationError(
                f"client_version_config must be {' or '.join(repr(c) for c in CLIENT_VERSION_CONFIGS)} "
                f"(or unset for no migration), got {self.client_version_config!r}"
            )
        if self.max_consumer_threads < 1:
            raise ConfigurationError(f"max_consumer_threads must be >= 1, got {self.max_consumer_threads}")
        for name in (
            "shard_sync_interval_ms",
            "dispatch_poll_interval_ms",
            "shutdown_timeout_ms",
            "malformed_lease_report_interval_ms",
            "max_initialization_attempts",
            "initialization_backoff_ms",
            "initialization_max_backoff_ms",
            "retry_backoff_ms",
            "permanent_error_limit",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def table_name(self) -> str:
        return self.lease_table_name or self.application_name

    @property
    def lease_assignment_interval_ms(self) -> int:
        configured = self.coordination.lease_assignment_interval_ms
        return configured if configured is not None else 2 * self.leases.failover_time_ms

    @property
    def lease_discovery_interval_ms(self) -> int:
        """KCL's discovery interval: half the assignment interval minus epsilon (9 975 ms by default)."""
        return max(50, self.lease_assignment_interval_ms // 2 - _EPSILON_MS)


@dataclass
class WorkerStats:
    """Counters a caller (CLI, demo, benchmark) can read while the worker runs."""

    records_processed: int = 0
    bytes_processed: int = 0
    first_record_at_ns: int | None = None
    started_at_ns: int = 0
    leases_taken: int = 0
    leases_lost: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_records(self, lease_key: str, count: int, size: int) -> None:
        with self._lock:
            if self.first_record_at_ns is None:
                self.first_record_at_ns = time.monotonic_ns()
            self.records_processed += count
            self.bytes_processed += size
