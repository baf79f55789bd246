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

import pytest

from support.javakcl import Interop, JavaKclError, interop_fixture
from support.kcl2x import (
    FAILOVER_MS,
    JAVA_2X,
    JAVA_VERSION,
    SHARDWISE_2X_TIMINGS,
    TAKER_S,
    Timeline,
    assert_none_lost,
    assert_only_leases,
    lease_counts,
    live_traffic,
    no_parse_failures,
)

pytestmark = [pytest.mark.java, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(420)]

SHARDS = 8
#: shardwise on the pure KCL 2.x generation (no migration state machine), same timings as Java.
SHARDWISE_2X = ("--assignment", "lease-count-2x", *SHARDWISE_2X_TIMINGS)
# -- the scenario -------------------------------------------------------------------------------------------------

scenario = interop_fixture("mixed2x", SHARDS, SHARDWISE_2X, java_version=JAVA_VERSION)


def test_lease_count_taking_and_stealing_across_java_2x_and_shardwise(scenario: Interop) -> None:
    s = scenario
    timeline = Timeline(s, SHARDS)
    log, wait_spread = timeline.log, timeline.wait_spread

    with live_traffic(s):
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

    time.sleep(3)  # a late duplicate would show up by now
    items = assert_only_leases(s, "the end", SHARDS)
    assert s.tables() == {s.application}
    code = s.fleet.terminate("sw-2")
    assert code == 0, f"sw-2 exited {code} on SIGTERM\n{s.report()}"
    s.java["java-3"].stop()

    deliveries, produced, duplicates = assert_none_lost(s, timeline)
    # Both kinds checkpoint after every batch: a stolen lease replays at most the batch in flight.
    assert duplicates <= len(produced) // 4, f"{duplicates} duplicates out of {len(produced)} records"
    assert {d.worker_id for d in deliveries} >= {"java-1", "java-2", "java-3", "sw-1", "sw-2"}
    owners = {item.get("leaseOwner", {}).get("S") for item in items}
    log(f"final lease owners in the raw table: {owners}")
    for worker in s.java_workers():
        no_parse_failures(worker)
