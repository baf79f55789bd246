"""The pure parts of the KCL 2.x → 3.x client-version migration (kcl-protocol.md §4, §10.3).

:func:`initial_state` (KCL's table of §4.1 for our two configurations), :func:`behaviour` (§4.2), the step the
worker is told to run (:class:`MigrationStep`), :func:`is_expected_transition` (§4.4), the readiness decision
(:class:`ReadinessInputs`, :func:`live_lease_owners`) and :class:`Stabilizer`; with the timings
(:class:`MigrationConfig`) and KCL's metric names (§9). No I/O here: the shell that reads and writes the
``Migration3.0`` item and reads the fleet is :mod:`shardwise.versions.migration`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from shardwise.errors import ConfigurationError, InvalidStateError
from shardwise.leases.model import Lease
from shardwise.versions.migration_state import ClientVersion

__all__ = [
    "CLIENT_VERSION_CONFIGS",
    "METRIC_2X_WORKER",
    "METRIC_3X_WORKER",
    "METRIC_FAULT",
    "METRIC_GSI_READY",
    "METRIC_WORKER_METRICS_READY",
    "OPERATION",
    "ClientVersionConfig",
    "MigrationConfig",
    "MigrationStep",
    "ReadinessInputs",
    "Stabilizer",
    "StateBehaviour",
    "behaviour",
    "initial_state",
    "is_expected_transition",
    "live_lease_owners",
]

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


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """A client version for the worker to run, as the :class:`~shardwise.versions.migration.MigrationCoordinator`
    returns it (at start, from the change watcher, from the leader's flip).

    The coordinator never switches the worker itself: the worker applies ``behaviour`` (its coordination
    generation, worker-metrics reporting, the owner index) and then confirms with ``entered``. Until then the
    coordinator keeps running the previous version, so a step that fails to apply comes back at the next poll.
    ``initial``: the start state (logged as such).
    """

    version: ClientVersion
    behaviour: StateBehaviour
    initial: bool = False

    @classmethod
    def to(cls, version: ClientVersion, *, initial: bool = False) -> MigrationStep:
        return cls(version, behaviour(version), initial)


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
