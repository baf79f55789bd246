"""The rolling replacement an operator does to move a Java KCL 2.x fleet onto shardwise and the 3.x generation,
with the real Java KCL 2.5.8 (DynamoDB on moto, Kinesis on kinesis-local).

8 shards; a producer puts uniquely numbered records (data ``<tag>-<n>``, partition key ``pk-<tag>-<n>``) all along,
so every loss is counted exactly across both kinds of worker (Java's record logs, shardwise's results database).
shardwise workers run ``--client-version-config compatible-with-2x --metrics log``:

1. ``java-1`` … ``java-4`` (KCL 2.5.8) create the lease table and share the 8 leases (2 ±1 each);
2. ``java-1`` and ``java-2`` are replaced (SIGTERM, then a shardwise worker started) by ``sw-1`` and ``sw-2``: the
   first writes ``Migration3.0`` = ``CLIENT_VERSION_UPGRADE_FROM_2X`` into ``<app>-CoordinatorState`` (the legacy
   layout: nothing but leases in the lease table the remaining Java workers read), both log
   ``CurrentState:2xCompatibleWorker``, and the 4 workers share the leases by lease-count taking;
3. ``java-3`` and ``java-4`` are replaced by ``sw-3`` and ``sw-4``; once every lease owner reports worker metrics
   (and the GSI is ``ACTIVE``) for the stabilization period, the shard-sync leader flips ``Migration3.0`` to
   ``CLIENT_VERSION_3X_WITH_ROLLBACK`` and every worker logs ``CurrentState:3xWorker``;
4. ``shardwise migrate rollback`` (exit 0): ``CLIENT_VERSION_2X``, every worker back on ``2xCompatibleWorker``, the
   GSI and the worker metrics table deleted;
5. ``shardwise migrate rollforward`` (exit 0): ``CLIENT_VERSION_UPGRADE_FROM_2X``, and the automatic flip again.

At each phase: all 8 leases held by the live workers within a bound, the ``CurrentState`` of every shardwise worker,
the ``cv`` of ``Migration3.0`` (read raw with boto3), and — while any Java 2.x worker is alive, and in fact all
along — a lease table holding only leases (scanned raw). At the end: every record put was processed (the union of
both kinds' deliveries), every shardwise worker exits 0 on SIGTERM, no Java log shows a failure to read an item.

Timings are shortened for a 2-core machine: failover 5 s on both kinds; ``Migration3.0`` polled every 1 s,
readiness checked every 1 s, stabilization 10 s, worker metrics every 3 s (an entry is fresh for 2 × 3 s and its
``lut`` is whole seconds, so a loaded machine does not reset the stabilization). The deterministic (2.x) shard-sync
leader of ``sw-1`` … ``sw-4`` is ``sw-4`` (see :func:`test_the_final_fleets_leader_is_the_last_replacement`): its
own election 60 s after its start (KCL's schedule) names it, so the flip comes about 60 s + stabilization after
the last replacement. ``shardwise migrate rollback`` waits about 60 s: like KCL's tool, it deletes the GSI only once
no worker-metrics entry has been refreshed for 60 s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from typing import Any

import boto3
import pytest

from shardwise.leadership.deterministic import deterministic_leaders
from shardwise.versions.migration_rules import METRIC_2X_WORKER, METRIC_3X_WORKER, OPERATION
from support.javakcl import Interop, interop_fixture
from support.kcl2x import (
    FAILOVER_MS,
    JAVA_2X,
    JAVA_VERSION,
    SHARDWISE_2X_TIMINGS,
    TAKER_S,
    Timeline,
    assert_none_lost,
    assert_only_leases,
    live_traffic,
    no_parse_failures,
)

pytestmark = [pytest.mark.java, pytest.mark.aws, pytest.mark.slow]

SHARDS = 8
JAVA_IDS = ("java-1", "java-2", "java-3", "java-4")
SHARDWISE_IDS = ("sw-1", "sw-2", "sw-3", "sw-4")
REPLACEMENTS = dict(zip(JAVA_IDS, SHARDWISE_IDS, strict=True))
POLL_MS = 1_000
READINESS_MS = 1_000
STABILIZATION_MS = 10_000
REPORTER_MS = 3_000
#: KCL's DeterministicShuffleShardSyncLeaderDecider (and shardwise's) elects again 60 s after its first election.
REELECTION_S = 60.0
FLIP_AFTER_READY_S = (READINESS_MS + STABILIZATION_MS + 2 * REPORTER_MS + POLL_MS) / 1000
GSI = "LeaseOwnerToLeaseKeyIndex"
MIGRATION_KEY = "Migration3.0"
UPGRADE_FROM_2X = "CLIENT_VERSION_UPGRADE_FROM_2X"
V3X_WITH_ROLLBACK = "CLIENT_VERSION_3X_WITH_ROLLBACK"
V2X = "CLIENT_VERSION_2X"
SHARDWISE_COMPATIBLE = (
    "--client-version-config",
    "compatible-with-2x",
    *SHARDWISE_2X_TIMINGS,
    "--metrics",
    "log",
    "--set",
    f"migration.client_version_poll_interval_ms={POLL_MS}",
    "--set",
    "migration.client_version_poll_jitter_ms=0",
    "--set",
    f"migration.readiness_check_interval_ms={READINESS_MS}",
    "--set",
    f"migration.stabilization_period_ms={STABILIZATION_MS}",
    "--set",
    f"worker_metrics.reporter_frequency_ms={REPORTER_MS}",
    "--set",
    "worker_metrics.in_memory_capture_frequency_ms=250",
    "--set",
    "worker_metrics.cpu_source=none",  # balance on throughput (uniform here), whatever the machine's load
    "--set",
    "coordination.leader_lease_duration_ms=6000",
    "--set",
    "coordination.leader_heartbeat_period_ms=1000",
    "--set",
    f"coordination.max_lease_discovery_interval_ms={FAILOVER_MS - 25}",
)
_CURRENT_STATE = re.compile(rf"metric {OPERATION} (CurrentState:\w+)=1\b")
_METRICS_READY = re.compile(rf"metric {OPERATION} WorkerMetricsReadyStatus=([01])\b")


# -- helpers (kept here: support/javakcl.py belongs to the conformance harness) -------------------------------------


def _ddb(scenario: Interop) -> Any:
    return boto3.client("dynamodb", endpoint_url=scenario.dynamodb_endpoint, region_name="us-east-1")


def gsi_names(scenario: Interop) -> set[str]:
    table = _ddb(scenario).describe_table(TableName=scenario.application)["Table"]
    return {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}


def migration_item(scenario: Interop) -> dict[str, Any] | None:
    """``Migration3.0`` from the legacy coordinator state table, raw (None while the table or the item is absent)."""
    table = f"{scenario.application}-CoordinatorState"
    if table not in scenario.tables():
        return None
    item: dict[str, Any] | None = (
        _ddb(scenario).get_item(TableName=table, Key={"key": {"S": MIGRATION_KEY}}, ConsistentRead=True).get("Item")
    )
    return item


def client_version(scenario: Interop) -> str | None:
    item = migration_item(scenario)
    return None if item is None else str(item["cv"]["S"])


def current_state(scenario: Interop, worker_id: str) -> str | None:
    """The last ``CurrentState`` metric the shardwise worker logged (each is started once: its whole log)."""
    found = _CURRENT_STATE.findall(scenario.fleet.log_text(worker_id))
    return found[-1] if found else None


def states(scenario: Interop, workers: Collection[str]) -> dict[str, str | None]:
    return {worker_id: current_state(scenario, worker_id) for worker_id in workers}


# -- the scenario -------------------------------------------------------------------------------------------------


def test_the_final_fleets_leader_is_the_last_replacement() -> None:
    """The timing bound of the flip relies on this: the deterministic leader of the 4 shardwise workers (and of
    them next to the last Java worker) is ``sw-4``, whose first re-election after its start names itself."""
    assert deterministic_leaders(SHARDWISE_IDS) == {"sw-4"}
    assert deterministic_leaders((*SHARDWISE_IDS, "java-4")) == {"sw-4"}
    assert deterministic_leaders(("sw-1", "sw-2", "sw-4")) == {"sw-4"}


scenario = interop_fixture("rolling", SHARDS, SHARDWISE_COMPATIBLE, java_version=JAVA_VERSION)


@pytest.mark.timeout(480)
def test_rolling_replacement_of_java_2x_by_shardwise_then_3x_rollback_rollforward(scenario: Interop) -> None:
    s = scenario
    timeline = Timeline(s, SHARDS)
    log, wait_spread = timeline.log, timeline.wait_spread

    def java_alive() -> list[str]:
        return [w for w, worker in s.java.items() if worker.is_alive()]

    def wait_version(version: str, timeout_s: float, what: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            item = migration_item(s)
            return item if item is not None and item["cv"]["S"] == version else None

        item = s.wait_for(reached, timeout_s, lambda: f"{what}: cv {version}; now {client_version(s)}")
        log(f"{what}: cv {version} by {item['mb']['S']}")
        return item

    def wait_states(expected: Mapping[str, str | None], timeout_s: float, what: str) -> None:
        s.wait_for(
            lambda: states(s, expected) == dict(expected),
            timeout_s,
            lambda: f"{what}: CurrentState {states(s, expected)}",
        )
        log(f"{what}: CurrentState {dict(expected)}")

    def check_only_leases(phase: str) -> None:
        assert_only_leases(s, f"{phase} (Java alive: {java_alive() or 'none'})", SHARDS)

    def replace(java_id: str) -> None:
        """What the operator does: stop a Java worker gracefully (SIGTERM), start a shardwise worker instead."""
        code = s.java[java_id].stop()
        s.fleet.start(REPLACEMENTS[java_id])
        log(f"{java_id} stopped (exit {code}), {REPLACEMENTS[java_id]} started")

    with live_traffic(s):
        # 1. A Java KCL 2.5.8 fleet.
        for java_id in JAVA_IDS:
            s.start_java(java_id, JAVA_2X, version=JAVA_VERSION)
        wait_spread(JAVA_IDS, 1, 3, 150, "Java 2.5.8 fleet")
        check_only_leases("Java 2.x fleet")
        assert s.tables() == {s.application}
        assert migration_item(s) is None

        # 2. Half the fleet replaced by shardwise compatible-with-2x: UPGRADE_FROM_2X, in the legacy tables.
        replace("java-1")
        replace("java-2")
        upgrade = wait_version(UPGRADE_FROM_2X, 30, "first shardwise worker")
        assert upgrade["mb"]["S"] in ("sw-1", "sw-2"), upgrade
        wait_states({"sw-1": METRIC_2X_WORKER, "sw-2": METRIC_2X_WORKER}, 20, "half replaced")
        half = ("java-3", "java-4", "sw-1", "sw-2")
        wait_spread(half, 1, 3, FAILOVER_MS / 1000 + 6 * TAKER_S + 20, "half replaced")
        assert {s.application, f"{s.application}-CoordinatorState"} <= s.tables()
        check_only_leases("half replaced")
        s.wait_for(lambda: GSI in gsi_names(s), 30, "the compatible workers to create the GSI")
        assert client_version(s) == UPGRADE_FROM_2X, "flipped while Java 2.x workers own leases"
        wait_states({"sw-1": METRIC_2X_WORKER, "sw-2": METRIC_2X_WORKER}, 5, "half replaced, balanced")

        # 3. The other half replaced: the leader flips to 3X_WITH_ROLLBACK once every owner reports metrics.
        replace("java-3")
        check_only_leases("java-4 the last Java worker")
        assert client_version(s) == UPGRADE_FROM_2X, "flipped while a Java 2.x worker owns leases"
        replace("java-4")
        last_replacement = time.monotonic()
        assert not java_alive()
        wait_states(dict.fromkeys(SHARDWISE_IDS, METRIC_2X_WORKER), 20, "all replaced")
        wait_spread(SHARDWISE_IDS, 1, 3, FAILOVER_MS / 1000 + 6 * TAKER_S + 20, "all replaced")
        check_only_leases("all replaced")
        ready_checks = {w: _METRICS_READY.findall(s.fleet.log_text(w)) for w in SHARDWISE_IDS}
        log(f"readiness checks so far (WorkerMetricsReadyStatus per worker): {ready_checks}")
        remaining = REELECTION_S + FLIP_AFTER_READY_S + 30 - (time.monotonic() - last_replacement)
        flipped = wait_version(V3X_WITH_ROLLBACK, max(remaining, 20.0), "the automatic flip")
        assert flipped["mb"]["S"] in SHARDWISE_IDS, flipped
        assert flipped["h"]["L"][0]["M"]["cv"]["S"] == UPGRADE_FROM_2X, flipped
        wait_states(dict.fromkeys(SHARDWISE_IDS, METRIC_3X_WORKER), 15, "flipped")
        wait_spread(SHARDWISE_IDS, 1, 3, 10, "flipped")
        check_only_leases("3X_WITH_ROLLBACK")

        # 4. Roll back with the CLI: 2X, every worker back on the 2.x behaviour, GSI and metrics table deleted.
        code, rollback = s.migrate("rollback", "--poll-interval", "1", "--wait-timeout", "120", "--gsi-timeout", "60")
        assert code == 0, rollback
        assert (rollback["outcome"], rollback["previousClientVersion"], rollback["clientVersion"]) == (
            "rolled-back",
            V3X_WITH_ROLLBACK,
            V2X,
        ), rollback
        assert rollback["cleanup"]["ownerIndex"] == "deleted", rollback
        assert rollback["cleanup"]["workerMetricsTable"] == "deleted", rollback
        assert client_version(s) == V2X
        assert GSI not in gsi_names(s)
        log("rolled back")
        wait_states(dict.fromkeys(SHARDWISE_IDS, METRIC_2X_WORKER), 10, "rolled back")
        wait_spread(SHARDWISE_IDS, 1, 3, 4 * TAKER_S + 10, "rolled back")
        check_only_leases("rolled back")

        # 5. Roll forward with the CLI: UPGRADE_FROM_2X, the workers re-create the GSI, and the flip again.
        code, rollforward = s.migrate("rollforward")
        assert code == 0, rollforward
        assert (rollforward["outcome"], rollforward["clientVersion"]) == ("rolled-forward", UPGRADE_FROM_2X)
        assert client_version(s) == UPGRADE_FROM_2X
        log("rolled forward")
        flipped = wait_version(V3X_WITH_ROLLBACK, REELECTION_S + FLIP_AFTER_READY_S + 30, "the flip again")
        assert flipped["mb"]["S"] in SHARDWISE_IDS, flipped
        assert [entry["M"]["cv"]["S"] for entry in flipped["h"]["L"][:2]] == [UPGRADE_FROM_2X, V2X], flipped
        assert GSI in gsi_names(s)
        wait_states(dict.fromkeys(SHARDWISE_IDS, METRIC_3X_WORKER), 15, "flipped again")
        wait_spread(SHARDWISE_IDS, 1, 3, 10, "flipped again")
        check_only_leases("3X_WITH_ROLLBACK again")

    view = s.leases_json()
    assert set(view["leasesPerOwner"]) <= set(SHARDWISE_IDS), view["leasesPerOwner"]
    for worker_id in SHARDWISE_IDS:
        code = s.fleet.terminate(worker_id)
        assert code == 0, f"{worker_id} exited {code} on SIGTERM\n{s.report()}"
    check_only_leases("the end")

    deliveries, _, _ = assert_none_lost(s, timeline)
    delivered_by = {d.worker_id for d in deliveries}
    assert delivered_by >= set(SHARDWISE_IDS)
    # Every Java worker ran a processor; one replaced right after it took its first lease (CI: java-1 stole a
    # lease 0.8 s before its SIGTERM) may have been given no record before its shutdown.
    assert delivered_by & set(JAVA_IDS), "the Java fleet processed nothing"
    for worker in s.java_workers():
        assert any(event.event == "initialize" for event in worker.events()), f"{worker.worker_id} held no lease"
    for worker in s.java_workers():
        no_parse_failures(worker)
