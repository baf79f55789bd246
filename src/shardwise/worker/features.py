"""Feature versions as one worker meets them: admission (every finalized level must be one it runs) and the
advertisement of its supported ranges on its worker record (``shardwise features`` reads them).

**What the running check reads.** Admission at start reads the features record and ``Migration3.0`` with two
strongly consistent GetItems. After that the check runs on every worker-metrics tick
(``worker_metrics.reporter_frequency_ms``, 30 s) but costs no read of its own where it can:

* in the single-table layout, a worker whose lease store completed a scan of the lease table since the last
  tick (the 2.x taker every ``2 × failover_time_ms``, the 3.x leader every assignment run, the shard-sync
  leader's audit) takes both items from that scan — they are in it (eventually consistent, like the scan);
* under a shardwise 3.x leader, the leader publishes the finalized levels it last read on the lock item
  (``shardwiseFinalizedFeatures``), which the others read anyway: a worker reads the two items (eventually
  consistently) only when that publication changes to something other than what it last read — so a steady
  fleet's workers read them never;
* otherwise (no leader that publishes, the legacy layout, a backend without shared scans) it reads the two
  items only every :data:`FALLBACK_TICKS`-th tick.

So a finalized level change or a ``Migration3.0`` change is noticed by a scanning worker within one tick plus
its scan interval (50 s at KCL's defaults), by a worker under a publishing leader within the leader's notice,
one lease duration (its next read of the lock) and one tick (about 100 s at the defaults), and by every worker
within ``FALLBACK_TICKS`` ticks (5 minutes at the defaults). (``Migration3.0`` changes that switch generations
are followed separately, by the migration state machine's own poll, when the worker runs under
``client_version_config``.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from shardwise.errors import ShardwiseError, UnsupportedFeatureVersionError
from shardwise.leases.store import LeaseStore, SharedTableScan
from shardwise.tables.items import SharesLeaseTable
from shardwise.versions.feature_store import FeatureStore, FinalizedFeatures, advertisement
from shardwise.versions.features import SupportedRange, first_unsupported
from shardwise.worker.config import WorkerConfig
from shardwise.worker.items import CoordinatorItems

__all__ = ["FALLBACK_TICKS", "FeatureVersions", "Unsupported", "refused_at_start", "stopped_while_running"]

logger = logging.getLogger(__name__)

#: A worker that has no scan of the lease table to read the items from reads them every this many ticks.
FALLBACK_TICKS = 10

#: A level this worker cannot run: (feature, finalized level, the worker's range), and where it was finalized.
Unsupported = tuple[tuple[str, int, SupportedRange], str]


def refused_at_start(problem: tuple[str, int, SupportedRange], source: str) -> UnsupportedFeatureVersionError:
    """Why a worker refuses to start on a finalized level it cannot run."""
    feature, level, supported = problem
    return UnsupportedFeatureVersionError(
        f"Unable to start because the worker does not support finalized version {level} of {feature}. "
        f"The worker wants a version between {supported.min_level} and {supported.max_level}, inclusive. "
        f"(finalized in {source}; run a shardwise release that supports it, or downgrade the feature with "
        "`shardwise features downgrade`)",
        feature,
        level,
        (supported.min_level, supported.max_level),
    )


def stopped_while_running(problem: tuple[str, int, SupportedRange], source: str) -> UnsupportedFeatureVersionError:
    """Why a running worker stops processing when the fleet finalizes a level it cannot run."""
    feature, level, supported = problem
    return UnsupportedFeatureVersionError(
        f"The worker stopped because the fleet finalized version {level} of {feature} ({source}), which it "
        f"does not support. The worker wants a version between {supported.min_level} and "
        f"{supported.max_level}, inclusive. Restart it on a release that supports the level.",
        feature,
        level,
        (supported.min_level, supported.max_level),
    )


def _raise(error: ShardwiseError) -> None:
    raise error


class FeatureVersions:
    """Reads the finalized levels and writes this worker's advertisement, through the application's items."""

    def __init__(
        self,
        config: WorkerConfig,
        items: CoordinatorItems,
        *,
        clock_epoch_s: Callable[[], float],
        lease_store: LeaseStore | None = None,
        published: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._config = config
        #: The finalized levels the current leader published (``None``: no leader that publishes).
        self._published = published
        #: The publication when the items were last read (a change of it is a reason to read them again).
        self._published_at_read: str | None = None
        self._items = items
        self._clock_epoch_s = clock_epoch_s
        self._lease_store = lease_store
        self._store: FeatureStore | None = None
        #: The lease store's count of complete scans when the check last used one (-1: never).
        self._scans_seen = -1
        #: Ticks since the items were last read (from a scan or by themselves).
        self._ticks_since_read = 0
        #: How the running check got the items, per source ("scan", "read"): for tests and logs.
        self.sources: dict[str, int] = {"scan": 0, "read": 0, "skipped": 0}
        #: The finalized levels as last read (0: not finalized); empty before the first read.
        self.finalized: dict[str, int] = {}
        #: Their :meth:`~shardwise.versions.feature_store.FinalizedFeatures.summary` (``None`` before the first
        #: read): what this worker publishes while it leads.
        self.summary: str | None = None
        #: Whether this worker has written its advertisement (its record is then withdrawn at a clean stop).
        self.advertising = False
        #: What stops the running worker on a level it cannot run (:meth:`enforce`); the worker sets it.
        self.on_unsupported: Callable[[ShardwiseError], None] = _raise

    def enforce(self, found: Unsupported | None, running: bool) -> bool:
        """Act on a level this worker cannot run (``found``): refuse to start (raises), or once running, stop the
        worker through :attr:`on_unsupported`. Returns whether there was one."""
        if found is None:
            return False
        if not running:
            raise refused_at_start(*found)
        self.on_unsupported(stopped_while_running(*found))
        return True

    def store(self) -> FeatureStore:
        if self._store is None:
            tables = self._items.open()
            self._store = FeatureStore(
                tables.coordinator,
                tables.worker_metrics,
                clock_ms=lambda: int(self._clock_epoch_s() * 1000),
            )
        return self._store

    def _from_scan(self, store: FeatureStore) -> FinalizedFeatures | None:
        """The finalized levels from a lease-table scan completed since the last use, if there is one."""
        lease_store: object = self._lease_store
        coordinator = store.coordinator
        if not (
            isinstance(lease_store, SharedTableScan)
            and isinstance(coordinator, SharesLeaseTable)
            and coordinator.shares_lease_table
        ):
            return None
        scans, others = lease_store.last_scan_others()
        if scans <= self._scans_seen or scans == 0:
            return None
        self._scans_seen = scans
        return store.read_from(coordinator.records_from(others))

    def first_unsupported(
        self, supported: Mapping[str, SupportedRange], *, running: bool = False
    ) -> Unsupported | None:
        """The first finalized level outside ``supported``, with where it was finalized. At start (``running``
        false) the items are read strongly consistently; a running check reads them as the module says (and
        returns ``None`` on a tick that has nothing new to look at)."""
        store = self.store()
        finalized = self._from_scan(store) if running else None
        published = self._published() if running else None
        if finalized is not None:
            self.sources["scan"] += 1
        elif running and not self._read_due(published):
            self._ticks_since_read += 1
            self.sources["skipped"] += 1
            return None
        else:
            # The running check reads eventually consistently (half the read units): a level finalized a second
            # ago is noticed at the next check; admission at start reads consistently.
            finalized = store.read(detect_layout_by_scan=False, consistent=not running)
            self.sources["read"] += 1
            self._published_at_read = published
        self._ticks_since_read = 0
        self.finalized = dict(finalized.levels)
        self.summary = finalized.summary()
        problem = first_unsupported(finalized.levels, supported)
        if problem is None:
            return None
        return problem, finalized.sources.get(problem[0], "the features record")

    def _read_due(self, published: str | None) -> bool:
        """Whether a running check without a scan reads the items: under a leader that publishes, when its
        publication changed since the last read and differs from what this worker last read; else every
        :data:`FALLBACK_TICKS`-th tick."""
        if published is None:
            return self._ticks_since_read + 1 >= FALLBACK_TICKS
        if published == self.summary:
            self._published_at_read = published  # nothing new: this worker already runs on these levels
        return published != self._published_at_read

    def advertise(self, supported: Mapping[str, SupportedRange]) -> None:
        """Write this worker's supported ranges on its worker record (never creates a table for it: after a
        rollback the legacy worker-metrics table is gone on purpose). A worker that reports its metrics sends
        :meth:`advertisement` with its report instead (one write, no table check)."""
        store = self.store()
        if not store.worker_metrics.exists():
            return
        store.advertise(self._config.worker_id, supported, self._config.features.pinned_release, self._clock_epoch_s())
        self.advertising = True

    def advertisement(self, supported: Mapping[str, SupportedRange]) -> dict[str, Any]:
        """The advertisement's attributes, for a metrics report to carry (the worker now counts as advertising)."""
        self.advertising = True
        return advertisement(supported, self._config.features.pinned_release, self._clock_epoch_s())

    def withdraw(self, *, reported: bool) -> None:
        """At a clean stop, delete this worker's record (metrics and advertisement): a leader that still saw it
        as active would assign it the leases it just released, and they would sit until their grace expired."""
        tables = self._items.tables
        if tables is None or not (self.advertising or reported):
            return
        try:
            tables.worker_metrics.delete(self._config.worker_id)
        except ShardwiseError as exc:
            logger.warning("worker %s: could not delete its worker record: %s", self._config.worker_id, exc)
