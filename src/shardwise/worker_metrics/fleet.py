"""The leader's view of the fleet: every worker-metrics entry classified, and the clean-up of stale ones
(kcl-protocol.md §5.3, §6.2)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from shardwise.assignment.model import WorkerMetricStats, metrics_from_attributes
from shardwise.errors import MalformedItemError, ShardwiseError
from shardwise.tables.items import ItemRecord, ItemTable
from shardwise.worker_metrics.config import WorkerMetricsConfig

__all__ = [
    "WorkerMetricsSnapshot",
    "active_workers",
    "classify_worker_records",
    "classify_workers",
    "clean_up_stale",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerMetricsSnapshot:
    """Every worker-metrics entry of the namespace, classified (kcl-protocol.md §5.3, §6.2).

    Each parsed entry is in exactly one of the lists, checked in this order:

    * ``stale``: ``lut`` set and older than the clean-up duration (1 day) — to be deleted;
    * ``invalid``: no ``lut``, or an explicit metric without ``opr`` or with ``opr[0] == 0`` — ignored;
    * ``inactive``: ``lut`` older than 2 × the reporter period — the worker receives no leases;
    * ``failing``: active, but the last value of some metric is −1 — excluded from new assignments;
    * ``active``: valid, active and not failing — the workers leases are assigned to.

    ``malformed`` holds the keys of items that could not be parsed at all.
    """

    active: tuple[WorkerMetricStats, ...] = ()
    failing: tuple[WorkerMetricStats, ...] = ()
    inactive: tuple[WorkerMetricStats, ...] = ()
    invalid: tuple[WorkerMetricStats, ...] = ()
    stale: tuple[WorkerMetricStats, ...] = ()
    malformed: tuple[str, ...] = ()


def classify_workers(
    items: ItemTable, now_epoch_s: float, config: WorkerMetricsConfig | None = None
) -> WorkerMetricsSnapshot:
    """Scan the worker-metrics namespace and classify every entry (see :class:`WorkerMetricsSnapshot`)."""
    return classify_worker_records(items.scan(), now_epoch_s, config, table_name=items.table_name)


def classify_worker_records(
    records: Iterable[ItemRecord],
    now_epoch_s: float,
    config: WorkerMetricsConfig | None = None,
    *,
    table_name: str = "",
) -> WorkerMetricsSnapshot:
    """Classify worker-metrics records already read (see :class:`WorkerMetricsSnapshot`)."""
    config = config if config is not None else WorkerMetricsConfig()
    buckets: dict[str, list[WorkerMetricStats]] = {
        "active": [],
        "failing": [],
        "inactive": [],
        "invalid": [],
        "stale": [],
    }
    malformed: list[str] = []
    for record in records:
        try:
            stats = metrics_from_attributes(record.key, record.attributes)
        except MalformedItemError as exc:
            logger.warning(
                "worker-metrics entry of worker %r in %s is malformed and is ignored: %s",
                record.key,
                table_name,
                exc.problem,
            )
            malformed.append(record.key)
            continue
        if stats.lut > 0 and now_epoch_s - stats.lut > config.stale_after_s:
            bucket = "stale"
        elif not stats.is_valid():
            bucket = "invalid"
        elif not stats.is_active(now_epoch_s, config.reporter_frequency_ms):
            bucket = "inactive"
        elif stats.is_failing():
            bucket = "failing"
        else:
            bucket = "active"
        buckets[bucket].append(stats)
    return WorkerMetricsSnapshot(
        active=tuple(buckets["active"]),
        failing=tuple(buckets["failing"]),
        inactive=tuple(buckets["inactive"]),
        invalid=tuple(buckets["invalid"]),
        stale=tuple(buckets["stale"]),
        malformed=tuple(malformed),
    )


def active_workers(
    items: ItemTable, now_epoch_s: float, config: WorkerMetricsConfig | None = None
) -> tuple[list[WorkerMetricStats], list[str]]:
    """The workers leases may be assigned to (valid, active, not failing) and the ids of stale entries.

    Use :func:`classify_workers` for the full picture (and for the stale entries :func:`clean_up_stale`
    needs).
    """
    snapshot = classify_workers(items, now_epoch_s, config)
    return list(snapshot.active), [stats.worker_id for stats in snapshot.stale]


def clean_up_stale(items: ItemTable, stale: Iterable[WorkerMetricStats]) -> int:
    """Delete stale entries, each only if its ``lut`` is unchanged since it was read; returns how many.

    An entry rewritten meanwhile (its worker came back) or already gone is left alone; a backend error on one
    entry is logged and the others are still tried.
    """
    deleted = 0
    for stats in stale:
        try:
            if items.delete(stats.worker_id, expect={"lut": stats.lut}):
                deleted += 1
                logger.info("deleted the stale worker-metrics entry of %r (lut %d)", stats.worker_id, stats.lut)
            else:
                logger.debug("stale worker-metrics entry of %r changed or vanished; kept", stats.worker_id)
        except ShardwiseError as exc:
            logger.warning("could not delete the stale worker-metrics entry of %r: %s", stats.worker_id, exc)
    return deleted
