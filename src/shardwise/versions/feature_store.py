"""Where feature versions live (the I/O half of :mod:`shardwise.versions.features`).

* **Finalized levels + epoch**: one item, ``ShardwiseFeatures``, in the application's coordinator namespace
  (single-table: in the lease table with ``entityType = SHARDWISE_FEATURES``, which KCL 3.5 skips when it scans
  leases; legacy: in ``<app>-CoordinatorState``). Attributes: ``epoch`` (N, +1 per change), ``levels``
  (M: feature → level, non-zero only), ``mb``/``mts`` (modified by / at, epoch ms) and ``h`` — the history,
  newest first, at most :data:`HISTORY_LIMIT` maps ``{epoch, mb, mts, ch: {feature: [from, to]}}``.
  Every change is a conditional write on the epoch that was read, so of concurrent writers exactly one wins
  each epoch.
* ``lease.assignment`` and ``lease.discovery`` are *reflected* from KCL's ``Migration3.0`` item when it exists
  (:func:`~shardwise.versions.features.levels_from_client_version`): a change of them is written to both
  items in one transaction (conditional on the epoch **and** on the ``cv``/``mts`` read), and a change made by
  the KCL side (the automatic flip, ``KclMigrationTool.py``, ``shardwise migrate``) shows in the levels at once.
  ``table.layout`` is the layout the coordinator items are in, once there are any.
* **Supported ranges**: each worker advertises its ranges on its worker record — the worker-metrics item — as
  ``swf`` (M: feature → [min, max]), ``swr`` (its release) and ``swts`` (epoch seconds of the advertisement),
  so one scan reads the whole fleet's ranges. KCL ignores attributes it does not know; a worker-metrics item
  with only these attributes has no ``lut`` and is ignored by KCL's leader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shardwise.errors import MalformedItemError
from shardwise.tables.items import ItemRecord, ItemTable, ItemWrite, Layout
from shardwise.versions.features import (
    LEASE_ASSIGNMENT,
    LEASE_DISCOVERY,
    REGISTRY,
    TABLE_LAYOUT,
    SupportedRange,
    WorkerSupport,
    client_version_for,
    levels_from_client_version,
)
from shardwise.versions.migration_state import (
    HISTORY_LIMIT as MIGRATION_HISTORY_LIMIT,
)
from shardwise.versions.migration_state import (
    MIGRATION_KEY,
    ClientVersion,
    HistoryEntry,
    MigrationState,
)

__all__ = [
    "ADVERTISED_AT",
    "ADVERTISED_RANGES",
    "ADVERTISED_RELEASE",
    "DEFAULT_ACTIVE_WINDOW_S",
    "FEATURES_KEY",
    "HISTORY_LIMIT",
    "MODIFIED_BY_FEATURES",
    "FeatureChange",
    "FeatureRecord",
    "FeatureStore",
    "FinalizedFeatures",
    "advertisement",
    "holds_assignment",
    "parse_advertisement",
]

logger = logging.getLogger(__name__)

FEATURES_KEY = "ShardwiseFeatures"
HISTORY_LIMIT = 100
#: ``mb`` of the ``Migration3.0`` changes made through ``shardwise features``.
MODIFIED_BY_FEATURES = "shardwise-features"
ADVERTISED_RANGES = "swf"
ADVERTISED_RELEASE = "swr"
ADVERTISED_AT = "swts"
#: A worker is live while its advertisement is at most this old (2 × KCL's 30 s reporter period).
DEFAULT_ACTIVE_WINDOW_S = 60.0

_LAYOUT_LEVEL: Mapping[str, int] = {"legacy": 1, "single-table": 2}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class FeatureChange:
    """One applied change: the epoch it produced, who and when (epoch ms), and feature → (from, to)."""

    epoch: int
    modified_by: str
    modified_at_ms: int
    changes: Mapping[str, tuple[int, int]]

    def to_attribute(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "mb": self.modified_by,
            "mts": self.modified_at_ms,
            "ch": {name: [old, new] for name, (old, new) in sorted(self.changes.items())},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "modified_by": self.modified_by,
            "modified_at_ms": self.modified_at_ms,
            "changes": {name: {"from": old, "to": new} for name, (old, new) in sorted(self.changes.items())},
        }


@dataclass(frozen=True, slots=True)
class FeatureRecord:
    epoch: int
    levels: Mapping[str, int]
    modified_by: str
    modified_at_ms: int
    history: tuple[FeatureChange, ...] = ()

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> FeatureRecord:
        def bad(problem: str) -> MalformedItemError:
            return MalformedItemError(
                FEATURES_KEY,
                f"{problem}; restore the item from the history of a backup or delete it and re-run "
                "`shardwise features upgrade` to finalize the levels again",
            )

        epoch = attributes.get("epoch")
        if not _is_int(epoch) or epoch < 0:  # type: ignore[operator]
            raise bad(f"epoch must be a whole number >= 0, got {epoch!r}")
        raw_levels = attributes.get("levels", {})
        if not isinstance(raw_levels, Mapping):
            raise bad("levels must be a map of feature name to level")
        levels: dict[str, int] = {}
        for name, level in raw_levels.items():
            if not _is_int(level) or not 0 <= level <= 32767:
                raise bad(f"levels.{name} must be a level between 0 and 32767, got {level!r}")
            if level:
                levels[str(name)] = level
        history: list[FeatureChange] = []
        raw_history = attributes.get("h", [])
        if not isinstance(raw_history, list):
            raise bad("h must be a list of changes")
        for entry in raw_history:
            if not isinstance(entry, Mapping):
                raise bad(f"history entry {entry!r} is not a map")
            changes: dict[str, tuple[int, int]] = {}
            raw_changes = entry.get("ch", {})
            if isinstance(raw_changes, Mapping):
                for name, pair in raw_changes.items():
                    if isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) for v in pair):
                        changes[str(name)] = (int(pair[0]), int(pair[1]))
            epoch_h, when = entry.get("epoch", 0), entry.get("mts", 0)
            history.append(
                FeatureChange(
                    int(epoch_h) if _is_int(epoch_h) else 0,
                    str(entry.get("mb", "Unknown")),
                    int(when) if _is_int(when) else 0,
                    changes,
                )
            )
        mts = attributes.get("mts", 0)
        return cls(
            int(epoch),  # type: ignore[arg-type]
            levels,
            str(attributes.get("mb", "Unknown")),
            int(mts) if _is_int(mts) else 0,
            tuple(history),
        )


@dataclass(frozen=True, slots=True)
class FinalizedFeatures:
    """The fleet's finalized levels as read now.

    ``levels`` holds every feature of the registry (0 = not finalized) plus any finalized feature this release
    does not know; ``epoch`` is the record's (-1 without a record); ``layout`` is the layout the coordinator
    items are in (None while there are none, when ``table.layout`` can still be chosen).
    """

    epoch: int
    levels: Mapping[str, int]
    record: FeatureRecord | None = None
    migration: MigrationState | None = None
    layout: Layout | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def client_version(self) -> ClientVersion | None:
        return None if self.migration is None else self.migration.version

    @property
    def history(self) -> tuple[FeatureChange, ...]:
        return () if self.record is None else self.record.history

    def finalized(self) -> dict[str, int]:
        """Only the levels that are finalized (non-zero)."""
        return {name: level for name, level in self.levels.items() if level}

    def summary(self) -> str:
        """The finalized levels in one short string (``lease.assignment=2,table.layout=2``; ``-`` for none): a
        leader publishes it on the lock item, so that the other workers read the items only when it changes."""
        return ",".join(f"{name}={level}" for name, level in sorted(self.finalized().items())) or "-"


def parse_advertisement(record: ItemRecord) -> tuple[dict[str, SupportedRange], str | None, float] | None:
    """``(ranges, release, advertised at)`` of a worker record, or None when it advertises nothing (not a
    shardwise worker, or a broken advertisement — logged)."""
    raw = record.attributes.get(ADVERTISED_RANGES)
    stamp = record.attributes.get(ADVERTISED_AT)
    if raw is None or stamp is None:
        return None
    if not isinstance(raw, Mapping) or not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
        logger.warning(
            "worker record %r: unreadable feature advertisement (%s, %s); ignoring it", record.key, raw, stamp
        )
        return None
    ranges: dict[str, SupportedRange] = {}
    for name, pair in raw.items():
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) for v in pair)):
            logger.warning("worker record %r: range of %s is not [min, max]: %r; ignoring it", record.key, name, pair)
            return None
        ranges[str(name)] = SupportedRange(int(pair[0]), int(pair[1]))
    release = record.attributes.get(ADVERTISED_RELEASE)
    return ranges, release if isinstance(release, str) else None, float(stamp)


def holds_assignment(record_attributes: Mapping[str, Any] | None, migration: MigrationState) -> str | None:
    """Whether an operator's ``shardwise features`` decision keeps ``lease.assignment`` at 1: the features record
    finalizes it at 1 and was written no earlier than ``Migration3.0`` (a later ``shardwise migrate rollforward``
    or ``KclMigrationTool.py`` run gives KCL's automatic flip back). Returns who decided, or None."""
    if record_attributes is None:
        return None
    try:
        record = FeatureRecord.from_attributes(record_attributes)
    except MalformedItemError:
        return None
    if record.levels.get(LEASE_ASSIGNMENT) == 1 and record.modified_at_ms >= migration.modified_at_ms:
        return record.modified_by
    return None


class FeatureStore:
    """Reads the finalized levels and the workers' advertisements, and applies changes conditionally."""

    def __init__(
        self,
        coordinator: ItemTable,
        worker_metrics: ItemTable,
        *,
        layout_known: bool = True,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._coordinator = coordinator
        self._worker_metrics = worker_metrics
        self._layout_known = layout_known
        self._clock_ms = clock_ms

    @property
    def coordinator(self) -> ItemTable:
        return self._coordinator

    @property
    def worker_metrics(self) -> ItemTable:
        return self._worker_metrics

    # -- reading ---------------------------------------------------------------------------------------------

    def read(self, *, detect_layout_by_scan: bool = True, consistent: bool = True) -> FinalizedFeatures:
        """Reads of the features record and ``Migration3.0`` (strongly consistent unless ``consistent`` is
        False). Without either item the single-table layout counts as chosen only if a scan finds coordinator
        items (``detect_layout_by_scan``; workers skip that scan: it reads the whole lease table)."""
        coordinator = self._coordinator
        exists = coordinator.exists()
        record_item = coordinator.get(FEATURES_KEY, consistent=consistent) if exists else None
        migration_item = coordinator.get(MIGRATION_KEY, consistent=consistent) if exists else None
        return self._finalize(record_item, migration_item, exists=exists, detect_layout_by_scan=detect_layout_by_scan)

    def read_from(self, records: Iterable[ItemRecord]) -> FinalizedFeatures:
        """The finalized levels from coordinator records someone else already read (a scan of the lease table
        that holds them, single-table layout): no request of its own."""
        by_key = {record.key: record for record in records}
        return self._finalize(
            by_key.get(FEATURES_KEY), by_key.get(MIGRATION_KEY), exists=True, detect_layout_by_scan=False
        )

    def _finalize(
        self,
        record_item: ItemRecord | None,
        migration_item: ItemRecord | None,
        *,
        exists: bool,
        detect_layout_by_scan: bool,
    ) -> FinalizedFeatures:
        coordinator = self._coordinator
        record = None if record_item is None else FeatureRecord.from_attributes(record_item.attributes)
        migration = None if migration_item is None else MigrationState.from_attributes(migration_item.attributes)
        levels = dict.fromkeys(REGISTRY, 0)
        sources = dict.fromkeys(REGISTRY, "not finalized")
        if record is not None:
            for name, level in record.levels.items():
                levels[name] = level
                sources[name] = FEATURES_KEY
        if migration is not None and migration.version is not None:
            for name, level in levels_from_client_version(migration.version).items():
                levels[name] = level
                sources[name] = f"{MIGRATION_KEY} ({migration.client_version})"
        layout: Layout | None = None
        if (
            exists
            and self._layout_known
            and (
                record is not None
                or migration is not None
                or coordinator.layout == "legacy"
                or (detect_layout_by_scan and bool(coordinator.scan()))
            )
        ):
            layout = coordinator.layout
            levels[TABLE_LAYOUT] = _LAYOUT_LEVEL[layout]
            sources[TABLE_LAYOUT] = f"the {layout} layout of {coordinator.table_name}"
        return FinalizedFeatures(
            epoch=-1 if record is None else record.epoch,
            levels=levels,
            record=record,
            migration=migration,
            layout=layout,
            sources=sources,
        )

    def workers(self, now_epoch_s: float, active_window_s: float = DEFAULT_ACTIVE_WINDOW_S) -> list[WorkerSupport]:
        """Every live worker's advertisement (one scan of the worker records), by worker id."""
        if not self._worker_metrics.exists():
            return []
        return self.workers_from(self._worker_metrics.scan(), now_epoch_s, active_window_s)

    @staticmethod
    def workers_from(
        records: Iterable[ItemRecord], now_epoch_s: float, active_window_s: float = DEFAULT_ACTIVE_WINDOW_S
    ) -> list[WorkerSupport]:
        result = []
        for record in records:
            parsed = parse_advertisement(record)
            if parsed is None:
                continue
            ranges, release, stamp = parsed
            if now_epoch_s - stamp <= active_window_s:
                result.append(WorkerSupport(record.key, ranges, release))
        return sorted(result, key=lambda worker: worker.worker_id)

    # -- advertising -----------------------------------------------------------------------------------------

    def advertise(self, worker_id: str, ranges: Mapping[str, SupportedRange], release: str, now_epoch_s: float) -> None:
        """Write this worker's supported ranges on its worker record (a partial, unconditional upsert)."""
        self._worker_metrics.upsert(worker_id, advertisement(ranges, release, now_epoch_s))

    def withdraw(self, worker_id: str) -> None:
        """Remove this worker's advertisement (clean shutdown): it no longer counts as live."""
        self._worker_metrics.update(
            worker_id,
            set_attributes={},
            remove_attributes=(ADVERTISED_RANGES, ADVERTISED_RELEASE, ADVERTISED_AT),
        )

    # -- writing ---------------------------------------------------------------------------------------------

    def apply(
        self, current: FinalizedFeatures, proposed: Mapping[str, int], modified_by: str
    ) -> FinalizedFeatures | None:
        """Write the ``proposed`` levels (every feature that changes) in one transaction, conditional on the epoch
        and client version of ``current``. Returns what was written, or None when someone changed the features
        (or ``Migration3.0``) first."""
        now = self._clock_ms()
        levels = dict(current.levels.items())
        changes = {
            name: (levels.get(name, 0), level) for name, level in proposed.items() if levels.get(name, 0) != level
        }
        levels.update(proposed)
        record = current.record
        epoch = (0 if record is None else record.epoch) + 1
        change = FeatureChange(epoch, modified_by, now, changes)
        history = (change, *(() if record is None else record.history))[:HISTORY_LIMIT]
        stored = {name: level for name, level in levels.items() if level and name != TABLE_LAYOUT}
        attributes: dict[str, Any] = {
            "epoch": epoch,
            "levels": stored,
            "mb": modified_by,
            "mts": now,
            "h": [entry.to_attribute() for entry in history],
        }
        writes = [
            ItemWrite(FEATURES_KEY, attributes, create=True)
            if record is None
            else ItemWrite(FEATURES_KEY, attributes, expect={"epoch": record.epoch})
        ]
        migration = current.migration
        new_migration = migration
        reflected_changed = any(
            levels.get(name, 0) != current.levels.get(name, 0) for name in (LEASE_ASSIGNMENT, LEASE_DISCOVERY)
        )
        if reflected_changed and (levels.get(LEASE_ASSIGNMENT, 0) or levels.get(LEASE_DISCOVERY, 0)):
            target = client_version_for(levels, None if migration is None else migration.version)
            if migration is None:
                init = HistoryEntry(ClientVersion.INIT.value, modified_by, now)
                migration_attributes = {"cv": target.value, "mb": modified_by, "mts": now, "h": [init.to_attribute()]}
                writes.append(ItemWrite(MIGRATION_KEY, migration_attributes, create=True))
                new_migration = MigrationState(target.value, modified_by, now, (init,))
            elif target.value != migration.client_version:
                previous = HistoryEntry(migration.client_version, migration.modified_by, migration.modified_at_ms)
                migration_history = (previous, *migration.history)[:MIGRATION_HISTORY_LIMIT]
                writes.append(
                    ItemWrite(
                        MIGRATION_KEY,
                        {
                            "cv": target.value,
                            "mb": modified_by,
                            "mts": now,
                            "h": [entry.to_attribute() for entry in migration_history],
                        },
                        expect={"cv": migration.client_version, "mts": migration.modified_at_ms},
                    )
                )
                new_migration = MigrationState(target.value, modified_by, now, migration_history)
        if not self._coordinator.transact(writes):
            return None
        new_record = FeatureRecord(epoch, stored, modified_by, now, history)
        return FinalizedFeatures(
            epoch=epoch,
            levels=levels,
            record=new_record,
            migration=new_migration,
            layout=current.layout if current.layout is not None else self._coordinator.layout,
            sources=current.sources,
        )


def advertisement(ranges: Mapping[str, SupportedRange], release: str, now_epoch_s: float) -> dict[str, Any]:
    """The attributes of a worker's advertisement: its supported ranges, its release and when (epoch seconds)."""
    return {
        ADVERTISED_RANGES: {name: [r.min_level, r.max_level] for name, r in sorted(ranges.items())},
        ADVERTISED_RELEASE: release,
        ADVERTISED_AT: int(now_epoch_s),
    }
