"""Java KCL 2.5.8 workers and shardwise pure ``lease-count-2x`` workers sharing one application (DynamoDB on moto,
Kinesis on kinesis-local): one fleet on the 2.x generation, whatever each worker is written in.

8 shards; a producer puts uniquely numbered records (data ``<tag>-<n>``, partition key ``pk-<tag>-<n>``) all along,
so every loss and every duplicate is counted exactly across both kinds of worker (Java's record logs, shardwise's
results database). The run exercises lease-count taking and stealing in every direction:

1. ``java-1`` and ``java-2`` (KCL 2.5.8) create the lease table and take all 8 leases;
2. ``sw-1`` and ``sw-2`` (shardwise, ``--assignment lease-count-2x``) join and *steal* from the Java workers until
   each of the 4 holds 2 (±1);
3. both Java workers stop (SIGTERM): the shardwise workers *take* their expired leases (4 each);
4. ``java-3`` joins and *steals* from the shardwise workers (3/3/2 ±1);
5. ``sw-1`` stops (SIGTERM, releasing its leases): ``java-3`` and ``sw-2`` *take* them (4 each ±1).

Throughout, the lease table (scanned raw with boto3) holds nothing but leases a KCL 2.x worker can parse
(``leaseKey`` ``shardId-…``, ``leaseCounter`` N, ``checkpoint`` S, the other attributes of the 2.x types), no
other table of the application exists, and no Java log shows a failure to read an item. At the end every record
put was processed (the union of both kinds' deliveries), and every shardwise worker exited 0 on SIGTERM.

Timings are shortened for a 2-core machine: failover 5 s on both kinds (the 2.x taker runs every 10.05 s).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from support.javakcl import Interop, JavaKclError, make_interop, require_java_kcl
from support.kcl2x import Producer, assert_only_leases, lease_counts, no_parse_failures, spread
from support.standins import Server

pytestmark = [pytest.mark.java, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(420)]

SHARDS = 8
FAILOVER_MS = 5_000
TAKER_S = 2 * (FAILOVER_MS + 25) / 1000  # both kinds: (failover + ε) × 2
JAVA_VERSION: Final = "2.5.8"
#: Java KCL 2.5.8 with the same lease duration as the shardwise workers.
JAVA_2X: dict[str, str | int] = {"failoverTimeMillis": FAILOVER_MS}
#: shardwise on the pure KCL 2.x generation (no migration state machine), same timings.
SHARDWISE_2X = (
    "--assignment",
    "lease-count-2x",
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
# -- the scenario -------------------------------------------------------------------------------------------------


@pytest.fixture
def scenario(moto_server: Server, kinesis_local: Server, tmp_path: Path) -> Iterator[Interop]:
    require_java_kcl(JAVA_VERSION)
    s = make_interop(
        name="mixed2x",
        shards=SHARDS,
        kinesis_endpoint=kinesis_local.endpoint_url,
        dynamodb_endpoint=moto_server.endpoint_url,
        work_dir=tmp_path,
        shardwise_args=SHARDWISE_2X,
    )
    try:
        yield s
    finally:
        s.close()  # no worker of either kind outlives the test


def test_lease_count_taking_and_stealing_across_java_2x_and_shardwise(scenario: Interop) -> None:
    s = scenario
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"{time.monotonic() - started:5.0f}s: {message}")

    def wait_spread(workers: Collection[str], low: int, high: int, timeout_s: float, what: str) -> dict[Any, int]:
        check: Callable[[], dict[str | None, int] | None] = lambda: spread(s, workers, low, high, SHARDS)  # noqa: E731
        counts = s.wait_for(check, timeout_s, lambda: f"{what}: leases {low}-{high} each; now {lease_counts(s)}")
        log(f"{what}: {counts}")
        return counts

    s.put("pre", 0, 200)
    producer = Producer(s, "live")
    producer.start()
    try:
        # 1. Two Java KCL 2.5.8 workers create the lease table and take every lease.
        s.start_java("java-1", JAVA_2X, version=JAVA_VERSION)
        s.start_java("java-2", JAVA_2X, version=JAVA_VERSION)
        wait_spread(("java-1", "java-2"), 1, SHARDS, 120, "Java 2.5.8 took every lease")
        assert_only_leases(s, "Java alone", SHARDS)
        assert s.tables() == {s.application}

        # 2. Two shardwise lease-count-2x workers join and steal until each of the 4 holds 2 (±1).
        s.fleet.start("sw-1")
        s.fleet.start("sw-2")
        counts = wait_spread(("java-1", "java-2", "sw-1", "sw-2"), 1, 3, 6 * TAKER_S + 30, "shardwise stole from Java")
        try:  # lease-count stealing settles at exactly 2 each; a slow renewal may delay that, which is no failure
            counts = wait_spread(("java-1", "java-2", "sw-1", "sw-2"), 2, 2, 3 * TAKER_S + 5, "exactly balanced")
        except JavaKclError as exc:
            if not str(exc).startswith("timed out"):
                raise  # a worker exited on its own
            log(f"not exactly 2/2/2/2 yet: {lease_counts(s)} (within ±1)")
        assert counts.get("sw-1", 0) >= 1 and counts.get("sw-2", 0) >= 1
        assert_only_leases(s, "Java and shardwise", SHARDS)
        assert s.tables() == {s.application}, "a pure lease-count-2x worker created a table"

        # 3. The Java workers stop: shardwise takes their leases once they expire.
        for worker_id in ("java-1", "java-2"):
            code = s.java[worker_id].stop()
            log(f"{worker_id} stopped (exit {code})")
        wait_spread(("sw-1", "sw-2"), 3, 5, FAILOVER_MS / 1000 + 4 * TAKER_S + 20, "shardwise took Java's leases")
        assert_only_leases(s, "shardwise alone", SHARDS)

        # 4. A new Java worker steals from the shardwise workers.
        s.start_java("java-3", JAVA_2X, version=JAVA_VERSION)
        counts = wait_spread(("sw-1", "sw-2", "java-3"), 2, 4, 6 * TAKER_S + 40, "Java stole from shardwise")
        assert_only_leases(s, "Java stole from shardwise", SHARDS)

        # 5. A shardwise worker stops (releasing its leases): Java and shardwise take them.
        code = s.fleet.terminate("sw-1")
        assert code == 0, f"sw-1 exited {code} on SIGTERM\n{s.report()}"
        wait_spread(("sw-2", "java-3"), 3, 5, FAILOVER_MS / 1000 + 4 * TAKER_S + 20, "sw-1's leases taken")
    finally:
        producer.stop.set()
    producer.finish()

    s.wait_for(lambda: not s.missing(), 90, lambda: f"every record processed; missing {len(s.missing())}")
    time.sleep(3)  # a late duplicate would show up by now
    items = assert_only_leases(s, "the end", SHARDS)
    assert s.tables() == {s.application}
    code = s.fleet.terminate("sw-2")
    assert code == 0, f"sw-2 exited {code} on SIGTERM\n{s.report()}"
    s.java["java-3"].stop()

    deliveries = s.deliveries()
    produced = s.produced_now()
    missing = set(produced) - {d.record_id for d in deliveries}
    assert not missing, f"{len(missing)} record(s) lost: {sorted(missing)[:10]}"
    unknown = {d.record_id for d in deliveries} - set(produced)
    assert not unknown, f"deliveries of records never put: {sorted(unknown)[:10]}"
    per_record = Counter(d.record_id for d in deliveries)
    duplicates = sum(n - 1 for n in per_record.values())
    java_n = len(s.java_deliveries())
    log(
        f"{len(produced)} records put, {len(deliveries)} deliveries (Java {java_n}, shardwise "
        f"{len(deliveries) - java_n}), {duplicates} duplicate(s) from lease handoffs; none lost"
    )
    # Both kinds checkpoint after every batch: a stolen lease replays at most the batch in flight.
    assert duplicates <= len(produced) // 4, f"{duplicates} duplicates out of {len(produced)} records"
    assert {d.worker_id for d in deliveries} >= {"java-1", "java-2", "java-3", "sw-1", "sw-2"}
    owners = {item.get("leaseOwner", {}).get("S") for item in items}
    log(f"final lease owners in the raw table: {owners}")
    for worker in s.java_workers():
        no_parse_failures(worker)
