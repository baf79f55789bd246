"""The two generations of lease coordination, as objects with one interface (:class:`Generation`).

* :class:`LeaseCountGeneration` — ``lease-count-2x`` (KCL 2.x): every worker scans and **takes** leases
  (lease-count target, stealing) with its :class:`~shardwise.leasing.taker.LeaseTaker`; shard sync runs on the
  deterministic leader.
* :class:`UtilizationGeneration` — ``utilization-3x`` (KCL 3.x): one **leader** (DynamoDB-lock compatible
  ``Leader`` item) assigns leases by measured load (CPU when available, else throughput) with graceful
  handoffs; the others **discover** their leases through the owner index; every worker reports its metrics.
  Its parts (leader lock, assignment manager, discoverer, owner index) are opened once, on first use.

The worker's loops call the current generation on every run (:meth:`Generation.take`, :meth:`Generation.assign`,
:meth:`Generation.discover`, :meth:`Generation.leads_shard_sync`); what a generation does not do is a no-op.
A switch is a swap of objects between two runs (:meth:`Generation.leave` the old one, :meth:`Generation.enter`
the new one): held leases and running consumers are untouched and no lease moves. Entering 3.x holds
rebalancing for the first leader term until the whole fleet has had time to switch; entering 2.x starts the
taker's observations afresh, so nothing looks expired.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from shardwise.errors import ConfigurationError, DependencyError, InvalidStateError, ShardwiseError
from shardwise.leadership.deterministic import DeterministicShuffleLeaderDecider
from shardwise.leadership.lock import ATTR_FINALIZED_FEATURES, ATTR_MALFORMED_LEASES, ATTR_PUBLISHED_BY, LeaderLock
from shardwise.leases.model import RESERVED_KEYS, Lease
from shardwise.leases.store import AssignmentSignals, LeaseStore, OwnerIndex, SharedTableScan
from shardwise.leasing.assigner import AssignmentRun, LeaseAssignmentManager
from shardwise.leasing.discoverer import LeaseDiscoverer
from shardwise.leasing.renewer import LeaseRenewer
from shardwise.leasing.taker import LeaseTaker
from shardwise.metrics.sink import MetricsSink
from shardwise.worker.config import AssignmentMode, WorkerConfig
from shardwise.worker.items import CoordinatorItems

__all__ = [
    "GENERATIONS",
    "Generation",
    "GenerationContext",
    "LeaseCountGeneration",
    "UtilizationGeneration",
    "request_owner_index",
    "wait_for_owner_index",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenerationContext:
    """What a generation shares with its worker."""

    config: WorkerConfig
    store: LeaseStore
    renewer: LeaseRenewer
    items: CoordinatorItems
    metrics: MetricsSink
    clock_ns: Callable[[], int]
    clock_epoch_s: Callable[[], float]
    rng: random.Random
    #: Whether the worker is shutting down (no leadership taken, no owner-index wait continued).
    stopping: Callable[[], bool]
    #: The finalized feature levels this worker last read, summarized (``None`` before): a leader publishes them.
    finalized_features: Callable[[], str | None] = lambda: None

    @property
    def worker_id(self) -> str:
        return self.config.worker_id


class Generation(Protocol):
    """One generation of lease coordination: what the worker's loops run while it is current."""

    @property
    def mode(self) -> AssignmentMode:
        """The ``WorkerConfig.assignment`` value naming this generation."""
        ...

    @property
    def reports_worker_metrics(self) -> bool:
        """Whether a worker in this generation writes its worker-metrics item (and so may advertise its feature
        ranges on it), unless the migration state says otherwise."""
        ...

    def open(self) -> None:
        """Open what the generation needs (once; may wait, e.g. for the owner index). Called before the first
        :meth:`enter` or switch, outside the worker's coordination lock."""
        ...

    def enter(self, *, rebalance_hold_until_ns: int | None) -> None:
        """Become the current generation (at a switch, between two loop runs). ``rebalance_hold_until_ns``: the
        first leader term assigns only expired or unassigned leases until then (``None``: no hold)."""
        ...

    def leave(self) -> None:
        """Stop being the current generation (at a switch): give up what only it may hold."""
        ...

    def stop(self) -> None:
        """The worker stops: give up what this generation holds, whether current or not."""
        ...

    def take(self) -> list[Lease]:
        """One run of the taker loop: the leases taken (to start consumers for)."""
        ...

    def assign(self) -> AssignmentRun | None:
        """One run of the assigner loop: keep (or give up, when stopping) the leadership; the leader's
        assignment pass (``None``: not the leader, or nothing to assign in this generation)."""
        ...

    def discover(self) -> list[Lease]:
        """One run of the discoverer loop: leases newly assigned to this worker."""
        ...

    def acquisition_stamps(self) -> Mapping[str, int]:
        """For each lease the latest take or discovery brought: the monotonic ns read right before the write that
        made it this worker's (the take, or the discovery's renewal) — where its local expiry starts."""
        ...

    def discovery_interval_s(self) -> float:
        """The delay before the discoverer loop's next run."""
        ...

    def is_leader(self) -> bool:
        """Whether this worker currently leads in this generation (cheap: no store call in 3.x)."""
        ...

    def leads_shard_sync(self) -> bool:
        """Whether this worker is the leader that runs shard sync now (may touch the store)."""
        ...

    def recent_leases(self) -> tuple[int, list[Lease]] | None:
        """The lease table as the generation last scanned it: (monotonic ns, leases), if it did."""
        ...

    def needs_own_malformed_scan(self) -> bool:
        """Whether this worker must scan the lease table itself to report malformed lease items when it has not
        scanned it for another reason since the last report (see :mod:`shardwise.leasing.bad_items`)."""
        ...

    def published_features(self) -> str | None:
        """The finalized feature levels another worker leading this generation published, as this worker last
        read the lock (``None``: no such leader; see :mod:`shardwise.worker.features`). No store call."""
        ...


class LeaseCountGeneration:
    """KCL 2.x: every worker takes leases by count; the deterministic leader runs shard sync."""

    mode: AssignmentMode = "lease-count-2x"
    reports_worker_metrics = False

    def __init__(self, context: GenerationContext) -> None:
        self._context = context
        self.taker = self._new_taker()
        self.leader = DeterministicShuffleLeaderDecider(context.store, context.worker_id)

    def _new_taker(self) -> LeaseTaker:
        context = self._context
        return LeaseTaker(
            context.store, context.worker_id, context.config.leases, clock_ns=context.clock_ns, rng=context.rng
        )

    def open(self) -> None:
        """Nothing to open: the lease table is all the 2.x generation uses."""

    def enter(self, *, rebalance_hold_until_ns: int | None) -> None:
        # A fresh taker: a lease first seen owned counts as just renewed, so nothing looks expired after a switch.
        self.taker = self._new_taker()

    def leave(self) -> None:
        """The deterministic leader holds nothing."""

    def stop(self) -> None:
        """Nothing held."""

    def take(self) -> list[Lease]:
        taker = self.taker
        taken = taker.take_leases()
        metrics = taker.last_metrics
        if metrics is not None:
            for name, value in metrics.as_dict().items():
                self._context.metrics.put("TakeLeases", name, value)
        return taken

    def assign(self) -> AssignmentRun | None:
        return None

    def discover(self) -> list[Lease]:
        return []

    def acquisition_stamps(self) -> Mapping[str, int]:
        return self.taker.last_take_stamps

    def discovery_interval_s(self) -> float:
        return self._context.config.lease_discovery_interval_ms / 1000

    def is_leader(self) -> bool:
        return self.leader.is_leader()

    def leads_shard_sync(self) -> bool:
        return self.leader.is_leader()

    def recent_leases(self) -> tuple[int, list[Lease]] | None:
        return self.taker.last_scan

    def needs_own_malformed_scan(self) -> bool:
        return True  # the taker scans every run; only a worker whose taker could not scan gets here

    def published_features(self) -> str | None:
        return None


def check_worker_id_for_single_table(worker_id: str) -> None:
    if worker_id.startswith("shardId-") or worker_id in RESERVED_KEYS:
        raise ConfigurationError(
            f"worker id {worker_id!r} cannot be used with KCL 3.x coordination: worker-metrics items "
            "share the lease table's keys, so a worker id must not look like a shard id or equal "
            f"{', '.join(sorted(RESERVED_KEYS))}; choose another --worker-id"
        )


class UtilizationGeneration:
    """KCL 3.x: the lock leader assigns leases by load, every worker discovers its own through the owner index.

    Constructing it checks that the worker id can share the lease table's keys (worker-metrics items live there
    in the single-table layout); :meth:`open` opens the coordinator items, waits for the owner index and builds
    the leader lock, the assignment manager and the discoverer — once, however often the worker switches.
    """

    mode: AssignmentMode = "utilization-3x"
    reports_worker_metrics = True

    def __init__(self, context: GenerationContext) -> None:
        check_worker_id_for_single_table(context.worker_id)
        self._context = context
        self._open_lock = threading.Lock()
        self.lock: LeaderLock | None = None
        self.assigner: LeaseAssignmentManager | None = None
        self.discoverer: LeaseDiscoverer | None = None
        self._was_leader = False
        self._rebalance_hold_until_ns: int | None = None
        self._discovery_interval_ms = context.config.lease_discovery_interval_ms
        #: The leader's own leases as its latest assignment run left them, until a discovery run uses them.
        self._leader_keys: list[str] | None = None
        #: Signalled discovery: the store's signal count at the last owner-index query, and when (monotonic ns)
        #: the next query is due even without a signal.
        self._signals_at_query: int | None = None
        self._last_query_ns = 0
        self._next_unsignalled_query_ns = 0

    @property
    def opened(self) -> bool:
        return self.assigner is not None

    def open(self) -> None:
        with self._open_lock:
            if self.assigner is not None:
                return
            self._open()

    def _open(self) -> None:
        context = self._context
        config = context.config
        store = context.store
        tables = context.items.open()
        # Legacy layout: KCL 3.0-3.4 creates <app>-CoordinatorState and <app>-WorkerMetricStats when it starts in
        # 3.x (no-ops in the single-table layout, where the items live in the lease table).
        tables.coordinator.create_if_not_exists()
        tables.worker_metrics.create_if_not_exists()
        coordination = config.coordination
        if not isinstance(store, OwnerIndex):
            raise ConfigurationError(f"{type(store).__name__} has no owner index; KCL 3.x needs one")
        wait_for_owner_index(store, config, clock_ns=context.clock_ns, stopping=context.stopping)
        self.lock = LeaderLock(
            tables.coordinator,
            context.worker_id,
            lease_duration_ms=coordination.leader_lease_duration_ms,
            heartbeat_period_ms=coordination.leader_heartbeat_period_ms,
            published=self._publications,
        )
        self.assigner = LeaseAssignmentManager(
            store,
            tables.worker_metrics,
            config=config.utilization,
            failover_time_ms=config.leases.failover_time_ms,
            strategy=coordination.strategy,
            metrics_config=config.worker_metrics,
            metrics=context.metrics,
            clock_ns=context.clock_ns,
            clock_epoch_s=context.clock_epoch_s,
            rng=context.rng,
            discovery_interval_ms=max(
                config.lease_discovery_interval_ms, coordination.max_lease_discovery_interval_ms or 0
            ),
        )
        renewer = context.renewer
        self.discoverer = LeaseDiscoverer(
            store, store, context.worker_id, lambda: set(renewer.held()), clock_ns=context.clock_ns
        )

    def enter(self, *, rebalance_hold_until_ns: int | None) -> None:
        self._was_leader = False
        if rebalance_hold_until_ns is not None:
            self._rebalance_hold_until_ns = rebalance_hold_until_ns
        self._discovery_interval_ms = self._context.config.lease_discovery_interval_ms

    def leave(self) -> None:
        self._was_leader = False
        lock = self.lock
        if lock is not None and lock.holds_lock():
            try:
                lock.release()
            except ShardwiseError as exc:
                logger.warning("could not release the leader lock; it expires after its lease duration: %s", exc)

    def stop(self) -> None:
        lock = self.lock
        if lock is not None and lock.holds_lock():
            try:
                lock.release()
            except Exception:
                logger.warning("could not release the leader lock; it expires after its lease duration")

    def take(self) -> list[Lease]:
        return []

    def assign(self) -> AssignmentRun | None:
        lock, assigner = self.lock, self.assigner
        if lock is None or assigner is None:
            return None
        context = self._context
        leader = not context.stopping() and lock.is_leader()
        if leader and not self._was_leader:
            logger.info("worker %s is the leader now", context.worker_id)
            hold = self._rebalance_hold_until_ns
            self._rebalance_hold_until_ns = None
            if hold is not None:
                logger.info(
                    "worker %s: first leader term after the switch to KCL 3.x: only expired or unassigned leases "
                    "are assigned for %d ms (no rebalancing)",
                    context.worker_id,
                    max(0, hold - context.clock_ns()) // 1_000_000,
                )
            assigner.reset(skip_rebalance_until_ns=hold)
        self._was_leader = leader
        if not leader:
            self._leader_keys = None
            return None
        run = assigner.run_once()
        self._leader_keys = _owned_after(assigner.last_leases, run, context.worker_id)
        self._signal(run)
        return run

    def _signal(self, run: AssignmentRun) -> None:
        """Tell every other worker that this run gave leases to, on a lease it holds (see
        :class:`~shardwise.leases.store.AssignmentSignals`); a worker holding none polls on its own."""
        store, scanned = self._context.store, self.assigner.last_leases if self.assigner else None
        if not isinstance(store, AssignmentSignals) or scanned is None:
            return
        applied = set(run.applied)
        targets = {m.to_worker for m in run.decision.moves if m.lease_key in applied} - {self._context.worker_id}
        for target in sorted(targets):
            held = [
                lease
                for lease in scanned[1]
                if lease.lease_owner == target and lease.checkpoint_owner is None and lease.lease_key not in applied
            ]
            if not held:
                continue
            try:
                store.signal_assignment(held[0])
            except ShardwiseError as exc:  # the worker's next unsignalled query finds the lease
                logger.warning("could not signal new leases to %s on %s: %s", target, held[0].lease_key, exc)

    def _publications(self) -> dict[str, str]:
        """What this worker writes on the lock item while it leads (see :mod:`shardwise.leadership.lock`)."""
        published = {ATTR_PUBLISHED_BY: self._context.worker_id}
        store = self._context.store
        if isinstance(store, SharedTableScan):
            number, malformed = store.last_scan_malformed()
            if number:
                published[ATTR_MALFORMED_LEASES] = str(len(malformed))
        features = self._context.finalized_features()
        if features is not None:
            published[ATTR_FINALIZED_FEATURES] = features
        return published

    def published_features(self) -> str | None:
        lock = self.lock
        seen = None if lock is None else lock.last_seen()
        if seen is None or not seen.from_shardwise_leader or seen.owner_name == self._context.worker_id:
            return None
        return seen.finalized_features

    def _signalled(self) -> bool:
        """Whether this worker (not leading) learns of new leases from signals, not by polling the owner index."""
        lock = self.lock
        seen = None if lock is None else lock.last_seen()
        return (
            isinstance(self._context.store, AssignmentSignals)
            and seen is not None
            and seen.from_shardwise_leader
            and seen.owner_name != self._context.worker_id
        )

    def _query_due(self, signalled: bool) -> bool:
        """Whether a worker that does not lead queries the owner index in this discovery run: always when polling;
        when signalled, at once if a signal arrived since the last query, else once the unsignalled interval
        (five polling ceilings) has passed — or KCL's interval, while it holds no lease or the last query left
        leases it could not take yet (a handoff under way)."""
        context = self._context
        store = context.store
        if not signalled or not isinstance(store, AssignmentSignals):
            return True
        if store.assignment_signals_seen() != self._signals_at_query:
            return True
        now = context.clock_ns()
        if now >= self._next_unsignalled_query_ns:
            return True
        discoverer = self.discoverer
        waiting = not context.renewer.held() or (discoverer is not None and discoverer.waiting > 0)
        return waiting and now >= self._last_query_ns + context.config.lease_discovery_interval_ms * 1_000_000

    def needs_own_malformed_scan(self) -> bool:
        lock = self.lock
        if lock is None or lock.holds_lock():
            return True  # the leader's assignment runs scan; it gets here only if none did
        seen = lock.last_seen()
        if seen is None or not seen.from_shardwise_leader:
            return True  # no leader, or one that publishes nothing (a Java worker)
        # A shardwise leader that has not published a count yet has not scanned yet: it does once it runs, and its
        # heartbeats publish what it found, which this worker sees at its next read of the lock.
        return seen.malformed_leases is not None and seen.malformed_leases > 0

    def discover(self) -> list[Lease]:
        discoverer = self.discoverer
        if discoverer is None:
            return []
        context = self._context
        lock = self.lock
        signalled = self._signalled()
        if lock is not None and lock.holds_lock():
            # The leader assigns every lease itself, and its own scan shows which are its own: it queries the
            # owner index only for a worker that does not lead (saves a Query per interval on the leader).
            keys, self._leader_keys = self._leader_keys, None
            found = [] if keys is None else discoverer.discover(keys)
            context.metrics.put("LeaseDiscovery", "NewLeasesDiscovered", len(found))
        elif self._query_due(signalled):
            store = context.store
            self._signals_at_query = store.assignment_signals_seen() if isinstance(store, AssignmentSignals) else None
            found = discoverer.discover()
            self._last_query_ns = context.clock_ns()
            self._next_unsignalled_query_ns = self._last_query_ns + 5 * self._ceiling_ms() * 1_000_000
            context.metrics.put("LeaseDiscovery", "NewLeasesDiscovered", len(found))
        else:
            found = []  # signalled and nothing due: no query, nothing to report
        # KCL queries the owner index every ~10 s on every worker, which makes a small steady fleet read more
        # than the 2.x generation (KCL issue #1406). While nothing changes the interval doubles up to
        # coordination.max_lease_discovery_interval_ms; it drops back to KCL's whenever a lease arrives or the
        # worker holds none (a leader that assigns to itself wakes its own discoverer at once).
        # Signalled, a discovery run is a local check unless a query is due: it runs every renewal interval, so a
        # signal (returned by a renewal) is acted on within two renewal intervals.
        base = context.config.lease_discovery_interval_ms
        if signalled:
            self._discovery_interval_ms = min(base, context.config.leases.renewal_interval_ms)
        elif found or not context.renewer.held():
            self._discovery_interval_ms = base
        else:
            self._discovery_interval_ms = min(self._ceiling_ms(), self._discovery_interval_ms * 2)
        return found

    def _ceiling_ms(self) -> int:
        config = self._context.config
        base = config.lease_discovery_interval_ms
        return max(base, config.coordination.max_lease_discovery_interval_ms or base)

    def acquisition_stamps(self) -> Mapping[str, int]:
        discoverer = self.discoverer
        return {} if discoverer is None else discoverer.last_stamps

    def discovery_interval_s(self) -> float:
        return self._discovery_interval_ms / 1000

    def is_leader(self) -> bool:
        lock = self.lock
        return lock is not None and lock.holds_lock()

    def leads_shard_sync(self) -> bool:
        lock = self.lock
        return lock is not None and lock.is_leader()

    def recent_leases(self) -> tuple[int, list[Lease]] | None:
        assigner = self.assigner
        return None if assigner is None else assigner.last_leases


#: How the worker builds the generation a mode names.
GENERATIONS: dict[AssignmentMode, Callable[[GenerationContext], Generation]] = {
    "lease-count-2x": LeaseCountGeneration,
    "utilization-3x": UtilizationGeneration,
}


def _owned_after(scanned: tuple[int, list[Lease]] | None, run: AssignmentRun, worker_id: str) -> list[str] | None:
    """The keys of the leases ``worker_id`` owns once the assignment ``run`` (made on the ``scanned`` leases) has
    been applied: what the owner index would show the leader, without asking it."""
    if scanned is None:
        return None
    applied = set(run.applied)
    moved_to = {move.lease.lease_key: move.to_worker for move in run.decision.moves if move.lease.lease_key in applied}
    owners = {lease.lease_key: moved_to.get(lease.lease_key, lease.lease_owner) for lease in scanned[1]}
    return sorted(key for key, owner in owners.items() if owner == worker_id)


def request_owner_index(store: LeaseStore, worker_id: str) -> None:
    """Start creating the owner index if it does not exist, without waiting (UPGRADE_FROM_2X)."""
    if not isinstance(store, OwnerIndex):
        logger.warning(
            "worker %s: %s has no owner index; the fleet cannot move to KCL 3.x",
            worker_id,
            type(store).__name__,
        )
        return
    try:
        if store.owner_index_status() is None and store.create_owner_index():
            logger.info("worker %s started creating the owner index LeaseOwnerToLeaseKeyIndex", worker_id)
    except DependencyError as exc:
        logger.info("could not start creating the owner index (another worker may be creating it): %s", exc)


def wait_for_owner_index(
    index: OwnerIndex, config: WorkerConfig, *, clock_ns: Callable[[], int], stopping: Callable[[], bool]
) -> None:
    """Create the owner index if nobody has yet, and wait until it is ACTIVE. Several workers start at
    once: a failed create is retried after re-reading the status (another worker may be creating it)."""
    timeout_ms = config.coordination.owner_index_timeout_ms
    deadline = clock_ns() + timeout_ms * 1_000_000
    while (status := index.owner_index_status()) != "ACTIVE":
        if status is None:
            try:
                index.create_owner_index()
                continue
            except DependencyError as exc:
                logger.info("could not create the owner index (another worker may be creating it): %s", exc)
        if clock_ns() > deadline or stopping():
            raise InvalidStateError(
                f"the owner index LeaseOwnerToLeaseKeyIndex is {status} after "
                f"{timeout_ms} ms; retry later or raise "
                "coordination.owner_index_timeout_ms"
            )
        time.sleep(1.0)
