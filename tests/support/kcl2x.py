"""Helpers of the scenarios that mix Java KCL 2.x workers with shardwise workers: a background producer, a raw
look at the lease table (every item must be a lease KCL 2.x can parse), lease-count checks and the final count of
every record's deliveries."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from typing import Any, Final

import boto3

from support.javakcl import Delivery, Interop, JavaWorker, KclVersion

__all__ = [
    "FAILOVER_MS",
    "JAVA_2X",
    "JAVA_VERSION",
    "LEASE_ATTRIBUTE_TYPES",
    "SHARDWISE_2X_TIMINGS",
    "TAKER_S",
    "Producer",
    "Timeline",
    "assert_none_lost",
    "assert_only_leases",
    "lease_counts",
    "live_traffic",
    "no_parse_failures",
    "raw_lease_table",
    "spread",
    "unparsable_by_kcl_2x",
]

#: The Java KCL 2.x release of the scenarios.
JAVA_VERSION: Final[KclVersion] = "2.5.8"
#: Lease duration of both kinds of workers, shortened for a 2-core machine.
FAILOVER_MS = 5_000
#: How often the lease taker runs, on both kinds: (failover + ε) × 2.
TAKER_S = 2 * (FAILOVER_MS + 25) / 1000
#: Java KCL 2.5.8 with the same lease duration as the shardwise workers.
JAVA_2X: dict[str, str | int] = {"failoverTimeMillis": FAILOVER_MS}
#: The timings of the shardwise workers, to go with their generation's flags.
SHARDWISE_2X_TIMINGS: tuple[str, ...] = (
    "--initial-position",
    "TRIM_HORIZON",
    "--failover-time-ms",
    str(FAILOVER_MS),
    "--idle-time-between-reads-ms",
    "250",
    "--max-records",
    "1000",
    "--set",
    "shard_sync_interval_ms=5000",
    "--set",
    "consumer.task_backoff_time_ms=250",
)

#: Attributes a KCL 2.x lease serializer reads, with the DynamoDB type it expects (kcl-protocol.md §2.2).
LEASE_ATTRIBUTE_TYPES = {
    "leaseKey": "S",
    "leaseOwner": "S",
    "leaseCounter": "N",
    "checkpoint": "S",
    "checkpointSubSequenceNumber": "N",
    "pendingCheckpoint": "S",
    "pendingCheckpointSubSequenceNumber": "N",
    "ownerSwitchesSinceCheckpoint": "N",
    "parentShardId": "SS",
    "childShardIds": "SS",
    "startingHashKey": "S",
    "endingHashKey": "S",
}


class Producer(threading.Thread):
    """Puts ``per_tick`` records ``<tag>-<n>`` every ``interval_s`` through :meth:`Interop.put` until stopped."""

    def __init__(self, scenario: Interop, tag: str, per_tick: int = 8, interval_s: float = 0.5) -> None:
        super().__init__(name=f"producer-{tag}", daemon=True)
        self._scenario = scenario
        self._tag = tag
        self._per_tick = per_tick
        self._interval_s = interval_s
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                self._scenario.put(self._tag, n, self._per_tick)
                n += self._per_tick
                self.stop.wait(self._interval_s)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        self.join(timeout_s)
        assert not self.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}") from self.error


def raw_lease_table(scenario: Interop) -> list[dict[str, Any]]:
    """Every item of the lease table as DynamoDB returns it (a consistent, paginated Scan)."""
    client = boto3.client("dynamodb", endpoint_url=scenario.dynamodb_endpoint, region_name="us-east-1")
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=scenario.application, ConsistentRead=True):
        items.extend(page["Items"])
    return items


def unparsable_by_kcl_2x(items: list[dict[str, Any]]) -> list[str]:
    """Why each item a KCL 2.x worker could not read as a lease would break it (empty: every item is a lease)."""
    problems = []
    for item in items:
        key = item.get("leaseKey", {}).get("S")
        if not key or not key.startswith("shardId-"):
            problems.append(f"not a lease (leaseKey {item.get('leaseKey')!r}): {item}")
            continue
        for name in ("leaseCounter", "checkpoint"):
            if name not in item:
                problems.append(f"{key}: no {name}: {item}")
        for name, expected in LEASE_ATTRIBUTE_TYPES.items():
            if name in item and expected not in item[name]:
                problems.append(f"{key}: {name} is {item[name]!r}, KCL 2.x reads it as {expected}")
        if "entityType" in item and item["entityType"].get("S") != "LEASE":
            problems.append(f"{key}: entityType {item['entityType']!r}")
    return problems


def assert_only_leases(scenario: Interop, phase: str, shards: int) -> list[dict[str, Any]]:
    items = raw_lease_table(scenario)
    problems = unparsable_by_kcl_2x(items)
    assert not problems, f"{phase}: the lease table holds items KCL 2.x cannot parse:\n" + "\n".join(problems)
    assert len(items) == shards, f"{phase}: {len(items)} items in the lease table, expected {shards} leases"
    return items


def lease_counts(scenario: Interop) -> dict[str | None, int]:
    return dict(Counter(scenario.owners().values()))


def spread(
    scenario: Interop, workers: Collection[str], low: int, high: int, shards: int
) -> dict[str | None, int] | None:
    """The lease counts once all ``shards`` leases are held by ``workers``, each holding ``low``–``high``."""
    owners = scenario.owners()
    if len(owners) != shards:
        return None
    counts = Counter(owners.values())
    if set(counts) - set(workers):
        return None
    if all(low <= counts.get(worker, 0) <= high for worker in workers):
        return dict(counts)
    return None


def no_parse_failures(worker: JavaWorker) -> None:
    failures = worker.parse_failures()
    assert not failures, f"Java KCL {worker.worker_id} could not read items:\n" + "\n".join(failures[:20])


@contextlib.contextmanager
def live_traffic(scenario: Interop) -> Iterator[Producer]:
    """Puts 200 records ``pre-<n>`` first, then runs a :class:`Producer` of records ``live-<n>`` for the block.

    On leaving it the producer stops; if the block raised, that is all (its failure is the one reported).
    Otherwise the producer is joined (failing if it failed) and every record put must be processed within 90 s.
    """
    scenario.put("pre", 0, 200)
    producer = Producer(scenario, "live")
    producer.start()
    try:
        yield producer
    finally:
        producer.stop.set()
    producer.finish()
    scenario.wait_for(
        lambda: not scenario.missing(), 90, lambda: f"every record processed; missing {len(scenario.missing())}"
    )


class Timeline:
    """Progress lines stamped with the seconds since the scenario began, and the waits for a lease spread."""

    def __init__(self, scenario: Interop, shards: int) -> None:
        self.scenario = scenario
        self.shards = shards
        self.started = time.monotonic()

    def log(self, message: str) -> None:
        print(f"{time.monotonic() - self.started:5.0f}s: {message}")

    def wait_spread(self, workers: Collection[str], low: int, high: int, timeout_s: float, what: str) -> dict[Any, int]:
        """Wait until every lease is held by ``workers``, each holding ``low``–``high`` (see :func:`spread`)."""
        s = self.scenario
        counts = s.wait_for(
            lambda: spread(s, workers, low, high, self.shards),
            timeout_s,
            lambda: f"{what}: leases {low}-{high} each; now {lease_counts(s)}",
        )
        self.log(f"{what}: leases {counts}")
        return counts


def assert_none_lost(scenario: Interop, timeline: Timeline) -> tuple[list[Delivery], dict[str, str], int]:
    """Every record put was delivered (by a worker of either kind), and nothing else was; returns the deliveries,
    the records put (id → shard) and how many deliveries were duplicates."""
    deliveries = scenario.deliveries()
    produced = scenario.produced_now()
    missing = set(produced) - {d.record_id for d in deliveries}
    assert not missing, f"{len(missing)} record(s) lost: {sorted(missing)[:10]}"
    unknown = {d.record_id for d in deliveries} - set(produced)
    assert not unknown, f"deliveries of records never put: {sorted(unknown)[:10]}"
    duplicates = sum(n - 1 for n in Counter(d.record_id for d in deliveries).values())
    java_n = len(scenario.java_deliveries())
    timeline.log(
        f"{len(produced)} records put, {len(deliveries)} deliveries (Java {java_n}, shardwise "
        f"{len(deliveries) - java_n}), {duplicates} duplicate(s) from lease handoffs; none lost"
    )
    return deliveries, produced, duplicates
