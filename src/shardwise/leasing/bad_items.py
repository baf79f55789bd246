"""Malformed lease items, reported loudly by every worker while they stay bad.

A lease item no reader can parse orphans its shard: nobody can renew, take or checkpoint it. Every worker
(both generations, leader or not) checks the lease table on its own cadence and, for each malformed item, logs a
WARNING naming the key, what is wrong and the repair command — again at most once per ``interval`` per key
while it stays bad, at once if what is wrong changes — and reports the count as KCL's
``LeaseDeserializationFailureCount`` metric (operation ``LeaseAssignmentManager``).

Where the table bills reads (a store with :class:`~shardwise.leases.store.SharedTableScan`), the check costs no
read of its own when the worker scanned the table anyway since the last check (the 2.x taker every 20 s, the
3.x leader's assignment runs): it reports what that scan met. Otherwise it scans only if ``scan_needed`` says
so — a 3.x worker that does not lead scans only while the shardwise leader publishes malformed items on the
lock item (or when the leader publishes nothing, e.g. a Java leader).

:func:`due_reports` is the pure decision (which items to report now, over an injected monotonic clock);
:class:`MalformedLeaseReporter` is the thin shell that scans, logs and puts the metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from shardwise.leases.store import LeaseScan, LeaseStore, MalformedLease, SharedTableScan, repair_hint
from shardwise.metrics import COUNT, MetricsSink

__all__ = [
    "METRIC_NAME",
    "METRIC_OPERATION",
    "MalformedLeaseReporter",
    "Reported",
    "due_reports",
    "malformed_lease_message",
]

logger = logging.getLogger(__name__)

METRIC_OPERATION = "LeaseAssignmentManager"
METRIC_NAME = "LeaseDeserializationFailureCount"


@dataclass(frozen=True, slots=True)
class Reported:
    """When an item was last reported (monotonic ns) and what was wrong with it then."""

    at_ns: int
    problem: str


def due_reports(
    malformed: Sequence[MalformedLease],
    last: Mapping[str, Reported],
    now_ns: int,
    interval_ns: int,
) -> tuple[list[MalformedLease], dict[str, Reported]]:
    """The items to report now, and the new report book.

    An item is due if it was never reported, was reported ``interval_ns`` ago or more, or its problem changed.
    Keys no longer malformed leave the book, so an item that goes bad again is reported at once.
    """
    due: list[MalformedLease] = []
    book: dict[str, Reported] = {}
    for item in malformed:
        previous = last.get(item.key)
        if previous is None or previous.problem != item.problem or now_ns - previous.at_ns >= interval_ns:
            due.append(item)
            book[item.key] = Reported(now_ns, item.problem)
        else:
            book[item.key] = previous
    return due, book


def malformed_lease_message(table_name: str, item: MalformedLease) -> str:
    """One line: the table, the key, what is wrong, what happens meanwhile and the fix."""
    return (
        f"lease table {table_name}: lease item {item.key!r} cannot be read ({item.problem}); its shard is not "
        f"processed until it is repaired: {repair_hint(table_name, item.key)}"
    )


class MalformedLeaseReporter:
    """Scans the lease table, warns about malformed lease items at a bounded rate and puts the metric."""

    def __init__(
        self,
        store: LeaseStore,
        metrics: MetricsSink,
        clock_ns: Callable[[], int],
        *,
        interval_ms: int = 60_000,
        scan_needed: Callable[[], bool] = lambda: True,
    ) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be > 0, got {interval_ms}")
        self._store = store
        self._metrics = metrics
        self._clock_ns = clock_ns
        self._interval_ns = interval_ms * 1_000_000
        self._book: dict[str, Reported] = {}
        self._scan_needed = scan_needed
        self._last_scan_number = 0

    def run(self) -> None:
        """One check (a worker loop's task): report what the worker's latest scan of the table met if it made one
        since the last check, else scan if needed (see the module docstring)."""
        store = self._store
        if isinstance(store, SharedTableScan):
            number, malformed = store.last_scan_malformed()
            if number != self._last_scan_number:
                self._last_scan_number = number
                self._report(malformed)
                return
            if not self._scan_needed():
                return
        self.check()

    def check(self) -> LeaseScan:
        """One scan: report what is due, put the count, return the scan."""
        store = self._store
        scan = store.scan_leases()
        if isinstance(store, SharedTableScan):
            self._last_scan_number = store.last_scan_malformed()[0]
        self._report(scan.malformed)
        return scan

    def _report(self, malformed: Sequence[MalformedLease]) -> None:
        due, self._book = due_reports(malformed, self._book, self._clock_ns(), self._interval_ns)
        for item in due:
            logger.warning("%s", malformed_lease_message(self._store.table_name, item))
        self._metrics.put(METRIC_OPERATION, METRIC_NAME, len(malformed), COUNT)
