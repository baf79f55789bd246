"""The worker side of the KCL 2.x → 3.x client-version migration (kcl-protocol.md §4, §10.3).

A fleet moves from the 2.x generation (every worker takes leases by count) to the 3.x generation (a lock
leader assigns leases by measured load) — and back — without downtime, steered by the ``cv`` of the
``Migration3.0`` item (:mod:`shardwise.versions.migration_state`):

* ``CLIENT_VERSION_UPGRADE_FROM_2X`` — 2.x taking, but every worker reports its metrics and the owner index is
  being created; the leader watches for readiness and then writes ``3X_WITH_ROLLBACK``;
* ``CLIENT_VERSION_3X_WITH_ROLLBACK`` — 3.x coordination, still reversible by AWS's ``KclMigrationTool.py``;
* ``CLIENT_VERSION_2X`` — rolled back by the tool: 2.x taking, no metrics, until the tool rolls forward;
* ``CLIENT_VERSION_3X`` — final: 3.x coordination, nothing watched any more.

The pure parts (the state table, behaviours, transitions, the readiness decision, :class:`Stabilizer`) live in
:mod:`shardwise.versions.migration_rules` and are re-exported here. This module is the I/O shell:
:class:`ReadinessProbe` (one reading of the fleet) and :class:`MigrationCoordinator` (one per worker: the
initial state, the change watcher and the readiness monitor). The coordinator *returns* the
:class:`MigrationStep` the worker should run; the worker applies it and confirms — it never calls into the
worker, and the worker owns the thread that runs the watcher and the monitor on their cadence.

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
from collections.abc import Callable
from typing import Protocol

from shardwise.assignment.taker import LeaseObservation, TakerConfig, is_expired, observe
from shardwise.errors import ConfigurationError, DependencyError, InvalidStateError, ShardwiseError
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore, OwnerIndex, SharedTableScan
from shardwise.metrics.sink import MetricsSink, NullMetricsSink
from shardwise.tables.items import ItemRecord, ItemTable, SharesLeaseTable
from shardwise.versions.feature_store import FEATURES_KEY, FeatureStore, holds_assignment
from shardwise.versions.features import LEASE_ASSIGNMENT
from shardwise.versions.migration_rules import (
    CLIENT_VERSION_CONFIGS,
    METRIC_2X_WORKER,
    METRIC_3X_WORKER,
    METRIC_FAULT,
    METRIC_GSI_READY,
    METRIC_WORKER_METRICS_READY,
    OPERATION,
    ClientVersionConfig,
    MigrationConfig,
    MigrationStep,
    ReadinessInputs,
    Stabilizer,
    StateBehaviour,
    behaviour,
    initial_state,
    is_expected_transition,
    live_lease_owners,
)
from shardwise.versions.migration_state import ClientVersion, MigrationState, MigrationStore
from shardwise.worker_metrics import (
    WorkerMetricsConfig,
    classify_worker_records,
)

__all__ = [
    "TRANSITION_RETRY_NS",
    "MigrationCoordinator",
    "ReadinessProbe",
    "ReadinessSource",
]

logger = logging.getLogger(__name__)

#: Reads of the item at start-up before giving up to the worker's initialization retries (KCL ≤ 3.4: 10).
_READ_ATTEMPTS = 3
#: Create/transition attempts at start-up when other workers keep winning the conditional write.
_SETTLE_ATTEMPTS = 5
#: A failed transition write is retried after this long (KCL: every second).
TRANSITION_RETRY_NS = 1_000_000_000


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


class MigrationCoordinator:
    """One worker's migration state machine. It decides which client version the worker runs and *returns* it
    as a :class:`MigrationStep`; the worker applies the step and confirms it with :meth:`entered`.

    :meth:`initialize` settles the start state (§4.1: read the item, create it or move it on conditionally,
    re-reading after a lost race). The worker's migration thread then runs the change watcher
    (:meth:`poll_once`: every ``client_version_poll_interval_ms``, the first after that plus a random 0 –
    ``client_version_poll_jitter_ms``) and the readiness monitor (:meth:`check_readiness_once`: every
    ``readiness_check_interval_ms`` in UPGRADE_FROM_2X, acting on the leader only — ``is_leader`` tells it
    whether this worker leads in its current generation). A worker that writes the flip runs it at once; the
    others follow within one poll.
    """

    def __init__(
        self,
        worker_id: str,
        store: MigrationStore,
        config: MigrationConfig,
        client_version_config: ClientVersionConfig,
        *,
        is_leader: Callable[[], bool],
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
        self._worker_id = worker_id
        self._is_leader = is_leader
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
        self._readiness: ReadinessInputs | None = None
        self._transition_failed = False

    # -- state ---------------------------------------------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def config(self) -> MigrationConfig:
        return self._config

    @property
    def version(self) -> ClientVersion | None:
        """The client version this worker currently runs (``None`` before its first step is :meth:`entered`)."""
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

    @property
    def last_readiness(self) -> ReadinessInputs | None:
        """The fleet as the last :meth:`check_readiness_once` read it (``None``: that run did not read it)."""
        return self._readiness

    @property
    def transition_failed(self) -> bool:
        """Whether the last readiness check failed to write the flip (the monitor then runs again after 1 s)."""
        return self._transition_failed

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

    def initialize(self) -> MigrationStep:
        """Settle the start state and return it for the worker to run (then :meth:`entered`). Infrastructure
        faults propagate (the worker retries its initialization); an unknown ``cv`` in the item is an
        :class:`InvalidStateError`."""
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
                return MigrationStep.to(target, initial=True)
            raise InvalidStateError(
                f"worker {self.worker_id} could not settle the client version: the Migration3.0 item changed "
                f"during {_SETTLE_ATTEMPTS} consecutive attempts; retry later"
            )

    def entered(self, step: MigrationStep) -> None:
        """The worker runs ``step`` now: from here on the watcher and the monitor act for its version."""
        with self._mutex:
            previous = self._version
            version = step.version
            chosen = step.behaviour
            self._version = version
            if not chosen.readiness_monitor:
                self._stabilizer.reset()
                self._probe.reset()  # a later UPGRADE_FROM_2X judges lease expiry from scratch
            if step.initial:
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

    def _follow(self, state: MigrationState) -> MigrationStep | None:
        """React to the item as just read: return an expected change to run, log an unexpected one."""
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
            return None
        if new is current:
            self._state = state
            return None
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
            return None
        logger.info(
            "worker %s: client version changed from %s to %s (modified by %s)",
            self.worker_id,
            None if current is None else current.value,
            new.value,
            state.modified_by,
        )
        self._state = state
        return MigrationStep.to(new)

    def poll_once(self) -> MigrationStep | None:
        """One run of the change watcher: re-read the item; returns the change the worker should run, if it
        follows one. Infrastructure faults propagate (the worker's thread logs them and polls again later)."""
        with self._mutex:
            chosen = self.behaviour
            if chosen is None or not chosen.watch:
                return None
            self._emit_current_state()
            state = self._store.read()
            if state is None:
                logger.error(
                    "worker %s: the Migration3.0 item has disappeared; staying in %s and watching on",
                    self.worker_id,
                    None if self._version is None else self._version.value,
                )
                return None
            return self._follow(state)

    # -- the readiness monitor -----------------------------------------------------------------------------

    def check_readiness_once(self) -> MigrationStep | None:
        """One run of the readiness monitor. Acts only in UPGRADE_FROM_2X and on the leader (else it resets the
        stabilizer and reads nothing: :attr:`last_readiness` is None); emits ``GsiReadyStatus`` and
        ``WorkerMetricsReadyStatus``; once ready for the whole stabilization period, moves the item to
        3X_WITH_ROLLBACK and returns that step (or the change it found instead) for this worker to run."""
        with self._mutex:
            self._transition_failed = False
            self._readiness = None
            chosen = self.behaviour
            if chosen is None or not chosen.readiness_monitor:
                self._stabilizer.reset()
                return None
            if not self._is_leader():
                if self._stabilizer.ready_since_ns is not None:
                    logger.info("worker %s is no longer the leader: readiness stabilization restarts", self.worker_id)
                self._stabilizer.reset()
                self._probe.reset()
                return None
            inputs = self._probe.read()
            self._readiness = inputs
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
                return None
            if not was_stabilizing:
                logger.info(
                    "worker %s (leader): the fleet is ready for KCL 3.x; flipping after %d ms of stability",
                    self.worker_id,
                    self._config.stabilization_period_ms,
                )
            return self._flip() if stable else None

    def _flip(self) -> MigrationStep | None:
        try:
            # Read afresh: the history written with the flip must be the item's, not a possibly older copy.
            state = self._store.read()
            if state is None or state.version is not ClientVersion.UPGRADE_FROM_2X:
                return None if state is None else self._follow(state)
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
                return None
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
            return None
        if written is None:
            logger.info(
                "worker %s: the migration state changed before the flip could be written; re-reading", self.worker_id
            )
            current = self._store.read()
            return None if current is None else self._follow(current)
        logger.info(
            "worker %s (leader): the fleet stayed ready for %d ms; client version %s -> %s",
            self.worker_id,
            self._config.stabilization_period_ms,
            state.client_version,
            written.client_version,
        )
        self._state = written
        return MigrationStep.to(ClientVersion.V3X_WITH_ROLLBACK)
