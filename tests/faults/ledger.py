"""Reading the fault fleets' ledger, and the figures the suite reports (pure functions over its rows).

All times are ``time.monotonic()`` seconds (system-wide on Linux: the workers' and the test's compare).

* :func:`lost` — ids put but never delivered (must be empty);
* :func:`duplicates` — deliveries beyond the first of each record;
* :func:`tenures` — for each shard, each worker's stretches of processing it: a stretch begins at the worker's
  ``initialize`` for the shard and runs from its first to its last delivery before the next ``initialize`` of
  that worker for that shard;
* :func:`longest_overlap` — the longest time two stretches of *different* workers on one shard overlapped (two
  workers processing the same shard side by side);
* :func:`recovery_s` — from the end of a fault until every record put before it ended has been delivered and
  every shard has delivered a record put after it ended.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from faults.ledger_processor import connect_ledger

__all__ = [
    "Delivery",
    "Event",
    "Overlap",
    "Tenure",
    "duplicates",
    "longest_overlap",
    "lost",
    "read_deliveries",
    "read_events",
    "recovery_s",
    "tenures",
]


@dataclass(frozen=True, slots=True)
class Delivery:
    record_id: str
    shard_id: str
    sequence_number: str
    worker_id: str
    t: float


@dataclass(frozen=True, slots=True)
class Event:
    shard_id: str
    worker_id: str
    event: str
    t: float


@dataclass(frozen=True, slots=True)
class Tenure:
    shard_id: str
    worker_id: str
    start: float
    end: float
    deliveries: int


@dataclass(frozen=True, slots=True)
class Overlap:
    shard_id: str
    workers: tuple[str, str]
    start: float
    seconds: float


def read_deliveries(path: str | Path) -> list[Delivery]:
    conn = connect_ledger(path)
    try:
        return [Delivery(*row) for row in conn.execute("SELECT * FROM deliveries ORDER BY rowid")]
    finally:
        conn.close()


def read_events(path: str | Path) -> list[Event]:
    conn = connect_ledger(path)
    try:
        return [Event(*row) for row in conn.execute("SELECT * FROM events ORDER BY rowid")]
    finally:
        conn.close()


def lost(produced: Iterable[str], deliveries: Iterable[Delivery]) -> set[str]:
    """The records put and never delivered."""
    return set(produced) - {d.record_id for d in deliveries}


def duplicates(deliveries: Iterable[Delivery]) -> int:
    """How many deliveries repeated a record already delivered (by any worker)."""
    counts = Counter(d.record_id for d in deliveries)
    return sum(n - 1 for n in counts.values())


def tenures(deliveries: Iterable[Delivery], events: Iterable[Event]) -> list[Tenure]:
    """Each worker's stretches of delivering records of each shard, split at its ``initialize`` events for the
    shard; stretches without a delivery are left out. Sorted by shard, then start."""
    starts: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.event == "initialize":
            starts[(event.shard_id, event.worker_id)].append(event.t)
    times: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for delivery in deliveries:
        key = (delivery.shard_id, delivery.worker_id)
        begun = sorted(starts.get(key, ()))
        index = sum(1 for t in begun if t <= delivery.t)  # the stretch this delivery belongs to
        times[(key[0], key[1], index)].append(delivery.t)
    result = [Tenure(shard_id, worker_id, min(ts), max(ts), len(ts)) for (shard_id, worker_id, _), ts in times.items()]
    return sorted(result, key=lambda t: (t.shard_id, t.start, t.worker_id))


def longest_overlap(stretches: Sequence[Tenure]) -> Overlap | None:
    """The longest overlap of two stretches of different workers on the same shard (None: none overlapped)."""
    best: Overlap | None = None
    by_shard: dict[str, list[Tenure]] = defaultdict(list)
    for tenure in stretches:
        by_shard[tenure.shard_id].append(tenure)
    for shard_id, on_shard in sorted(by_shard.items()):
        for a, b in itertools.combinations(on_shard, 2):
            if a.worker_id == b.worker_id:
                continue
            start, end = max(a.start, b.start), min(a.end, b.end)
            if end > start and (best is None or end - start > best.seconds):
                best = Overlap(shard_id, tuple(sorted((a.worker_id, b.worker_id))), start, end - start)  # type: ignore[arg-type]
    return best


def recovery_s(
    put_at: Mapping[str, tuple[str, float]], deliveries: Iterable[Delivery], fault_end: float
) -> float | None:
    """Seconds from ``fault_end`` until every record put (acknowledged) before it has been delivered and every
    shard has delivered a record put after it; ``put_at`` maps record id → (shard, put time). 0.0 if that held
    at once; None if it never did (a record lost, or a shard never delivering again)."""
    first: dict[str, float] = {}
    for delivery in deliveries:
        if delivery.record_id not in first or delivery.t < first[delivery.record_id]:
            first[delivery.record_id] = delivery.t
    done = fault_end
    resumed: dict[str, float | None] = {}
    for record_id, (shard_id, t_put) in put_at.items():
        delivered = first.get(record_id)
        if t_put <= fault_end:
            if delivered is None:
                return None
            done = max(done, delivered)
        else:
            resumed.setdefault(shard_id, None)
            if delivered is not None:
                previous = resumed[shard_id]
                resumed[shard_id] = delivered if previous is None else min(previous, delivered)
    for t in resumed.values():
        if t is None:
            return None
        done = max(done, t)
    return done - fault_end
