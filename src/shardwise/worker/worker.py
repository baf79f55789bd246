"""The worker: one process, one worker id, a handful of loops and a bounded pool of shard consumers.

Two generations of lease coordination, chosen by ``WorkerConfig.assignment`` (and switchable at runtime by
:meth:`Worker.switch_mode`, which the migration watcher of a later release uses):

* ``lease-count-2x`` (KCL 2.x): every worker scans and **takes** leases (lease-count target, stealing);
  shard sync runs on the deterministic leader.
* ``utilization-3x`` (KCL 3.x): one **leader** (DynamoDB-lock compatible ``Leader`` item) assigns leases by
  measured load (CPU when available, else throughput) with graceful handoffs; the others **discover** their
  leases through the owner index; every worker reports its metrics.

Loops (one thread each, stopped by one event; each checks the current mode on every run):

* **renewer** (always) — every ``failover/3 − ε``: renew held leases (with their throughput); a lost lease's
  consumer notices and shuts down; a handoff started by the leader makes the consumer checkpoint
  (``shutdown_requested``) and transfer the lease.
* **taker** (2.x) — at start, then every ``2 × (failover + ε)`` (and early after a shard ends).
* **leader / assigner** (3.x) — every ``lease_assignment_interval`` (2 × failover): keep the leader lock;
  on the leader, run one assignment pass.
* **discoverer** (3.x) — every ``lease_assignment_interval/2 − ε``: start consumers for newly assigned leases.
* **metrics** (3.x) — capture CPU every second, report the worker-metrics item every 30 s.
* **shard sync** — on the leader of the current mode: create missing leases, audit holes, clean up parents.
* **dispatcher** (the thread that calls :meth:`Worker.run`) — runs each due consumer's next step on the pool.

Fleet migration (``WorkerConfig.client_version_config``, kcl-protocol.md §4): when set, the ``Migration3.0``
item decides the generation instead of ``assignment``. A :class:`~shardwise.versions.migration.MigrationCoordinator`
settles the start state, then watches the item and switches this worker at runtime
(:meth:`Worker.apply_migration_state`): 2.x taking ↔ 3.x leader assignment, deterministic ↔ lock leader,
worker-metrics reporting on/off (reported in UPGRADE_FROM_2X under 2.x taking too), owner index created. A
switch keeps every held lease and consumer and moves no lease: the first leader term after a switch to 3.x
only assigns expired or unassigned leases (no rebalancing until the whole fleet has had time to switch), and a
switch to 2.x starts the taker's observations afresh, so nothing looks expired.

Graceful shutdown (:meth:`Worker.request_shutdown`, SIGTERM/SIGINT in the CLI): taking stops, every processor
gets ``shutdown_requested`` (and checkpoints), each lease is released so another worker can take it at once,
then the worker exits; past ``shutdown_timeout_ms`` it exits anyway and the remaining leases simply expire.
Leases that a take or discovery already under way brings are given back the same way (or, once the dispatcher
has finished, released without a consumer).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from shardwise.assignment.taker import TakerConfig
from shardwise.assignment.utilization import AssignmentConfig
from shardwise.backends import BackendBound, CoordinatorTables, open_coordinator_tables
from shardwise.errors import (
    ConfigurationError,
    DependencyError,
    InvalidStateError,
    ShardwiseError,
    UnsupportedFeatureVersionError,
)
from shardwise.leadership.deterministic import DeterministicShuffleLeaderDecider
from shardwise.leadership.lock import LeaderLock
from shardwise.leases.model import RESERVED_KEYS, Lease
from shardwise.leases.store import LeaseStore, OwnerIndex
from shardwise.leasing.assigner import LeaseAssignmentManager
from shardwise.leasing.discoverer import LeaseDiscoverer
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.leasing.shard_sync import InitialPosition, ShardSyncer
from shardwise.leasing.taker import LeaseTaker
from shardwise.lifecycle.consumer import ConsumerConfig, ShardConsumer
from shardwise.lifecycle.states import ShutdownReason
from shardwise.metrics.sink import MetricsSink, NullMetricsSink
from shardwise.processor import RecordProcessor, RecordProcessorFactory
from shardwise.retrieval.model import ChildShard
from shardwise.retrieval.source import StreamSource
from shardwise.tables.items import Layout
from shardwise.versions.feature_store import FeatureStore
from shardwise.versions.features import (
    FeaturesConfig,
    SupportedRange,
    first_unsupported,
    levels_from_client_version,
    worker_supported_ranges,
)
from shardwise.versions.migration import (
    CLIENT_VERSION_CONFIGS,
    ClientVersionConfig,
    MigrationConfig,
    MigrationCoordinator,
    ReadinessProbe,
    StateBehaviour,
)
from shardwise.versions.migration_state import MIGRATION_KEY, ClientVersion, MigrationStore
from shardwise.worker_metrics import (
    LeaseThroughputRecorder,
    WorkerMetricsCollector,
    WorkerMetricsConfig,
    WorkerMetricsReporter,
    select_cpu_source,
)

__all__ = [
    "AssignmentMode",
    "CoordinationConfig",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
    "default_worker_id",
]

logger = logging.getLogger(__name__)

AssignmentMode = Literal["lease-count-2x", "utilization-3x"]
_EPSILON_MS = 25
_INITIALIZATION_ATTEMPTS = 20


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
    shard_sync_interval_ms: int = 60_000
    max_consumer_threads: int = 16
    dispatch_poll_interval_ms: int = 20
    shutdown_timeout_ms: int = 30_000

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
        for name in ("shard_sync_interval_ms", "dispatch_poll_interval_ms", "shutdown_timeout_ms"):
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


class _Loop:
    """A periodic task on its own daemon thread; ``wake()`` runs it early."""

    def __init__(
        self,
        name: str,
        interval_s: Callable[[], float],
        task: Callable[[], None],
        stop: threading.Event,
        *,
        initial_delay_s: float = 0.0,
    ) -> None:
        self.name = name
        self._initial_delay_s = initial_delay_s
        self._interval_s = interval_s
        self._task = task
        self._stop = stop
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        if self._initial_delay_s > 0:
            self._wake.wait(self._initial_delay_s)
            self._wake.clear()
        while not self._stop.is_set():
            try:
                self._task()
            except Exception:
                logger.exception("%s loop failed; it runs again at its next interval", self.name)
            self._wake.wait(self._interval_s())
            self._wake.clear()


class Worker:
    """Consumes a stream with other workers of the same application, sharing shards through leases."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        store: LeaseStore,
        source: StreamSource,
        processor_factory: RecordProcessorFactory,
        metrics: MetricsSink | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        clock_epoch_s: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.worker_id = config.worker_id
        self._store = store
        self._source = source
        self._factory = processor_factory
        self._metrics = metrics or NullMetricsSink()
        self._clock_ns = clock_ns
        self._clock_epoch_s = clock_epoch_s
        self._rng = rng or random.Random()
        # Under the migration state machine the worker starts in 2.x mode until the state is settled.
        self._mode: AssignmentMode = config.assignment if config.client_version_config is None else "lease-count-2x"
        self._throughput = LeaseThroughputRecorder(clock_ns)
        self.renewer = LeaseRenewer(
            store,
            self.worker_id,
            failover_time_ms=config.leases.failover_time_ms,
            clock_ns=clock_ns,
            # Divide by the time actually elapsed: the renewer runs with a fixed delay, so its period is the
            # renewal interval plus the renewals' own duration (KCL's fixed-rate renewer divides by the interval).
            throughput_kbps=self._throughput.throughput_kbps,
            on_handoff=self._on_handoff,
        )
        self._taker = LeaseTaker(store, self.worker_id, config.leases, clock_ns=clock_ns, rng=self._rng)
        self._syncer = ShardSyncer(store, source, config.initial_position)
        self._deterministic_leader = DeterministicShuffleLeaderDecider(store, self.worker_id)
        self._synced_once = False
        # KCL 3.x parts, opened on first use (a 2.x-only worker never touches the coordinator items).
        self._tables: CoordinatorTables | None = None
        self._lock: LeaderLock | None = None
        self._assigner: LeaseAssignmentManager | None = None
        self._discoverer: LeaseDiscoverer | None = None
        self._collector = WorkerMetricsCollector(
            select_cpu_source(config=config.worker_metrics),
            config.worker_metrics,
            clock_ns,
        )
        self._reporter: WorkerMetricsReporter | None = None
        # Feature versions: where the finalized levels are read and this worker's ranges advertised, and why the
        # worker stopped if it met a level it cannot run.
        self._features: FeatureStore | None = None
        self._advertising = False
        self.stop_reason: UnsupportedFeatureVersionError | None = None
        # Migration: the coordinator (opened by _initialize), whether to report worker metrics (None: only in
        # 3.x mode), and the rebalancing hold for the first leader term after a switch to 3.x.
        self._migration: MigrationCoordinator | None = None
        self._client_version: ClientVersion | None = None
        self._report_metrics: bool | None = None
        self._rebalance_hold_until_ns: int | None = None
        self._loops_started = False
        # Serializes opening the 3.x parts; and taker runs, leader decisions and mode switches, so a switch
        # happens between two runs and a lock is never (re)acquired by a run of the mode being left.
        self._setup_lock = threading.RLock()
        self._coordination_lock = threading.Lock()
        self._was_leader = False
        self._reported_once = False
        self._discovery_interval_ms = config.lease_discovery_interval_ms
        # Keyed by (lease key, token): a lease lost and taken again gets a new consumer while the old one
        # still finishes its shutdown.
        self._consumers: dict[tuple[str, str], ShardConsumer] = {}
        self._running: dict[tuple[str, str], concurrent.futures.Future[None]] = {}
        self._handoffs: dict[str, int] = {}  # lease key -> ns when the leader's handoff was noticed
        self._consumers_lock = threading.Lock()
        self._stop_loops = threading.Event()
        self._shutdown_requested = threading.Event()
        self._stopped = threading.Event()
        self._shutdown_deadline_ns: int | None = None
        #: Set (under ``_consumers_lock``) once the dispatcher has finished: no shard consumer starts after it.
        self._intake_closed = False
        self.stats = WorkerStats(started_at_ns=clock_ns())
        leases = config.leases
        assignment_s = config.lease_assignment_interval_ms / 1000
        metrics_cfg = config.worker_metrics
        self._loops = [
            _Loop("shard-sync", lambda: config.shard_sync_interval_ms / 1000, self._sync, self._stop_loops),
            _Loop("renewer", lambda: leases.renewal_interval_ms / 1000, self._renew, self._stop_loops),
            _Loop("taker", lambda: leases.taker_interval_ms / 1000, self._take, self._stop_loops),
            _Loop("assigner", lambda: assignment_s, self._assign, self._stop_loops),
            _Loop("discoverer", lambda: self._discovery_interval_ms / 1000, self._discover, self._stop_loops),
            _Loop(
                "metrics-capture",
                lambda: metrics_cfg.in_memory_capture_frequency_ms / 1000,
                self._capture,
                self._stop_loops,
            ),
            # KCL reports first after two captures, so the first report carries real values.
            _Loop(
                "metrics-report",
                lambda: metrics_cfg.reporter_frequency_ms / 1000,
                self._report,
                self._stop_loops,
                initial_delay_s=2 * metrics_cfg.in_memory_capture_frequency_ms / 1000,
            ),
        ]
        self._loop_by_name = {loop.name: loop for loop in self._loops}
        if self._mode == "utilization-3x" or config.client_version_config is not None:
            self._check_worker_id_for_single_table()

    # -- public -------------------------------------------------------------------------------------

    @property
    def mode(self) -> AssignmentMode:
        return self._mode

    @property
    def layout(self) -> Layout | None:
        return None if self._tables is None else self._tables.layout

    def is_leader(self) -> bool:
        """Whether this worker currently leads (lock leader in 3.x, deterministic leader in 2.x)."""
        if self._mode == "utilization-3x":
            return self._lock is not None and self._lock.holds_lock()
        return self._deterministic_leader.is_leader()

    @property
    def client_version(self) -> ClientVersion | None:
        """The migration state this worker runs in (``None`` without ``client_version_config``)."""
        return self._client_version

    @property
    def migration(self) -> MigrationCoordinator | None:
        """The migration coordinator (``None`` without ``client_version_config`` or before initialization)."""
        return self._migration

    @property
    def reports_worker_metrics(self) -> bool:
        """Whether the metrics loop writes this worker's worker-metrics item."""
        flag = self._report_metrics
        return self._mode == "utilization-3x" if flag is None else flag

    def supported_ranges(self, version: ClientVersion | None = None) -> dict[str, SupportedRange]:
        """The feature levels this worker can run with (what it advertises): limited by its mode — a worker
        following ``Migration3.0`` runs either generation until ``CLIENT_VERSION_3X``, which is final — and by
        the ``[features]`` pin."""
        version = version if version is not None else self._client_version
        config = self.config.features
        return worker_supported_ranges(
            assignment=self.config.assignment,
            follows_migration=self.config.client_version_config is not None,
            final_3x=version is ClientVersion.V3X,
            release=config.pinned_release,
            max_levels=config.parsed_max_levels(),
        )

    def switch_mode(self, mode: AssignmentMode) -> None:
        """Switch the coordination generation between two loop runs; held leases and consumers are untouched.

        To 3.x: the first leader term afterwards only assigns expired or unassigned leases until the whole
        fleet has had time to notice the switch (one migration poll interval plus its jitter), so the switch
        moves no lease. To 2.x: the leader lock is released and the taker forgets its observations (a lease
        first seen owned counts as just renewed), so nothing looks expired.
        """
        if mode == self._mode:
            return
        if mode == "utilization-3x":
            self._check_worker_id_for_single_table()
            self._ensure_3x()  # may wait for the owner index: outside the coordination lock
        with self._coordination_lock:
            if mode == self._mode:
                return
            logger.info("worker %s switches lease assignment from %s to %s", self.worker_id, self._mode, mode)
            self._was_leader = False
            if mode == "utilization-3x":
                if self._loops_started:
                    hold_ms = 0
                    if self.config.client_version_config is not None:
                        migration = self.config.migration
                        hold_ms = migration.client_version_poll_interval_ms + migration.client_version_poll_jitter_ms
                    self._rebalance_hold_until_ns = self._clock_ns() + hold_ms * 1_000_000
                self._discovery_interval_ms = self.config.lease_discovery_interval_ms
            else:
                if self._lock is not None and self._lock.holds_lock():
                    try:
                        self._lock.release()
                    except ShardwiseError as exc:
                        logger.warning(
                            "could not release the leader lock; it expires after its lease duration: %s", exc
                        )
                self._taker = LeaseTaker(
                    self._store, self.worker_id, self.config.leases, clock_ns=self._clock_ns, rng=self._rng
                )
            self._mode = mode
        for name in ("assigner", "discoverer", "metrics-report", "taker"):
            self._loop_by_name[name].wake()

    def apply_migration_state(self, version: ClientVersion, behaviour: StateBehaviour) -> None:
        """Enter a migration state (called by the :class:`MigrationCoordinator`, at initialization and from its
        thread): open what the state needs (coordinator items, worker-metrics table, owner index — started
        without waiting in UPGRADE_FROM_2X, waited for in 3.x), turn worker-metrics reporting on or off and
        switch the assignment mode. Held leases and running consumers are untouched.

        A version whose levels this worker cannot run (a pinned or older worker) is not applied: at start the
        worker refuses to run, later it stops processing cleanly (:attr:`stop_reason`)."""
        problem = first_unsupported(levels_from_client_version(version), self.supported_ranges(version))
        if problem is not None:
            self._unsupported(problem, f"{MIGRATION_KEY} is {version.value}")
            return
        with self._setup_lock:
            if (
                behaviour.report_worker_metrics
                or behaviour.create_owner_index
                or behaviour.assignment == "utilization-3x"
            ):
                tables = self._ensure_tables()
                if behaviour.report_worker_metrics:
                    # Legacy layout: KCL <= 3.4 re-creates <app>-WorkerMetricStats (the rollback tool deletes it).
                    tables.worker_metrics.create_if_not_exists()
            if behaviour.create_owner_index and not behaviour.wait_for_owner_index:
                self._request_owner_index()
            if behaviour.assignment == "utilization-3x":
                self._ensure_3x()
        if behaviour.report_worker_metrics:
            self._report_metrics = True  # before a switch to 3.x: the new leader needs our metrics
        self.switch_mode(behaviour.assignment)
        self._report_metrics = behaviour.report_worker_metrics
        self._client_version = version
        self._loop_by_name["metrics-report"].wake()

    def _initialize(self) -> None:
        self._store.create_table_if_not_exists()
        self._check_features()
        if self.config.client_version_config is not None:
            self._initialize_migration(self.config.client_version_config)
        elif self._mode == "utilization-3x":
            self._ensure_3x()
        self._advertise()

    def _initialize_migration(self, client_version_config: ClientVersionConfig) -> None:
        """Open the ``Migration3.0`` item (in the coordinator namespace of the application's layout), settle
        the start state (kcl-protocol.md §4.1) and apply it."""
        with self._setup_lock:
            tables = self._ensure_tables()
            tables.coordinator.create_if_not_exists()  # legacy layout: KCL <= 3.4 creates it at every start
            if self._migration is None:
                probe = ReadinessProbe(
                    self._store,
                    tables.worker_metrics,
                    self._store if isinstance(self._store, OwnerIndex) else None,
                    taker_config=self.config.leases,
                    metrics_config=self.config.worker_metrics,
                    clock_ns=self._clock_ns,
                    clock_epoch_s=self._clock_epoch_s,
                )
                self._migration = MigrationCoordinator(
                    self,
                    MigrationStore(tables.coordinator, clock_ms=lambda: int(self._clock_epoch_s() * 1000)),
                    self.config.migration,
                    client_version_config,
                    probe=probe,
                    metrics=self._metrics,
                    clock_ns=self._clock_ns,
                    rng=self._rng,
                )
        self._migration.initialize()

    def run(self) -> None:
        """Run until :meth:`request_shutdown` (then shut down gracefully). Blocks the calling thread.

        Initialization (lease table, KCL 3.x items and owner index) is retried on transient backend faults,
        like KCL's ``maxInitializationAttempts`` (20 attempts, 1 s apart); configuration errors fail at once.
        """
        for attempt in range(1, _INITIALIZATION_ATTEMPTS + 1):
            try:
                self._initialize()
                break
            except DependencyError as exc:
                if attempt == _INITIALIZATION_ATTEMPTS or self._shutdown_requested.is_set():
                    raise
                logger.warning(
                    "worker %s: initialization attempt %d failed, retrying: %s", self.worker_id, attempt, exc
                )
                time.sleep(1.0)
        logger.info(
            "worker %s starts on application %s (lease table %s), stream %s, lease assignment %s",
            self.worker_id,
            self.config.application_name,
            self.config.table_name,
            self.config.stream_name,
            self._mode,
        )
        self._loops_started = True
        for loop in self._loops:
            loop.start()
        if self._migration is not None:
            self._migration.start()
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.max_consumer_threads, thread_name_prefix="shard-consumer"
        )
        try:
            self._dispatch(pool)
        finally:
            if self._migration is not None:
                self._migration.stop()
            self._stop_loops.set()
            for loop in self._loops:
                loop.join(5.0)
            if self._lock is not None and self._lock.holds_lock():
                try:
                    self._lock.release()
                except Exception:
                    logger.warning("could not release the leader lock; it expires after its lease duration")
            pool.shutdown(wait=False, cancel_futures=True)
            self._withdraw()
            self._stopped.set()
            logger.info("worker %s stopped", self.worker_id)

    def request_shutdown(self) -> None:
        """Start a graceful shutdown (idempotent; safe from a signal handler)."""
        if not self._shutdown_requested.is_set():
            self._shutdown_deadline_ns = self._clock_ns() + self.config.shutdown_timeout_ms * 1_000_000
            self._shutdown_requested.set()

    def wait_stopped(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)

    def consumers(self) -> list[ShardConsumer]:
        with self._consumers_lock:
            return list(self._consumers.values())

    def held_leases(self) -> list[Lease]:
        return [held.lease for held in self.renewer.held().values()]

    # -- KCL 3.x set-up -----------------------------------------------------------------------------

    def _check_worker_id_for_single_table(self) -> None:
        if self.worker_id.startswith("shardId-") or self.worker_id in RESERVED_KEYS:
            raise ConfigurationError(
                f"worker id {self.worker_id!r} cannot be used with KCL 3.x coordination: worker-metrics items "
                "share the lease table's keys, so a worker id must not look like a shard id or equal "
                f"{', '.join(sorted(RESERVED_KEYS))}; choose another --worker-id"
            )

    def _ensure_tables(self) -> CoordinatorTables:
        """Open the coordinator and worker-metrics items and the metrics reporter (once; no waiting)."""
        with self._setup_lock:
            if self._tables is not None:
                return self._tables
            coordination = self.config.coordination
            tables = open_coordinator_tables(
                self._store,
                self.config.application_name,
                layout=None if coordination.layout == "auto" else coordination.layout,
                coordinator_table_name=coordination.coordinator_table_name,
                worker_metrics_table_name=coordination.worker_metrics_table_name,
            )
            if self._needs_legacy_layout(tables):
                logger.info(
                    "worker %s: compatible-with-2x on an application without coordinator items: using the legacy "
                    "layout, so that no non-lease item enters the lease table KCL 2.x workers may still read",
                    self.worker_id,
                )
                tables = open_coordinator_tables(
                    self._store,
                    self.config.application_name,
                    layout="legacy",
                    coordinator_table_name=coordination.coordinator_table_name,
                    worker_metrics_table_name=coordination.worker_metrics_table_name,
                )
            self._reporter = WorkerMetricsReporter(
                tables.worker_metrics,
                self.worker_id,
                self._collector,
                self.config.worker_metrics,
                clock_epoch_s=self._clock_epoch_s,
                metrics=self._metrics,
            )
            self._tables = tables
            logger.info(
                "worker %s: KCL 3.x coordination items in the %s layout (%s)",
                self.worker_id,
                tables.layout,
                tables.coordinator.table_name,
            )
            return tables

    def _needs_legacy_layout(self, tables: CoordinatorTables) -> bool:
        """KCL 2.x workers cannot parse non-lease items in their lease table. A worker in ``compatible-with-2x``
        (the mode a fleet of KCL 2.x workers is migrated in) on DynamoDB, with the layout left on ``auto``, therefore
        starts a new application's coordination in the legacy tables, as KCL 3.0-3.4 does; an application whose
        ``Migration3.0`` item is already in the lease table keeps the single-table layout."""
        if (
            self.config.coordination.layout != "auto"
            or self.config.client_version_config != "compatible-with-2x"
            or tables.layout != "single-table"
        ):
            return False
        if not self._kcl_2x_peers():
            return False
        return tables.coordinator.get(MIGRATION_KEY) is None

    def _request_owner_index(self) -> None:
        """Start creating the owner index if it does not exist, without waiting (UPGRADE_FROM_2X)."""
        store = self._store
        if not isinstance(store, OwnerIndex):
            logger.warning(
                "worker %s: %s has no owner index; the fleet cannot move to KCL 3.x",
                self.worker_id,
                type(store).__name__,
            )
            return
        try:
            if store.owner_index_status() is None and store.create_owner_index():
                logger.info("worker %s started creating the owner index LeaseOwnerToLeaseKeyIndex", self.worker_id)
        except DependencyError as exc:
            logger.info("could not start creating the owner index (another worker may be creating it): %s", exc)

    def _ensure_3x(self) -> None:
        """Open the coordinator items, the leader lock and the owner index (once)."""
        with self._setup_lock:
            if self._assigner is not None:
                return
            self._open_3x()

    def _open_3x(self) -> None:
        tables = self._ensure_tables()
        # Legacy layout: KCL 3.0-3.4 creates <app>-CoordinatorState and <app>-WorkerMetricStats when it starts in
        # 3.x (no-ops in the single-table layout, where the items live in the lease table).
        tables.coordinator.create_if_not_exists()
        tables.worker_metrics.create_if_not_exists()
        coordination = self.config.coordination
        if not isinstance(self._store, OwnerIndex):
            raise ConfigurationError(f"{type(self._store).__name__} has no owner index; KCL 3.x needs one")
        self._wait_for_owner_index(self._store)
        self._lock = LeaderLock(
            tables.coordinator,
            self.worker_id,
            lease_duration_ms=coordination.leader_lease_duration_ms,
            heartbeat_period_ms=coordination.leader_heartbeat_period_ms,
        )
        self._assigner = LeaseAssignmentManager(
            self._store,
            tables.worker_metrics,
            config=self.config.utilization,
            failover_time_ms=self.config.leases.failover_time_ms,
            strategy=coordination.strategy,
            metrics_config=self.config.worker_metrics,
            metrics=self._metrics,
            clock_ns=self._clock_ns,
            clock_epoch_s=self._clock_epoch_s,
            rng=self._rng,
            discovery_interval_ms=max(
                self.config.lease_discovery_interval_ms, coordination.max_lease_discovery_interval_ms or 0
            ),
        )
        self._discoverer = LeaseDiscoverer(self._store, self._store, self.worker_id, lambda: set(self.renewer.held()))

    def _wait_for_owner_index(self, index: OwnerIndex) -> None:
        """Create the owner index if nobody has yet, and wait until it is ACTIVE. Several workers start at
        once: a failed create is retried after re-reading the status (another worker may be creating it)."""
        deadline = self._clock_ns() + self.config.coordination.owner_index_timeout_ms * 1_000_000
        while (status := index.owner_index_status()) != "ACTIVE":
            if status is None:
                try:
                    index.create_owner_index()
                    continue
                except DependencyError as exc:
                    logger.info("could not create the owner index (another worker may be creating it): %s", exc)
            if self._clock_ns() > deadline or self._shutdown_requested.is_set():
                raise InvalidStateError(
                    f"the owner index LeaseOwnerToLeaseKeyIndex is {status} after "
                    f"{self.config.coordination.owner_index_timeout_ms} ms; retry later or raise "
                    "coordination.owner_index_timeout_ms"
                )
            time.sleep(1.0)

    # -- loops --------------------------------------------------------------------------------------

    def _renew(self) -> None:
        result = self.renewer.renew_all()
        if result.lost:
            self.stats.leases_lost += len(result.lost)
            for key in result.lost:
                self._throughput.forget(key)
        self._metrics.put("RenewAllLeases", "CurrentLeases", len(self.renewer.held()))
        self._metrics.put("RenewAllLeases", "LostLeases", len(result.lost))

    def _start_consumers(self, leases: Sequence[Lease]) -> None:
        if not leases:
            return
        tokens = self.renewer.add_leases(leases)
        with self._consumers_lock:
            closed = self._intake_closed
            if not closed:
                self._add_consumers(leases, tokens)
        if closed:
            # Taken or discovered while the shutdown finished (the take was under way): nothing will process
            # them here, so give them back at once rather than leave them to expire.
            for lease in leases:
                self.renewer.release(lease.lease_key, tokens[lease.lease_key])
            logger.info(
                "worker %s is stopping: released leases %s at once",
                self.worker_id,
                ", ".join(lease.lease_key for lease in leases),
            )
            return
        self.stats.leases_taken += len(leases)

    def _add_consumers(self, leases: Sequence[Lease], tokens: Mapping[str, str]) -> None:
        """Under ``_consumers_lock``: a shard consumer per lease; during a shutdown each is asked to shut down
        at once (its processor gets ``shutdown_requested``, then the lease is released)."""
        stopping = self._shutdown_requested.is_set()
        for lease in leases:
            token = tokens[lease.lease_key]
            self._throughput.seed(lease.lease_key, lease.throughput_kbps)
            consumer = ShardConsumer(
                lease=lease,
                token=token,
                processor=self._new_processor(),
                source=self._source,
                store=self._store,
                renewer=self.renewer,
                create_child_leases=self._create_child_leases,
                config=self.config.consumer,
                clock_ns=self._clock_ns,
                on_records=self._on_records,
            )
            if stopping:
                consumer.request_shutdown()
            self._consumers[(lease.lease_key, token)] = consumer

    def _on_records(self, lease_key: str, count: int, size: int) -> None:
        self._throughput.record(lease_key, size)
        self.stats.add_records(lease_key, count, size)

    def _take(self) -> None:
        with self._coordination_lock:
            if self._shutdown_requested.is_set() or self._mode != "lease-count-2x":
                return
            taker = self._taker
            taken = taker.take_leases()
            self._start_consumers(taken)
        metrics = taker.last_metrics
        if metrics is not None:
            for name, value in metrics.as_dict().items():
                self._metrics.put("TakeLeases", name, value)
        if taken:
            logger.info("worker %s took leases %s", self.worker_id, ", ".join(lease.lease_key for lease in taken))

    def _assign(self) -> None:
        with self._coordination_lock:
            if self._mode != "utilization-3x" or self._lock is None or self._assigner is None:
                return
            leader = not self._shutdown_requested.is_set() and self._lock.is_leader()
            if leader and not self._was_leader:
                logger.info("worker %s is the leader now", self.worker_id)
                hold = self._rebalance_hold_until_ns
                self._rebalance_hold_until_ns = None
                if hold is not None:
                    logger.info(
                        "worker %s: first leader term after the switch to KCL 3.x: only expired or unassigned leases "
                        "are assigned for %d ms (no rebalancing)",
                        self.worker_id,
                        max(0, hold - self._clock_ns()) // 1_000_000,
                    )
                self._assigner.reset(skip_rebalance_until_ns=hold)
            self._was_leader = leader
            if not leader:
                return
            run = self._assigner.run_once()
        if any(move.to_worker == self.worker_id for move in run.decision.moves):
            self._loop_by_name["discoverer"].wake()
        if not self._synced_once:
            self._loop_by_name["shard-sync"].wake()

    def _discover(self) -> None:
        if self._shutdown_requested.is_set() or self._mode != "utilization-3x" or self._discoverer is None:
            return
        found = self._discoverer.discover()
        self._metrics.put("LeaseDiscovery", "NewLeasesDiscovered", len(found))
        # KCL queries the owner index every ~10 s on every worker, which makes a small steady fleet read more
        # than the 2.x generation (KCL issue #1406). While nothing changes the interval doubles up to
        # coordination.max_lease_discovery_interval_ms; it drops back to KCL's whenever a lease arrives or the
        # worker holds none (a leader that assigns to itself wakes its own discoverer at once).
        base = self.config.lease_discovery_interval_ms
        ceiling = max(base, self.config.coordination.max_lease_discovery_interval_ms or base)
        if found or not self.renewer.held():
            self._discovery_interval_ms = base
        else:
            self._discovery_interval_ms = min(ceiling, self._discovery_interval_ms * 2)
        if found:
            self._start_consumers(found)
            logger.info("worker %s discovered leases %s", self.worker_id, ", ".join(lease.lease_key for lease in found))

    def _capture(self) -> None:
        # Under the migration state machine collection goes on in every state (KCL: only the reporter stops).
        if self._mode == "utilization-3x" or self._migration is not None:
            self._collector.capture()

    # -- feature versions --------------------------------------------------------------------------------

    def _feature_store(self) -> FeatureStore:
        if self._features is None:
            tables = self._ensure_tables()
            self._features = FeatureStore(
                tables.coordinator,
                tables.worker_metrics,
                clock_ms=lambda: int(self._clock_epoch_s() * 1000),
            )
        return self._features

    def _check_features(self) -> None:
        """Admission (at start) and the running check: every finalized level must be one this worker runs."""
        finalized = self._feature_store().read(detect_layout_by_scan=False)
        problem = first_unsupported(finalized.levels, self.supported_ranges())
        if problem is not None:
            self._unsupported(problem, finalized.sources.get(problem[0], "the features record"))

    def _unsupported(self, problem: tuple[str, int, SupportedRange], source: str) -> None:
        feature, level, supported = problem
        if not self._loops_started:
            raise UnsupportedFeatureVersionError(
                f"Unable to start because the worker does not support finalized version {level} of {feature}. "
                f"The worker wants a version between {supported.min_level} and {supported.max_level}, inclusive. "
                f"(finalized in {source}; run a shardwise release that supports it, or downgrade the feature with "
                "`shardwise features downgrade`)",
                feature,
                level,
                (supported.min_level, supported.max_level),
            )
        if self.stop_reason is None:
            self.stop_reason = UnsupportedFeatureVersionError(
                f"The worker stopped because the fleet finalized version {level} of {feature} ({source}), which it "
                f"does not support. The worker wants a version between {supported.min_level} and "
                f"{supported.max_level}, inclusive. Restart it on a release that supports the level.",
                feature,
                level,
                (supported.min_level, supported.max_level),
            )
            logger.error("worker %s: %s", self.worker_id, self.stop_reason)
        self.request_shutdown()

    def _may_advertise(self) -> bool:
        """Only fleets that know KCL 3.x items get worker records: a pure 2.x worker on DynamoDB writes nothing but
        leases, so KCL 2.x workers can share its lease table."""
        return (
            self.config.client_version_config is not None or self._mode == "utilization-3x" or not self._kcl_2x_peers()
        )

    def _kcl_2x_peers(self) -> bool:
        """Whether KCL 2.x workers may share this lease table (assumed for a store that does not name its
        backend)."""
        return not isinstance(self._store, BackendBound) or self._store.backend.capabilities.kcl_2x_peers

    def _advertise(self) -> None:
        """Write this worker's supported ranges on its worker record (never creates a table for it: after a
        rollback the legacy worker-metrics table is gone on purpose)."""
        if not self._may_advertise() or self._shutdown_requested.is_set():
            return
        if self.reports_worker_metrics and not self._reported_once:
            # The record would exist without lut/sts/opr until the first report, and KCL's leader logs such a
            # worker as invalid: advertise with (right after) the first report instead.
            return
        store = self._feature_store()
        if not store.worker_metrics.exists():
            return
        store.advertise(
            self.worker_id, self.supported_ranges(), self.config.features.pinned_release, self._clock_epoch_s()
        )
        self._advertising = True

    def _withdraw(self) -> None:
        """At a clean stop, delete this worker's record (metrics and advertisement): a leader that still saw it
        as active would assign it the leases it just released, and they would sit until their grace expired."""
        tables = self._tables
        if tables is None or not (self._advertising or self._reported_once):
            return
        try:
            tables.worker_metrics.delete(self.worker_id)
        except ShardwiseError as exc:
            logger.warning("worker %s: could not delete its worker record: %s", self.worker_id, exc)

    def _features_tick(self) -> None:
        if self._shutdown_requested.is_set():
            return
        try:
            self._check_features()
            self._advertise()
        except ShardwiseError as exc:
            logger.warning("worker %s: could not check feature versions, retrying: %s", self.worker_id, exc)

    def _report(self) -> None:
        try:
            self._report_metrics_once()
        finally:
            self._features_tick()

    def _report_metrics_once(self) -> None:
        if self.reports_worker_metrics and self._reporter is not None and not self._shutdown_requested.is_set():
            self._reporter.report()
            if not self._reported_once:
                self._reported_once = True
                self._loop_by_name["assigner"].wake()  # a new leader need not wait a whole interval for us

    def _on_handoff(self, lease_key: str, next_owner: str) -> None:
        self._handoffs[lease_key] = self._clock_ns()
        for consumer in self.consumers():
            if consumer.shard_id == lease_key:
                consumer.request_shutdown()

    def _new_processor(self) -> RecordProcessor:
        processor = self._factory()
        if not isinstance(processor, RecordProcessor):
            raise ConfigurationError(
                f"the processor factory returned {type(processor).__name__}, which lacks the record-processor "
                "methods (initialize, process_records, lease_lost, shard_ended, shutdown_requested)"
            )
        return processor

    def _sync(self) -> None:
        """Leader only: a full shard sync on the first run, then KCL's hole audit (which syncs after three
        consecutive audits see the same holes) and clean-up of finished parent leases."""
        if self._shutdown_requested.is_set():
            return
        with self._coordination_lock:
            if self._mode == "utilization-3x":
                leader = self._lock is not None and self._lock.is_leader()
            else:
                leader = self._deterministic_leader.is_leader()
        if not leader:
            return
        if not self._synced_once:
            created = self._syncer.sync()
            self._synced_once = True
            if created:
                self._loop_by_name["taker"].wake()
                self._loop_by_name["assigner"].wake()
            return
        leases = self._recent_lease_snapshot()
        if self._syncer.audit(leases):
            self._loop_by_name["taker"].wake()
            leases = None
        self._syncer.clean_up(leases)

    def _recent_lease_snapshot(self) -> list[Lease] | None:
        """The lease table as the taker or the leader last scanned it, if that scan is recent enough to audit
        and clean up with (saves a scan per sync run); else ``None``."""
        max_age_ns = self.config.shard_sync_interval_ms * 1_000_000
        now = self._clock_ns()
        if self._mode == "utilization-3x":
            snapshot = None if self._assigner is None else self._assigner.last_leases
        else:
            snapshot = self._taker.last_scan
        if snapshot is None or now - snapshot[0] > max_age_ns:
            return None
        return snapshot[1]

    def _create_child_leases(self, parent: Lease, children: Sequence[ChildShard]) -> None:
        self._syncer.create_child_leases(parent, children)
        self._loop_by_name["taker"].wake()
        self._loop_by_name["assigner"].wake()

    # -- dispatch -----------------------------------------------------------------------------------

    def _force_overdue_handoffs(self, now: int) -> None:
        timeout_ns = self.config.utilization.graceful_lease_handoff_timeout_ms * 1_000_000
        for key, started in list(self._handoffs.items()):
            held = self.renewer.get(key)
            if held is None:
                del self._handoffs[key]
            elif now - started > timeout_ns:
                logger.warning("handoff of lease %s timed out; transferring it without waiting for its processor", key)
                self.renewer.complete_handoff(key, held.token)
                del self._handoffs[key]

    def _dispatch(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        poll_s = self.config.dispatch_poll_interval_ms / 1000
        shutting_down = False
        while True:
            if self._shutdown_requested.is_set() and not shutting_down:
                shutting_down = True
                logger.info("worker %s shuts down gracefully", self.worker_id)
                for consumer in self.consumers():
                    consumer.request_shutdown()
            now = self._clock_ns()
            if self._handoffs:
                self._force_overdue_handoffs(now)
            with self._consumers_lock:
                for key, consumer in list(self._consumers.items()):
                    future = self._running.get(key)
                    if future is not None and not future.done():
                        continue
                    self._running.pop(key, None)
                    if consumer.is_complete:
                        del self._consumers[key]
                        if consumer.shutdown_reason is ShutdownReason.SHARD_END:
                            self._loop_by_name["taker"].wake()
                        continue
                    if consumer.is_due(now):
                        self._running[key] = pool.submit(consumer.step)
                remaining = len(self._consumers)
                if shutting_down and remaining == 0:
                    # Leases that a take or discovery under way still brings are released, not consumed.
                    self._intake_closed = True
                    return
            if shutting_down:
                deadline = self._shutdown_deadline_ns
                if deadline is not None and now > deadline:
                    logger.warning(
                        "worker %s: shutdown timeout; %d shard consumer(s) did not finish, their leases will expire",
                        self.worker_id,
                        remaining,
                    )
                    with self._consumers_lock:
                        self._intake_closed = True
                    return
            time.sleep(poll_s)
