"""The worker: one process, one worker id, a handful of loops, the current coordination generation and a
bounded pool of shard consumers.

Two generations of lease coordination (:mod:`shardwise.worker.generations`), chosen by
``WorkerConfig.assignment`` and switchable at runtime (:meth:`Worker.switch_mode`): ``lease-count-2x`` (every
worker takes leases by count; the deterministic leader runs shard sync) and ``utilization-3x`` (the lock leader
assigns leases by load; every worker discovers its own and reports its metrics). A switch swaps the generation
object between two loop runs; held leases and running consumers are untouched.

Loops (one thread each, stopped together; each asks the current generation on every run):

* **renewer** (always) — every ``failover/3 − ε``: renew held leases (with their throughput); a lost lease's
  consumer notices and shuts down; a handoff started by the leader makes the consumer checkpoint
  (``shutdown_requested``) and transfer the lease.
* **taker** (2.x) — at start, then every ``2 × (failover + ε)`` (and early after a shard ends).
* **assigner** (3.x) — every ``lease_assignment_interval`` (2 × failover): keep the leader lock; on the leader,
  run one assignment pass.
* **discoverer** (3.x) — every ``lease_assignment_interval/2 − ε``: start consumers for newly assigned leases.
* **metrics** (3.x) — capture CPU every second, report the worker-metrics item every 30 s.
* **shard sync** — on the leader of the current generation: create missing leases, audit holes, clean up parents.
* **dispatcher** (the thread that calls :meth:`Worker.run`, :mod:`shardwise.worker.dispatcher`) — runs each due
  consumer's next step on the pool.

Fleet migration (``WorkerConfig.client_version_config``, kcl-protocol.md §4): when set, the ``Migration3.0``
item decides the generation instead of ``assignment``. The
:class:`~shardwise.versions.migration.MigrationCoordinator` settles the start state, then watches the item; it
returns each :class:`~shardwise.versions.migration.MigrationStep` and the worker applies it
(:mod:`shardwise.worker.migration`): 2.x taking ↔ 3.x leader assignment, worker-metrics reporting on/off
(reported in UPGRADE_FROM_2X under 2.x taking too), owner index created. The first leader term after a switch
to 3.x only assigns expired or unassigned leases (no rebalancing until the whole fleet has had time to switch).

Graceful shutdown (:meth:`Worker.request_shutdown`, SIGTERM/SIGINT in the CLI): taking stops, every processor
gets ``shutdown_requested`` (and checkpoints), each lease is released so another worker can take it at once,
then the worker exits; past ``shutdown_timeout_ms`` it exits anyway and the remaining leases simply expire.

Faults (:func:`shardwise.errors.classify`): initialization (lease table, stream, KCL 3.x items) is retried
while its errors are transient or "not ready" (a table or stream being created), up to
``max_initialization_attempts`` (KCL's bound, 20) with back-off and jitter; anything else fails at once. While
running, a permanent error (missing stream or table, damaged database, access denied, configuration found bad
late) seen ``permanent_error_limit`` times in a row by one loop or one shard consumer stops the worker: it
shuts down gracefully and :attr:`Worker.stop_reason` says why. Transient errors are retried, never fatal.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from shardwise.errors import ShardwiseError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore
from shardwise.leasing.bad_items import MalformedLeaseReporter
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.leasing.shard_sync import ShardSyncer
from shardwise.lifecycle.consumer import ShardConsumer
from shardwise.metrics.sink import MetricsSink, NullMetricsSink
from shardwise.processor import RecordProcessorFactory
from shardwise.retrieval.model import ChildShard
from shardwise.retrieval.source import StreamSource
from shardwise.tables.items import Layout
from shardwise.versions.features import (
    SupportedRange,
    first_unsupported,
    levels_from_client_version,
    worker_supported_ranges,
)
from shardwise.versions.migration import MigrationCoordinator
from shardwise.versions.migration_rules import ClientVersionConfig, MigrationStep
from shardwise.versions.migration_state import MIGRATION_KEY, ClientVersion
from shardwise.worker.config import AssignmentMode, WorkerConfig, WorkerStats
from shardwise.worker.dispatcher import Dispatcher
from shardwise.worker.faults import initialize_with_retries
from shardwise.worker.features import FeatureVersions
from shardwise.worker.generations import GENERATIONS, Generation, GenerationContext, request_owner_index
from shardwise.worker.items import CoordinatorItems, kcl_2x_peers
from shardwise.worker.loops import LoopFaults, Loops
from shardwise.worker.migration import MigrationRunner, open_migration
from shardwise.worker.state import StateWiring
from shardwise.worker_metrics import LeaseThroughputRecorder, WorkerMetricsCollector, select_cpu_source

__all__ = ["Worker"]

logger = logging.getLogger(__name__)


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
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.worker_id = config.worker_id
        self._store = store
        self._source = source
        self._metrics = metrics or NullMetricsSink()
        self._clock_ns = clock_ns
        self._clock_epoch_s = clock_epoch_s
        self._follows_migration = config.client_version_config is not None
        throughput = LeaseThroughputRecorder(clock_ns, alpha=config.worker_metrics.lease_throughput_ema_alpha)
        self._throughput = throughput
        self.renewer = LeaseRenewer(
            store,
            self.worker_id,
            failover_time_ms=config.leases.failover_time_ms,
            local_expiry_margin_ms=config.leases.local_expiry_margin_ms,
            clock_ns=clock_ns,
            # Divide by the time actually elapsed: the renewer runs with a fixed delay, so its period is the
            # renewal interval plus the renewals' own duration (KCL's fixed-rate renewer divides by the interval).
            throughput_kbps=throughput.throughput_kbps,
            on_handoff=self._on_handoff,
        )
        self._syncer = ShardSyncer(store, source, config.initial_position)
        self._bad_items = MalformedLeaseReporter(
            store,
            self._metrics,
            clock_ns,
            interval_ms=config.malformed_lease_report_interval_ms,
            scan_needed=lambda: self._generation.needs_own_malformed_scan(),  # noqa: PLW0108 (the current one)
        )
        self._synced_once = False
        self.stats = WorkerStats(started_at_ns=clock_ns())
        self._dispatcher = Dispatcher(
            config,
            store=store,
            source=source,
            processor_factory=processor_factory,
            renewer=self.renewer,
            throughput=throughput,
            stats=self.stats,
            create_child_leases=self._create_child_leases,
            on_shard_end=lambda: self._loops.wake("taker"),
            clock_ns=clock_ns,
            on_permanent_error=self._on_permanent,
            state=StateWiring(
                config, store, self._metrics, clock_ns, lambda: (self._features.finalized, self.supported_ranges())
            ).services,
        )
        self._collector = WorkerMetricsCollector(
            select_cpu_source(config=config.worker_metrics), config.worker_metrics, clock_ns
        )
        # KCL 3.x items, opened on first use (a 2.x-only worker never touches the coordinator items).
        self._items = CoordinatorItems(
            config, store, collector=self._collector, metrics=self._metrics, clock_epoch_s=clock_epoch_s
        )
        # Feature versions: where the finalized levels are read and this worker's ranges advertised, and why the
        # worker stopped if it met a level it cannot run.
        self._features = FeatureVersions(
            config, self._items, clock_epoch_s=clock_epoch_s, lease_store=store, published=self._published_features
        )
        self._features.on_unsupported = self._stop_for
        #: Why the worker stopped on its own (a feature level it cannot run, a permanent error), else ``None``.
        self.stop_reason: ShardwiseError | None = None
        #: How many initialization attempts :meth:`run` made.
        self.initialization_attempts = 0
        self._stop_lock = threading.Lock()
        self._sleep = sleep or self._sleep_unless_stopping
        self._context = GenerationContext(
            config,
            store,
            self.renewer,
            self._items,
            self._metrics,
            clock_ns,
            clock_epoch_s,
            rng or random.Random(),
            lambda: self._dispatcher.stopping,
            lambda: self._features.summary,
        )
        # Serializes taker runs, leader decisions and generation swaps, so a swap happens between two runs and a
        # lock is never (re)acquired by a run of the generation being left.
        self._coordination_lock = threading.Lock()
        self._generations: dict[AssignmentMode, Generation] = {}
        if self._follows_migration:
            # The migration may switch to 3.x at any time: check the worker id now.
            self._generation_for("utilization-3x")
        # Under the migration state machine the worker starts in 2.x until the state is settled.
        self._generation = self._generation_for("lease-count-2x" if self._follows_migration else config.assignment)
        # Migration: the coordinator and its thread (opened by _initialize), whether to report worker metrics
        # (None: as the generation does) and the client version applied last.
        self._migration: MigrationRunner | None = None
        self._client_version: ClientVersion | None = None
        self._report_metrics: bool | None = None
        self._loops_started = False
        self._reported_once = False
        self._stopped = threading.Event()
        self._loop_faults = LoopFaults(
            retry_backoff_s=config.retry_backoff_ms / 1000,
            on_permanent=self._on_permanent,
            rng=self._context.rng,
            clock_ns=clock_ns,
        )
        self._loops = Loops(self._loop_faults)
        leases = config.leases
        metrics_cfg = config.worker_metrics
        self._loops.add("shard-sync", lambda: config.shard_sync_interval_ms / 1000, self._sync)
        self._loops.add("renewer", lambda: leases.renewal_interval_ms / 1000, self._renew)
        self._loops.add("taker", lambda: leases.taker_interval_ms / 1000, self._take)
        self._loops.add(
            "malformed-leases", lambda: config.malformed_lease_report_interval_ms / 1000, self._bad_items.run
        )
        self._loops.add("assigner", lambda: config.lease_assignment_interval_ms / 1000, self._assign)
        self._loops.add("discoverer", self._discovery_interval_s, self._discover)
        self._loops.add("metrics-capture", lambda: metrics_cfg.in_memory_capture_frequency_ms / 1000, self._capture)
        # KCL reports first after two captures, so the first report carries real values.
        self._loops.add(
            "metrics-report",
            lambda: metrics_cfg.reporter_frequency_ms / 1000,
            self._report,
            initial_delay_s=2 * metrics_cfg.in_memory_capture_frequency_ms / 1000,
        )

    # -- public -------------------------------------------------------------------------------------

    @property
    def mode(self) -> AssignmentMode:
        return self._generation.mode

    @property
    def layout(self) -> Layout | None:
        return self._items.layout

    def is_leader(self) -> bool:
        """Whether this worker currently leads (lock leader in 3.x, deterministic leader in 2.x)."""
        return self._generation.is_leader()

    @property
    def client_version(self) -> ClientVersion | None:
        """The migration state this worker runs in (``None`` without ``client_version_config``)."""
        return self._client_version

    @property
    def migration(self) -> MigrationCoordinator | None:
        """The migration coordinator (``None`` without ``client_version_config`` or before initialization)."""
        return None if self._migration is None else self._migration.coordinator

    @property
    def reports_worker_metrics(self) -> bool:
        """Whether the metrics loop writes this worker's worker-metrics item."""
        return self._generation.reports_worker_metrics if self._report_metrics is None else self._report_metrics

    def supported_ranges(self, version: ClientVersion | None = None) -> dict[str, SupportedRange]:
        """The feature levels this worker can run with (what it advertises): limited by its mode — a worker
        following ``Migration3.0`` runs either generation until ``CLIENT_VERSION_3X``, which is final — and by
        the ``[features]`` pin."""
        version = version if version is not None else self._client_version
        return worker_supported_ranges(
            assignment=self.config.assignment,
            follows_migration=self._follows_migration,
            final_3x=version is ClientVersion.V3X,
            release=self.config.features.pinned_release,
            max_levels=self.config.features.parsed_max_levels(),
        )

    def switch_mode(self, mode: AssignmentMode) -> None:
        """Switch the coordination generation between two loop runs; held leases and consumers are untouched.

        To 3.x: the first leader term afterwards only assigns expired or unassigned leases until the whole
        fleet has had time to notice the switch (one migration poll interval plus its jitter), so the switch
        moves no lease. To 2.x: the leader lock is released and the taker forgets its observations (a lease
        first seen owned counts as just renewed), so nothing looks expired.
        """
        with self._coordination_lock:
            target = self._generation_for(mode)
        if target is self._generation:
            return
        target.open()  # may wait for the owner index: outside the coordination lock
        with self._coordination_lock:
            current = self._generation
            if target is current:
                return
            logger.info("worker %s switches lease assignment from %s to %s", self.worker_id, current.mode, target.mode)
            current.leave()
            target.enter(rebalance_hold_until_ns=self._rebalance_hold_until_ns())
            self._generation = target
        self._loops.wake("assigner", "discoverer", "metrics-report", "taker")

    def _generation_for(self, mode: AssignmentMode) -> Generation:
        if mode not in self._generations:
            self._generations[mode] = GENERATIONS[mode](self._context)
        return self._generations[mode]

    def _rebalance_hold_until_ns(self) -> int | None:
        """Until when a new leader term only assigns expired or unassigned leases (``None`` at start)."""
        if not self._loops_started:
            return None
        hold_ms = 0
        if self._follows_migration:
            migration = self.config.migration
            hold_ms = migration.client_version_poll_interval_ms + migration.client_version_poll_jitter_ms
        return self._clock_ns() + hold_ms * 1_000_000

    def _apply(self, step: MigrationStep) -> None:
        """Run a migration step: open what its state needs (coordinator items, worker-metrics table, owner
        index — started without waiting in UPGRADE_FROM_2X, waited for in 3.x), turn worker-metrics reporting on
        or off and swap the generation. Held leases and running consumers are untouched.

        A version whose levels this worker cannot run (a pinned or older worker) is not applied: at start the
        worker refuses to run, later it stops processing cleanly (:attr:`stop_reason`)."""
        version, behaviour = step.version, step.behaviour
        problem = first_unsupported(levels_from_client_version(version), self.supported_ranges(version))
        if self._features.enforce(problem and (problem, f"{MIGRATION_KEY} is {version.value}"), self._loops_started):
            return
        with self._coordination_lock:
            target = self._generation_for(behaviour.assignment)
        if behaviour.report_worker_metrics or behaviour.create_owner_index:
            tables = self._items.open()
            if behaviour.report_worker_metrics:
                # Legacy layout: KCL <= 3.4 re-creates <app>-WorkerMetricStats (the rollback tool deletes it).
                tables.worker_metrics.create_if_not_exists()
        if behaviour.create_owner_index and not behaviour.wait_for_owner_index:
            request_owner_index(self._store, self.worker_id)
        target.open()
        if behaviour.report_worker_metrics:
            self._report_metrics = True  # before a switch to 3.x: the new leader needs our metrics
        self.switch_mode(behaviour.assignment)
        self._report_metrics = behaviour.report_worker_metrics
        self._client_version = version
        self._loops.wake("metrics-report")

    def run(self) -> None:
        """Run until :meth:`request_shutdown` or a permanent error (then shut down gracefully; :attr:`stop_reason`
        says why). Blocks the calling thread.

        Initialization (lease table, stream, KCL 3.x items and owner index) is retried while its errors are
        transient or "not ready", up to ``max_initialization_attempts`` (KCL's ``maxInitializationAttempts``)
        with back-off and jitter; other errors (configuration, access denied, a damaged database) fail at once.
        The last error is raised; :attr:`initialization_attempts` says how many attempts were made.
        """
        self._initialize_with_retries()
        logger.info(
            "worker %s starts on application %s (lease table %s), stream %s, lease assignment %s",
            self.worker_id,
            self.config.application_name,
            self.config.table_name,
            self.config.stream_name,
            self.mode,
        )
        self._loops_started = True
        self._loops.start()
        if self._migration is not None:
            self._migration.start()
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.max_consumer_threads, thread_name_prefix="shard-consumer"
        )
        try:
            self._dispatcher.run(pool)
        finally:
            if self._migration is not None:
                self._migration.stop()
            self._loops.stop(5.0)
            for generation in list(self._generations.values()):
                generation.stop()
            pool.shutdown(wait=False, cancel_futures=True)
            self._features.withdraw(reported=self._reported_once)
            self._stopped.set()
            logger.info("worker %s stopped", self.worker_id)

    def request_shutdown(self) -> None:
        """Start a graceful shutdown (idempotent; safe from a signal handler)."""
        self._dispatcher.request_shutdown()

    def wait_stopped(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)

    def consumers(self) -> list[ShardConsumer]:
        return self._dispatcher.consumers()

    def held_leases(self) -> list[Lease]:
        return [held.lease for held in self.renewer.held().values()]

    # -- initialization -----------------------------------------------------------------------------

    def _initialize_with_retries(self) -> None:
        def attempt(number: int) -> None:
            self.initialization_attempts = number

        initialize_with_retries(
            self._initialize,
            self.config,
            rng=self._context.rng,
            sleep=self._sleep,
            stopping=lambda: self._dispatcher.stopping,
            on_attempt=attempt,
        )

    def _sleep_unless_stopping(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._dispatcher.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def _initialize(self) -> None:
        self._store.create_table_if_not_exists()
        # The stream must exist (KCL's leader syncs shards during initialization): a missing stream is retried
        # within the bound (it may be being created), then fails the start with the stream named.
        self._source.list_shards()
        self._check_features()
        if self.config.client_version_config is not None:
            self._initialize_migration(self.config.client_version_config)
        else:
            self._generation.open()
        self._advertise()

    def _initialize_migration(self, client_version_config: ClientVersionConfig) -> None:
        """Open the ``Migration3.0`` item (in the coordinator namespace of the application's layout), settle
        the start state (kcl-protocol.md §4.1) and apply it."""
        tables = self._items.open()
        tables.coordinator.create_if_not_exists()  # legacy layout: KCL <= 3.4 creates it at every start
        if self._migration is None:
            coordinator = open_migration(
                self.config,
                client_version_config,
                self._store,
                tables,
                is_leader=self.is_leader,
                metrics=self._metrics,
                clock_ns=self._clock_ns,
                clock_epoch_s=self._clock_epoch_s,
                rng=self._context.rng,
            )
            self._migration = MigrationRunner(
                coordinator, self._apply, clock_ns=self._clock_ns, rng=self._context.rng, faults=self._loop_faults
            )
        self._migration.initialize()

    # -- feature versions ---------------------------------------------------------------------------

    def _published_features(self) -> str | None:
        return self._generation.published_features()

    def _check_features(self) -> None:
        """Admission (at start) and the running check: every finalized level must be one this worker runs."""
        found = self._features.first_unsupported(self.supported_ranges(), running=self._loops_started)
        self._features.enforce(found, self._loops_started)

    def _on_permanent(self, source: str, exc: BaseException, consecutive: int) -> None:
        """A loop or shard consumer saw a permanent error ``consecutive`` times in a row: at the limit the worker
        stops (gracefully: processors still get ``shutdown_requested``, leases are released where possible)."""
        if consecutive < self.config.permanent_error_limit or not isinstance(exc, ShardwiseError):
            return
        logger.error("worker %s stops: the %s failed %d times in a row", self.worker_id, source, consecutive)
        self._stop_for(exc)

    def _stop_for(self, reason: ShardwiseError) -> None:
        with self._stop_lock:
            first = self.stop_reason is None
            if first:
                self.stop_reason = reason
        if first:
            logger.error("worker %s: %s", self.worker_id, reason)
        self.request_shutdown()

    def _may_advertise(self) -> bool:
        """Only fleets that know KCL 3.x items get worker records: a pure 2.x worker on DynamoDB writes nothing but
        leases, so KCL 2.x workers can share its lease table."""
        may = self._follows_migration or self._generation.reports_worker_metrics or not kcl_2x_peers(self._store)
        return may and not self._dispatcher.stopping

    def _advertise(self) -> None:
        # A worker that reports metrics advertises with every report (one write; and its record never exists
        # without lut/sts/opr, which KCL's leader would log as an invalid worker).
        if not self.reports_worker_metrics and self._may_advertise():
            self._features.advertise(self.supported_ranges())

    # -- loops --------------------------------------------------------------------------------------

    def _renew(self) -> None:
        result = self.renewer.renew_all()
        if result.lost:
            self.stats.leases_lost += len(result.lost)
            for key in result.lost:
                self._throughput.forget(key)
        self._metrics.put("RenewAllLeases", "CurrentLeases", len(self.renewer.held()))
        self._metrics.put("RenewAllLeases", "LostLeases", len(result.lost))

    def _take(self) -> None:
        with self._coordination_lock:
            if self._dispatcher.stopping:
                return
            started = self._clock_ns()  # the local expiry of what is taken counts from before the take's writes
            generation = self._generation
            taken = generation.take()
            self._dispatcher.start_consumers(taken, acquired_at_ns=_stamps(taken, generation, started))
        if taken:
            logger.info("worker %s took leases %s", self.worker_id, ", ".join(lease.lease_key for lease in taken))

    def _assign(self) -> None:
        with self._coordination_lock:
            run = self._generation.assign()
        if run is None:
            return
        if any(move.to_worker == self.worker_id for move in run.decision.moves):
            self._loops.wake("discoverer")
        if not self._synced_once:
            self._loops.wake("shard-sync")

    def _discovery_interval_s(self) -> float:
        return self._generation.discovery_interval_s()  # the current generation's, read after every run

    def _discover(self) -> None:
        if self._dispatcher.stopping:
            return
        started = self._clock_ns()  # the local expiry of what is found counts from before its renewal
        generation = self._generation
        found = generation.discover()
        if found:
            self._dispatcher.start_consumers(found, acquired_at_ns=_stamps(found, generation, started))
            logger.info("worker %s discovered leases %s", self.worker_id, ", ".join(lease.lease_key for lease in found))

    def _capture(self) -> None:
        # Under the migration state machine collection goes on in every state (KCL: only the reporter stops).
        if self._generation.reports_worker_metrics or self._migration is not None:
            self._collector.capture()

    def _report(self) -> None:
        try:
            self._report_metrics_once()
        finally:
            self._features_tick()

    def _features_tick(self) -> None:
        if self._dispatcher.stopping:
            return
        try:
            self._check_features()
            self._advertise()
        except ShardwiseError as exc:
            logger.warning("worker %s: could not check feature versions, retrying: %s", self.worker_id, exc)

    def _report_metrics_once(self) -> None:
        reporter = self._items.reporter
        if self.reports_worker_metrics and reporter is not None and not self._dispatcher.stopping:
            reporter.report(self._features.advertisement(self.supported_ranges()) if self._may_advertise() else None)
            if not self._reported_once:
                self._reported_once = True
                self._loops.wake("assigner")  # a new leader need not wait a whole interval for us

    def _on_handoff(self, lease_key: str, next_owner: str) -> None:
        self._dispatcher.on_handoff(lease_key, next_owner)

    def _sync(self) -> None:
        """Leader only: a full shard sync on the first run, then KCL's hole audit (which syncs after three
        consecutive audits see the same holes) and clean-up of finished parent leases."""
        if self._dispatcher.stopping:
            return
        with self._coordination_lock:
            leader = self._generation.leads_shard_sync()
            if leader and not self._synced_once:
                # The first full sync holds the taker and the assigner off until every lease exists (KCL syncs
                # during initialization, before its coordinator starts): a take between two creations would
                # see a partial table and take a partial share.
                created = self._syncer.sync()
                self._synced_once = True
                if created:
                    self._loops.wake("taker", "assigner")
                return
        if not leader:
            return
        leases = self._recent_lease_snapshot()
        if self._syncer.audit(leases):
            self._loops.wake("taker")
            leases = None
        self._syncer.clean_up(leases)

    def _recent_lease_snapshot(self) -> list[Lease] | None:
        """The lease table as the taker or the leader last scanned it, if that scan is recent enough to audit
        and clean up with (saves a scan per sync run); else ``None``."""
        max_age_ns = self.config.shard_sync_interval_ms * 1_000_000
        now = self._clock_ns()
        snapshot = self._generation.recent_leases()
        if snapshot is None or now - snapshot[0] > max_age_ns:
            return None
        return snapshot[1]

    def _create_child_leases(self, parent: Lease, children: Sequence[ChildShard]) -> None:
        self._syncer.create_child_leases(parent, children)
        self._loops.wake("taker", "assigner")


def _stamps(leases: Sequence[Lease], generation: Generation, started_ns: int) -> dict[str, int]:
    """Where each acquired lease's local expiry starts: right before the write that made it ours (the take, or
    the discovery's renewal), else — conservatively — when the run started. A per-lease stamp matters when a run
    writes many leases against a slow store: a stamp from the start of the run could leave the last lease
    expired before it is even held."""
    stamps = generation.acquisition_stamps()
    return {lease.lease_key: stamps.get(lease.lease_key, started_ns) for lease in leases}
