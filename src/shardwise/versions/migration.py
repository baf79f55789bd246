"""The worker side of the KCL 2.x → 3.x client-version migration (kcl-protocol.md §4, §10.3).

A fleet moves from the 2.x generation (every worker takes leases by count) to the 3.x generation (a lock
leader assigns leases by measured load) — and back — without downtime, steered by the ``cv`` of the
``Migration3.0`` item (:mod:`shardwise.versions.migration_state`):

* ``CLIENT_VERSION_UPGRADE_FROM_2X`` — 2.x taking, but every worker reports its metrics and the owner index is
  being created; the leader watches for readiness and then writes ``3X_WITH_ROLLBACK``;
* ``CLIENT_VERSION_3X_WITH_ROLLBACK`` — 3.x coordination, still reversible by AWS's ``KclMigrationTool.py``;
* ``CLIENT_VERSION_2X`` — rolled back by the tool: 2.x taking, no metrics, until the tool rolls forward;
* ``CLIENT_VERSION_3X`` — final: 3.x coordination, nothing watched any more.

The pure parts: :func:`initial_state` (KCL's table of §4.1 for our two configurations), :func:`behaviour`
(§4.2), :func:`is_expected_transition` (§4.4), the readiness decision (:class:`ReadinessInputs`,
:func:`live_lease_owners`) and :class:`Stabilizer`. The I/O shell: :class:`ReadinessProbe` (one reading of the
fleet) and :class:`MigrationCoordinator` (one per worker: initial state, the change watcher and the readiness
monitor on one thread).

Where shardwise deliberately differs from KCL's readiness check (§4.3, §10.3 traps):

* owners ⊆ workers with fresh metrics — more workers than shards never blocks (KCL fixed this in 3.1.2);
* an *unowned* lease is ignored (in KCL it keeps the check false until someone takes it);
* the owner of an *expired* lease is ignored — a dead worker blocks only until its lease expires, judged on the
  leader's monotonic clock exactly as the 2.x taker judges it (counter unchanged for longer than the failover
  time). A lease seen for the first time counts as alive, so a new leader is conservative, never hasty.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from shardwise.assignment.taker import LeaseObservation, TakerConfig, is_expired, observe
from shardwise.errors import ConfigurationError, DependencyError, InvalidStateError, ShardwiseError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, OwnerIndex, SharedTableScan
from shardwise.metrics.sink import MetricsSink, NullMetricsSink
from shardwise.tables.items import ItemRecord, ItemTable, SharesLeaseTable
from shardwise.versions.feature_store import FEATURES_KEY, FeatureStore, holds_assignment
from shardwise.versions.features import LEASE_ASSIGNMENT
from shardwise.versions.migration_state import ClientVersion, MigrationState, MigrationStore
from shardwise.worker_metrics import (
    WorkerMetricsConfig,
    classify_worker_records,
)

__all__ = [
    "CLIENT_VERSION_CONFIGS",
    "OPERATION",
    "ClientVersionConfig",
    "MigrationConfig",
    "MigrationCoordinator",
    "MigrationHost",
    "ReadinessInputs",
    "ReadinessProbe",
    "ReadinessSource",
    "Stabilizer",
    "StateBehaviour",
    "behaviour",
    "initial_state",
    "is_expected_transition",
    "live_lease_owners",
]

logger = logging.getLogger(__name__)

ClientVersionConfig = Literal["compatible-with-2x", "3x"]
CLIENT_VERSION_CONFIGS: tuple[ClientVersionConfig, ...] = ("compatible-with-2x", "3x")

#: KCL's CloudWatch operation of the migration metrics (§9).
OPERATION = "Migration"
METRIC_2X_WORKER = "CurrentState:2xCompatibleWorker"
METRIC_3X_WORKER = "CurrentState:3xWorker"
METRIC_GSI_READY = "GsiReadyStatus"
METRIC_WORKER_METRICS_READY = "WorkerMetricsReadyStatus"
METRIC_FAULT = "Fault"

_Mode = Literal["lease-count-2x", "utilization-3x"]

#: Reads of the item at start-up before giving up to the worker's initialization retries (KCL ≤ 3.4: 10).
_READ_ATTEMPTS = 3
#: Create/transition attempts at start-up when other workers keep winning the conditional write.
_SETTLE_ATTEMPTS = 5
#: A failed transition write is retried after this long (KCL: every second).
_TRANSITION_RETRY_NS = 1_000_000_000
_NS_PER_MS = 1_000_000


def _check_ms(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"migration.{name} must be a whole number of milliseconds >= {low}, got {value!r}")


@dataclass(frozen=True, slots=True)
class MigrationConfig:
    """Timings of the migration state machine, with KCL's defaults (§4.3; the ``[migration]`` config section).

    * ``client_version_poll_interval_ms``: how often every worker re-reads ``Migration3.0`` (fixed delay);
    * ``client_version_poll_jitter_ms``: the first read comes after the interval plus a random 0 – jitter;
    * ``readiness_check_interval_ms``: how often the readiness monitor runs (it acts on the leader only);
    * ``stabilization_period_ms``: how long the fleet must stay ready before the leader flips to 3.x.
    """

    client_version_poll_interval_ms: int = 60_000
    client_version_poll_jitter_ms: int = 30_000
    readiness_check_interval_ms: int = 60_000
    stabilization_period_ms: int = 600_000

    def __post_init__(self) -> None:
        _check_ms("client_version_poll_interval_ms", self.client_version_poll_interval_ms, 1)
        _check_ms("client_version_poll_jitter_ms", self.client_version_poll_jitter_ms, 0)
        _check_ms("readiness_check_interval_ms", self.readiness_check_interval_ms, 1)
        _check_ms("stabilization_period_ms", self.stabilization_period_ms, 0)


# -- the state table ---------------------------------------------------------------------------------------


def initial_state(config: ClientVersionConfig, persisted: ClientVersion | None) -> tuple[ClientVersion, bool]:
    """KCL's ``MigrationClientVersionStateInitializer`` (§4.1): the state a starting worker enters, and whether
    it must write it (create the item when ``persisted`` is None, else a conditional update on the old ``cv``).

    ============================ ================ ================ ================ ================ ========
    config \\ persisted          none             3X_WITH_ROLLBACK 2X               UPGRADE_FROM_2X  3X
    ============================ ================ ================ ================ ================ ========
    ``compatible-with-2x``       UPGRADE (write)  3X_WITH_ROLLBACK 2X               UPGRADE_FROM_2X  3X
    ``3x``                       3X (write)       3X (write)       2X (sticky)      UPGRADE_FROM_2X  3X
    ============================ ================ ================ ================ ================ ========

    A rolled-back (2X) fleet stays rolled back even for workers configured ``3x``, until the tool rolls it
    forward. ``CLIENT_VERSION_INIT`` is never persisted: finding it is an :class:`InvalidStateError`.
    """
    if config not in CLIENT_VERSION_CONFIGS:
        raise ConfigurationError(
            f"client_version_config must be one of {', '.join(CLIENT_VERSION_CONFIGS)}, got {config!r}"
        )
    if persisted is ClientVersion.INIT:
        raise InvalidStateError(
            "the Migration3.0 item holds CLIENT_VERSION_INIT, which KCL never persists; fix or delete the item"
        )
    if persisted is None:
        return (ClientVersion.UPGRADE_FROM_2X if config == "compatible-with-2x" else ClientVersion.V3X), True
    if config == "3x" and persisted is ClientVersion.V3X_WITH_ROLLBACK:
        return ClientVersion.V3X, True
    return persisted, False


@dataclass(frozen=True, slots=True)
class StateBehaviour:
    """What a worker does in one client version (§4.2).

    * ``assignment``: ``lease-count-2x`` (2.x taker, deterministic shard-sync leader) or ``utilization-3x``
      (lock leader assigning, discovery through the owner index);
    * ``report_worker_metrics``: write this worker's metrics item (collection in memory goes on regardless);
    * ``create_owner_index``: start creating ``LeaseOwnerToLeaseKeyIndex`` if missing;
      ``wait_for_owner_index``: and wait until it is ACTIVE before coordinating (3X only);
    * ``readiness_monitor``: run the readiness monitor (it acts on the leader only);
    * ``watch``: keep polling ``Migration3.0`` for changes (3X is terminal: no watcher).
    """

    assignment: _Mode
    report_worker_metrics: bool
    create_owner_index: bool
    wait_for_owner_index: bool
    readiness_monitor: bool
    watch: bool

    @property
    def leader_decider(self) -> Literal["deterministic", "lock"]:
        return "lock" if self.assignment == "utilization-3x" else "deterministic"


_BEHAVIOURS: dict[ClientVersion, StateBehaviour] = {
    # KCL 3.5's PHASE1 state: pure 2.x; shardwise never enters it (no such config), listed for completeness.
    ClientVersion.INIT: StateBehaviour("lease-count-2x", False, False, False, False, False),
    ClientVersion.UPGRADE_FROM_2X: StateBehaviour("lease-count-2x", True, True, False, True, True),
    ClientVersion.V3X_WITH_ROLLBACK: StateBehaviour("utilization-3x", True, False, False, False, True),
    ClientVersion.V2X: StateBehaviour("lease-count-2x", False, False, False, False, True),
    ClientVersion.V3X: StateBehaviour("utilization-3x", True, True, True, False, False),
}


def behaviour(version: ClientVersion) -> StateBehaviour:
    """The behaviour of a client version (§4.2)."""
    return _BEHAVIOURS[version]


_EXPECTED: dict[ClientVersion, frozenset[ClientVersion]] = {
    ClientVersion.UPGRADE_FROM_2X: frozenset({ClientVersion.V3X_WITH_ROLLBACK, ClientVersion.V2X}),
    # 3X_WITH_ROLLBACK -> UPGRADE_FROM_2X: `shardwise features downgrade` of lease.assignment alone (to 1, keeping
    # lease.discovery 2; KCL's own workers only follow the rollback to 2X).
    ClientVersion.V3X_WITH_ROLLBACK: frozenset({ClientVersion.V2X, ClientVersion.V3X, ClientVersion.UPGRADE_FROM_2X}),
    # 2X -> 3X_WITH_ROLLBACK: `shardwise features upgrade` of lease.assignment and lease.discovery together
    # (roll-forward and flip in one step; KCL's own workers only follow 2X -> UPGRADE_FROM_2X).
    ClientVersion.V2X: frozenset({ClientVersion.UPGRADE_FROM_2X, ClientVersion.V3X_WITH_ROLLBACK}),
    ClientVersion.V3X: frozenset(),
    ClientVersion.INIT: frozenset(),
}


def is_expected_transition(current: ClientVersion, new: ClientVersion) -> bool:
    """Whether a running worker in ``current`` follows a change of ``cv`` to ``new`` (§4.4): the leader's flip
    (UPGRADE_FROM_2X → 3X_WITH_ROLLBACK), the tool's rollback (→ 2X) and roll-forward (2X → UPGRADE_FROM_2X),
    and a restarted ``3x`` worker finishing the migration (3X_WITH_ROLLBACK → 3X). Anything else is logged as
    an error and ignored while the watcher keeps polling, as in KCL."""
    return new in _EXPECTED[current]


# -- readiness ---------------------------------------------------------------------------------------------


def live_lease_owners(leases: Iterable[Lease], expired_keys: Collection[str]) -> frozenset[str]:
    """The owners of the leases that are owned and not expired (unowned leases have no owner to wait for;
    an expired lease's owner is presumed dead and its lease about to be taken)."""
    return frozenset(
        lease.lease_owner for lease in leases if lease.lease_owner is not None and lease.lease_key not in expired_keys
    )


@dataclass(frozen=True, slots=True)
class ReadinessInputs:
    """One reading of the fleet by the readiness monitor.

    ``lease_owners``: owners of unexpired leases (:func:`live_lease_owners`); ``active_metrics_workers``:
    workers whose metrics item is fresh (``lut`` within 2 × the reporter period).
    """

    gsi_active: bool
    lease_owners: frozenset[str]
    active_metrics_workers: frozenset[str]
    #: live shardwise workers whose advertised range excludes ``lease.assignment`` 2 (pinned or older releases):
    #: the automatic flip is a ``lease.assignment`` upgrade, and waits for them like ``shardwise features`` would.
    unsupported_workers: frozenset[str] = frozenset()

    @property
    def worker_metrics_ready(self) -> bool:
        """Every lease owner reports metrics; workers without leases may report too (more workers than
        shards is fine)."""
        return self.lease_owners <= self.active_metrics_workers

    @property
    def missing_metrics(self) -> frozenset[str]:
        """Lease owners without fresh metrics (what blocks the flip)."""
        return self.lease_owners - self.active_metrics_workers

    @property
    def ready(self) -> bool:
        return self.gsi_active and self.worker_metrics_ready and not self.unsupported_workers


class Stabilizer:
    """Reports ready only once the readings have been ready continuously for ``period_ms``
    (KCL's ``MonitorTriggerStabilizer``). A false reading or :meth:`reset` (loss of leadership) restarts it.

    ``clock_ns`` is a monotonic clock in nanoseconds. Not thread-safe (one monitor owns it).
    """

    def __init__(self, period_ms: int, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        value: object = period_ms
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"the stabilization period must be >= 0 ms, got {period_ms!r}")
        self._period_ns = period_ms * _NS_PER_MS
        self._clock_ns = clock_ns
        self._since_ns: int | None = None

    @property
    def ready_since_ns(self) -> int | None:
        """When the current run of ready readings started (``None``: the last reading was not ready)."""
        return self._since_ns

    def update(self, ready: bool) -> bool:
        """Record a reading; True iff ready readings have lasted at least the period."""
        if not ready:
            self._since_ns = None
            return False
        now = self._clock_ns()
        if self._since_ns is None:
            self._since_ns = now
        return now - self._since_ns >= self._period_ns

    def reset(self) -> None:
        self._since_ns = None


class ReadinessSource(Protocol):
    """Where the readiness monitor gets its readings from."""

    def read(self) -> ReadinessInputs: ...

    def reset(self) -> None:
        """Forget what was observed (leadership lost: a new term judges expiry from scratch)."""
        ...


class ReadinessProbe:
    """Reads the fleet for the readiness monitor: the owner index's status, one scan of the lease table and
    the worker-metrics items (one scan in the single-table layout, as the 3.x leader does).

    Lease expiry is judged like the 2.x taker judges it (:func:`shardwise.assignment.taker.observe`): on
    ``clock_ns``, a lease is expired once its counter has not moved for longer than the failover time; a
    lease seen for the first time counts as just renewed.
    """

    def __init__(
        self,
        leases: LeaseStore,
        worker_metrics: ItemTable,
        owner_index: OwnerIndex | None,
        *,
        taker_config: TakerConfig,
        metrics_config: WorkerMetricsConfig,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        clock_epoch_s: Callable[[], float] = time.time,
    ) -> None:
        self._leases = leases
        self._items = worker_metrics
        self._owner_index = owner_index
        self._taker_config = taker_config
        self._metrics_config = metrics_config
        self._clock_ns = clock_ns
        self._clock_epoch_s = clock_epoch_s
        self._observations: dict[str, LeaseObservation] = {}

    def reset(self) -> None:
        self._observations = {}

    def _load(self) -> tuple[list[Lease], list[ItemRecord]]:
        items = self._items
        if (
            isinstance(self._leases, SharedTableScan)
            and isinstance(items, SharesLeaseTable)
            and items.shares_lease_table
        ):
            leases, others = self._leases.list_leases_and_other_items()
            return leases, items.records_from(others)
        return self._leases.list_leases(), items.scan()

    def read(self) -> ReadinessInputs:
        status = None if self._owner_index is None else self._owner_index.owner_index_status()
        leases, records = self._load()
        now_epoch = self._clock_epoch_s()
        workers = classify_worker_records(records, now_epoch, self._metrics_config, table_name=self._items.table_name)
        unsupported = frozenset(
            worker.worker_id
            for worker in FeatureStore.workers_from(records, now_epoch)
            if 2 not in worker.range_of(LEASE_ASSIGNMENT)
        )
        now = self._clock_ns()
        self._observations = observe(self._observations, leases, now, "")
        expired = {
            key for key, observation in self._observations.items() if is_expired(observation, now, self._taker_config)
        }
        reporter_ms = self._metrics_config.reporter_frequency_ms
        fresh = frozenset(
            stats.worker_id
            for stats in (*workers.active, *workers.failing, *workers.invalid)
            if stats.lut > 0 and stats.is_active(now_epoch, reporter_ms)
        )
        return ReadinessInputs(status == "ACTIVE", live_lease_owners(leases, expired), fresh, unsupported)


# -- the shell ---------------------------------------------------------------------------------------------


class MigrationHost(Protocol):
    """The worker as the coordinator sees it."""

    worker_id: str

    def is_leader(self) -> bool:
        """Whether this worker leads in its current mode (deterministic leader in 2.x, lock leader in 3.x)."""
        ...

    def apply_migration_state(self, version: ClientVersion, behaviour: StateBehaviour) -> None:
        """Switch the worker's coordination to ``behaviour`` without dropping leases or pausing processing."""
        ...


class MigrationCoordinator:
    """One worker's migration state machine.

    :meth:`initialize` settles the start state (§4.1: read the item, create it or move it on conditionally,
    re-reading after a lost race) and applies its behaviour to the host. :meth:`start` then runs, on one
    daemon thread, the change watcher (:meth:`poll_once`: every ``client_version_poll_interval_ms``, the first
    after that plus a random 0 – ``client_version_poll_jitter_ms``) and the readiness monitor
    (:meth:`check_readiness_once`: every ``readiness_check_interval_ms`` in UPGRADE_FROM_2X, acting on the
    leader only). A worker that writes the flip applies it at once; the others follow within one poll.
    """

    def __init__(
        self,
        host: MigrationHost,
        store: MigrationStore,
        config: MigrationConfig,
        client_version_config: ClientVersionConfig,
        *,
        probe: ReadinessSource,
        metrics: MetricsSink | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if client_version_config not in CLIENT_VERSION_CONFIGS:
            raise ConfigurationError(
                f"client_version_config must be one of {', '.join(CLIENT_VERSION_CONFIGS)}, "
                f"got {client_version_config!r}"
            )
        self._host = host
        self._store = store
        self._config = config
        self._client_version_config = client_version_config
        self._probe = probe
        self._metrics: MetricsSink = metrics if metrics is not None else NullMetricsSink()
        self._clock_ns = clock_ns
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._stabilizer = Stabilizer(config.stabilization_period_ms, clock_ns)
        self._mutex = threading.RLock()
        self._version: ClientVersion | None = None
        self._state: MigrationState | None = None
        self._transition_failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state ---------------------------------------------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return self._host.worker_id

    @property
    def version(self) -> ClientVersion | None:
        """The client version this worker currently runs (``None`` before :meth:`initialize`)."""
        return self._version

    @property
    def state(self) -> MigrationState | None:
        """The ``Migration3.0`` item as last read or written by this worker."""
        return self._state

    @property
    def behaviour(self) -> StateBehaviour | None:
        return None if self._version is None else behaviour(self._version)

    @property
    def stabilizer(self) -> Stabilizer:
        return self._stabilizer

    # -- start-up ------------------------------------------------------------------------------------------

    def _read_for_start(self) -> MigrationState | None:
        for attempt in range(1, _READ_ATTEMPTS + 1):
            try:
                return self._store.read()
            except DependencyError as exc:
                if attempt == _READ_ATTEMPTS:
                    raise
                logger.warning(
                    "worker %s could not read the migration state (attempt %d of %d), retrying: %s",
                    self.worker_id,
                    attempt,
                    _READ_ATTEMPTS,
                    exc,
                )
                self._sleep(1.0 + self._rng.uniform(0.0, 0.1))
        raise AssertionError("unreachable")  # pragma: no cover

    def initialize(self) -> ClientVersion:
        """Settle the start state and apply it to the host; returns it. Infrastructure faults propagate (the
        worker retries its initialization); an unknown ``cv`` in the item is an :class:`InvalidStateError`."""
        with self._mutex:
            for _ in range(_SETTLE_ATTEMPTS):
                state = self._read_for_start()
                persisted = None if state is None else state.version
                if state is not None and persisted is None:
                    raise InvalidStateError(
                        f"the Migration3.0 item holds an unknown client version {state.client_version!r} "
                        f"(modified by {state.modified_by}); expected one of "
                        f"{', '.join(v.value for v in ClientVersion if v is not ClientVersion.INIT)}"
                    )
                target, write = initial_state(self._client_version_config, persisted)
                if write:
                    written = (
                        self._store.create(target, self.worker_id)
                        if state is None
                        else self._store.transition(state, target, self.worker_id)
                    )
                    if written is None:
                        logger.info(
                            "worker %s lost the race to write client version %s; re-reading the migration state",
                            self.worker_id,
                            target.value,
                        )
                        continue
                    logger.info(
                        "worker %s (client_version_config %s) wrote client version %s (was %s)",
                        self.worker_id,
                        self._client_version_config,
                        target.value,
                        "no Migration3.0 item" if state is None else state.client_version,
                    )
                    state = written
                self._state = state
                self._apply(target, initial=True)
                return target
            raise InvalidStateError(
                f"worker {self.worker_id} could not settle the client version: the Migration3.0 item changed "
                f"during {_SETTLE_ATTEMPTS} consecutive attempts; retry later"
            )

    def _apply(self, version: ClientVersion, *, initial: bool = False) -> None:
        previous = self._version
        chosen = behaviour(version)
        self._host.apply_migration_state(version, chosen)
        self._version = version
        if not chosen.readiness_monitor:
            self._stabilizer.reset()
            self._probe.reset()  # a later UPGRADE_FROM_2X judges lease expiry from scratch
        if initial:
            logger.info(
                "worker %s starts in client version %s (%s assignment, %s leader, worker metrics %s)",
                self.worker_id,
                version.value,
                chosen.assignment,
                chosen.leader_decider,
                "reported" if chosen.report_worker_metrics else "not reported",
            )
        else:
            logger.info(
                "worker %s switched from client version %s to %s (%s assignment, %s leader, worker metrics %s)",
                self.worker_id,
                None if previous is None else previous.value,
                version.value,
                chosen.assignment,
                chosen.leader_decider,
                "reported" if chosen.report_worker_metrics else "not reported",
            )
        self._emit_current_state()

    def _emit_current_state(self) -> None:
        version = self._version
        if version in (ClientVersion.V3X_WITH_ROLLBACK, ClientVersion.V3X):
            self._metrics.put(OPERATION, METRIC_3X_WORKER, 1)
        elif version in (ClientVersion.UPGRADE_FROM_2X, ClientVersion.V2X):
            self._metrics.put(OPERATION, METRIC_2X_WORKER, 1)

    # -- the watcher ---------------------------------------------------------------------------------------

    def _follow(self, state: MigrationState) -> None:
        """React to the item as just read: apply an expected change, log an unexpected one."""
        current = self._version
        new = state.version
        if new is None:
            logger.error(
                "worker %s: the Migration3.0 item holds an unknown client version %r (modified by %s); "
                "staying in %s and watching on",
                self.worker_id,
                state.client_version,
                state.modified_by,
                None if current is None else current.value,
            )
            return
        if new is current:
            self._state = state
            return
        if current is not None and not is_expected_transition(current, new):
            logger.error(
                "worker %s: unexpected client version change from %s to %s (modified by %s); staying in %s and "
                "watching on",
                self.worker_id,
                current.value,
                new.value,
                state.modified_by,
                current.value,
            )
            return
        logger.info(
            "worker %s: client version changed from %s to %s (modified by %s)",
            self.worker_id,
            None if current is None else current.value,
            new.value,
            state.modified_by,
        )
        self._state = state
        self._apply(new)

    def poll_once(self) -> ClientVersion | None:
        """One run of the change watcher: re-read the item and follow a change. Returns the version the worker
        runs afterwards. Infrastructure faults propagate (the loop logs them and polls again later)."""
        with self._mutex:
            chosen = self.behaviour
            if chosen is None or not chosen.watch:
                return self._version
            self._emit_current_state()
            state = self._store.read()
            if state is None:
                logger.error(
                    "worker %s: the Migration3.0 item has disappeared; staying in %s and watching on",
                    self.worker_id,
                    None if self._version is None else self._version.value,
                )
                return self._version
            self._follow(state)
            return self._version

    # -- the readiness monitor -----------------------------------------------------------------------------

    def check_readiness_once(self) -> ReadinessInputs | None:
        """One run of the readiness monitor. Acts only in UPGRADE_FROM_2X and on the leader (else it resets the
        stabilizer and returns None); emits ``GsiReadyStatus`` and ``WorkerMetricsReadyStatus``; once ready for
        the whole stabilization period, moves the item to 3X_WITH_ROLLBACK and switches this worker."""
        with self._mutex:
            self._transition_failed = False
            chosen = self.behaviour
            if chosen is None or not chosen.readiness_monitor:
                self._stabilizer.reset()
                return None
            if not self._host.is_leader():
                if self._stabilizer.ready_since_ns is not None:
                    logger.info("worker %s is no longer the leader: readiness stabilization restarts", self.worker_id)
                self._stabilizer.reset()
                self._probe.reset()
                return None
            inputs = self._probe.read()
            self._metrics.put(OPERATION, METRIC_GSI_READY, int(inputs.gsi_active))
            self._metrics.put(OPERATION, METRIC_WORKER_METRICS_READY, int(inputs.worker_metrics_ready))
            was_stabilizing = self._stabilizer.ready_since_ns is not None
            stable = self._stabilizer.update(inputs.ready)
            if not inputs.ready:
                logger.info(
                    "worker %s (leader): not ready for KCL 3.x yet: owner index %s; lease owners without fresh "
                    "worker metrics: %s; workers that do not support lease.assignment 2: %s",
                    self.worker_id,
                    "ACTIVE" if inputs.gsi_active else "not ACTIVE",
                    ", ".join(sorted(inputs.missing_metrics)) or "none",
                    ", ".join(sorted(inputs.unsupported_workers)) or "none",
                )
                return inputs
            if not was_stabilizing:
                logger.info(
                    "worker %s (leader): the fleet is ready for KCL 3.x; flipping after %d ms of stability",
                    self.worker_id,
                    self._config.stabilization_period_ms,
                )
            if stable:
                self._flip()
            return inputs

    def _flip(self) -> None:
        try:
            # Read afresh: the history written with the flip must be the item's, not a possibly older copy.
            state = self._store.read()
            if state is None or state.version is not ClientVersion.UPGRADE_FROM_2X:
                if state is not None:
                    self._follow(state)
                return
            features = self._store.items.get(FEATURES_KEY)
            holder = holds_assignment(None if features is None else features.attributes, state)
            if holder is not None:
                logger.info(
                    "worker %s (leader): the fleet is ready for KCL 3.x, but lease.assignment was finalized at 1 by %s "
                    "(shardwise features): not flipping; `shardwise features upgrade --feature lease.assignment=2` "
                    "does it",
                    self.worker_id,
                    holder,
                )
                return
            written = self._store.transition(state, ClientVersion.V3X_WITH_ROLLBACK, self.worker_id)
        except ShardwiseError as exc:
            self._metrics.put(OPERATION, METRIC_FAULT, 1)
            self._transition_failed = True
            logger.warning(
                "worker %s could not write client version %s, retrying: %s",
                self.worker_id,
                ClientVersion.V3X_WITH_ROLLBACK.value,
                exc,
            )
            return
        if written is None:
            logger.info(
                "worker %s: the migration state changed before the flip could be written; re-reading", self.worker_id
            )
            current = self._store.read()
            if current is not None:
                self._follow(current)
            return
        logger.info(
            "worker %s (leader): the fleet stayed ready for %d ms; client version %s -> %s",
            self.worker_id,
            self._config.stabilization_period_ms,
            state.client_version,
            written.client_version,
        )
        self._state = written
        self._apply(ClientVersion.V3X_WITH_ROLLBACK)

    # -- the thread ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """:meth:`initialize` if not done yet, then start the watcher/monitor thread (once)."""
        if self._version is None:
            self.initialize()
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"migration-{self.worker_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        config = self._config
        poll_ns = config.client_version_poll_interval_ms * _NS_PER_MS
        readiness_ns = config.readiness_check_interval_ms * _NS_PER_MS
        start = self._clock_ns()
        next_poll = start + poll_ns + int(self._rng.uniform(0, config.client_version_poll_jitter_ms) * _NS_PER_MS)
        next_readiness = start + readiness_ns
        while not self._stop.is_set():
            chosen = self.behaviour
            if chosen is None or (not chosen.watch and not chosen.readiness_monitor):
                logger.info(
                    "worker %s: client version %s is final; the migration watcher stops",
                    self.worker_id,
                    None if self._version is None else self._version.value,
                )
                return
            now = self._clock_ns()
            if chosen.watch and now >= next_poll:
                try:
                    self.poll_once()
                except Exception:
                    logger.exception("worker %s: the client version watcher failed; it polls again", self.worker_id)
                next_poll = self._clock_ns() + poll_ns
            chosen = self.behaviour
            if chosen is not None and chosen.readiness_monitor and now >= next_readiness:
                try:
                    self.check_readiness_once()
                except Exception:
                    logger.exception("worker %s: the readiness monitor failed; it runs again", self.worker_id)
                delay = _TRANSITION_RETRY_NS if self._transition_failed else readiness_ns
                next_readiness = self._clock_ns() + delay
            chosen = self.behaviour
            due = [next_poll] if chosen is not None and chosen.watch else []
            if chosen is not None and chosen.readiness_monitor:
                due.append(next_readiness)
            if not due:
                continue
            wait_ns = max(0, min(due) - self._clock_ns())
            self._stop.wait(wait_ns / 1e9)
