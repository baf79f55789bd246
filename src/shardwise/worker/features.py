"""Feature versions as one worker meets them: admission (every finalized level must be one it runs) and the
advertisement of its supported ranges on its worker record (``shardwise features`` reads them)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from shardwise.errors import ShardwiseError, UnsupportedFeatureVersionError
from shardwise.versions.feature_store import FeatureStore
from shardwise.versions.features import SupportedRange, first_unsupported
from shardwise.worker.config import WorkerConfig
from shardwise.worker.items import CoordinatorItems

__all__ = ["FeatureVersions", "Unsupported", "refused_at_start", "stopped_while_running"]

logger = logging.getLogger(__name__)

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


class FeatureVersions:
    """Reads the finalized levels and writes this worker's advertisement, through the application's items."""

    def __init__(self, config: WorkerConfig, items: CoordinatorItems, *, clock_epoch_s: Callable[[], float]) -> None:
        self._config = config
        self._items = items
        self._clock_epoch_s = clock_epoch_s
        self._store: FeatureStore | None = None
        #: The finalized levels as last read (0: not finalized); empty before the first read.
        self.finalized: dict[str, int] = {}
        #: Whether this worker has written its advertisement (its record is then withdrawn at a clean stop).
        self.advertising = False

    def store(self) -> FeatureStore:
        if self._store is None:
            tables = self._items.open()
            self._store = FeatureStore(
                tables.coordinator,
                tables.worker_metrics,
                clock_ms=lambda: int(self._clock_epoch_s() * 1000),
            )
        return self._store

    def first_unsupported(self, supported: Mapping[str, SupportedRange]) -> Unsupported | None:
        """The first finalized level outside ``supported``, with where it was finalized."""
        finalized = self.store().read(detect_layout_by_scan=False)
        self.finalized = dict(finalized.levels)
        problem = first_unsupported(finalized.levels, supported)
        if problem is None:
            return None
        return problem, finalized.sources.get(problem[0], "the features record")

    def advertise(self, supported: Mapping[str, SupportedRange]) -> None:
        """Write this worker's supported ranges on its worker record (never creates a table for it: after a
        rollback the legacy worker-metrics table is gone on purpose)."""
        store = self.store()
        if not store.worker_metrics.exists():
            return
        store.advertise(self._config.worker_id, supported, self._config.features.pinned_release, self._clock_epoch_s())
        self.advertising = True

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
